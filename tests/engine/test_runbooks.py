"""Every shell block of the runbooks runs as printed against a sandbox host.

The commands stay as an operator types them: the sandbox is reached through the
CONTAINERD_MIGRATE_* variables that `python -m migrate.sandbox env` prints, and
`containerd-migrate` is this checkout's CLI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from migrate.sandbox import SandboxFactory
from migrate.sandbox.fetch import buildx_plugin, docker_cli

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
# In the order of a migration that is then rolled back.
RUNBOOKS = ("maintenance-window.md", "rollback.md")
BLOCK = re.compile(r"^ *```(?:sh|bash)\n(?P<body>.*?)^ *```", re.MULTILINE | re.DOTALL)


def shell_blocks(text: str) -> list[str]:
    return [match.group("body") for match in BLOCK.finditer(text)]


def _env(sandbox_dir: Path, state: Path, bin_dir: Path) -> dict[str, str]:
    exports = subprocess.run(
        [sys.executable, "-m", "migrate.sandbox", "env", "--dir", str(sandbox_dir),
         "--state-dir", str(state)], capture_output=True, text=True, check=True).stdout
    shown = subprocess.run(["bash", "-c", f"{exports}\nenv -0"], capture_output=True,
                           check=True).stdout.decode()
    env = dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


@pytest.mark.parametrize("engine", ["26", "28"])
def test_runbook_commands_work_as_printed(fresh_sandbox: SandboxFactory, engine: str,
                                          tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine, samples=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "containerd-migrate"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m migrate \"$@\"\n")
    shim.chmod(0o755)
    env = _env(sandbox.dir, tmp_path / "state", bin_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    # `docker buildx` as the engine's Debian suite ships it, in a CLI config of the test's own.
    plugins = tmp_path / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-buildx").symlink_to(buildx_plugin(engine))
    env["DOCKER_CONFIG"] = str(plugins.parent)
    env["PATH"] += f":{Path(docker_cli()).parent}"  # the machine's docker CLI, else Debian's
    blocks = [block for name in RUNBOOKS
              for block in shell_blocks((ROOT / "runbooks" / name).read_text())]
    assert len(blocks) >= 5
    for block in blocks:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=600, check=False)
        assert done.returncode == 0, f"$ {block}\n{done.stdout}\n{done.stderr}"
    plan = (tmp_path / "plan.md").read_text()
    assert plan.count("## ") >= 5 and "## What the switch brings and costs" in plan
