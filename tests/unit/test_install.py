"""Installed like an operator would: the wheel holds the product only, and shell completion
works for the installed command's name (README, "Install")."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from setuptools import find_packages  # type: ignore[import-untyped]

from migrate.cli import main

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_the_product_without_the_sandbox() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = setuptools["packages"]["find"]
    # Else a checkout's stale SOURCES.txt brings the sandbox back as package data.
    assert setuptools["include-package-data"] is False
    packages = set(find_packages(where=str(ROOT), include=found["include"],
                                 exclude=found.get("exclude", ())))
    assert {"migrate", "migrate.commands", "migrate.engine", "migrate.phases"} <= packages
    assert not {p for p in packages if p.startswith("migrate.sandbox")}
    # Every package of the product is in it (a new one is not left out by the patterns).
    on_disk = {".".join(init.parent.relative_to(ROOT).parts)
               for init in (ROOT / "migrate").rglob("__init__.py")}
    assert packages == {p for p in on_disk if not p.startswith("migrate.sandbox")}


@pytest.mark.parametrize(("words", "expected"), [
    ("containerd-migrate rollb", "plain,rollback"),
    ("containerd-migrate --state-dir /tmp run --for", "plain,--format"),
    ("containerd-migrate run --containers rec", "plain,recreate"),
])
def test_shell_completion_of_the_installed_command(words: str, expected: str) -> None:
    env = {"_CONTAINERD_MIGRATE_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - 1)}
    result = CliRunner().invoke(main, [], prog_name="containerd-migrate", env=env)
    assert result.exit_code == 0, result.output
    assert expected in result.output.splitlines(), result.output
