"""`run`, `rollback` and `cleanup --format json` against a real engine: stdout is exactly
one document of the README's schema, with what happened to the host in its fields."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from migrate.sandbox import SandboxFactory, build_bulk_images
from migrate.sandbox.samples import BUSY_LOOP, docker
from tests.engine.cli import cli

pytestmark = pytest.mark.engine


def _document(done: subprocess.CompletedProcess[str], command: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout)  # the whole of stdout: one document
    assert doc["schema_version"] == 1 and doc["command"] == command, doc
    assert doc["exit_code"] == done.returncode, done.stderr[-4000:]
    return doc


@pytest.mark.parametrize("engine", ["26", "28"])
def test_run_rollback_and_cleanup_documents(fresh_sandbox: SandboxFactory, engine: str,
                                            tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine)
    (tag,) = build_bulk_images(sandbox.host, 1, prefix="cm-json/app", workdir=sandbox.dir)
    docker(sandbox.host, "run", "-d", "--name", "cm-json-web", tag, "sh", "-c", BUSY_LOOP)
    state = tmp_path / "state"

    run = _document(cli(sandbox, state, "run", "--yes", "--containers", "recreate",
                        "--format", "json"), "run")
    assert (run["result"], run["error"], run["automatic_rollback"]) == ("completed", None, None)
    assert run["steps"][0] == "snapshot" and run["steps"][-1] == "recreate"
    assert run["containers"]["recreated"] == ["cm-json-web"]
    assert run["containers"]["running"] == ["cm-json-web"] and run["containers"]["down"] == []
    assert Path(run["reports"]["id_map"]).is_file()
    assert run["multi_platform"] in ("supported", "unsupported", "unchecked")

    again = _document(cli(sandbox, state, "run", "--yes", "--format", "json"), "run")
    assert (again["result"], again["steps"]) == ("already_completed", [])

    back = _document(cli(sandbox, state, "rollback", "--yes", "--format", "json"), "rollback")
    assert back["result"] == "rolled_back" and back["migration_id"] == run["migration_id"]
    assert any("daemon.json" in line for line in back["did"]), back
    assert back["failed"] == [] and back["problems"] == [] and back["checked"]

    clean = _document(cli(sandbox, state, "cleanup", "--yes", "--format", "json"), "cleanup")
    assert (clean["result"], clean["after"], clean["failed"]) == ("cleaned_up", "rolled_back",
                                                                  [])
    assert clean["freed_bytes"] > 0  # the archives


def test_cleanup_prune_legacy_document(fresh_sandbox: SandboxFactory, tmp_path: Path) -> None:
    sandbox = fresh_sandbox("28")
    build_bulk_images(sandbox.host, 1, prefix="cm-json/prune", workdir=sandbox.dir)
    state = tmp_path / "state"
    run = cli(sandbox, state, "run", "--yes", "--format", "json")
    assert run.returncode == 0, run.stderr[-4000:]

    clean = _document(cli(sandbox, state, "cleanup", "--prune-legacy", "--yes", "--format",
                          "json"), "cleanup")
    assert (clean["result"], clean["after"]) == ("cleaned_up", "completed")
    pruned = clean["pruned_legacy"]
    assert pruned["driver"] == "overlay2" and pruned["containers"] == []
    assert pruned["freed_bytes"] > 0
    assert all(not Path(path).exists() for path in pruned["paths"])
