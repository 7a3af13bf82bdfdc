"""Issue 23 item 9 on a real engine: a restart command that leaves a child in the
background holding its stdout and stderr (as a naive init script leaves its daemon) is
done when it exits; `run` goes on at once instead of waiting for the child's pipes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from migrate.host.processes import process_start_time
from migrate.sandbox import SandboxFactory

from .cli import cli, restart_command

pytestmark = pytest.mark.engine


def _show(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@pytest.mark.parametrize("engine", ["28"])
def test_a_child_left_on_the_restart_commands_output_does_not_hold_run(
    fresh_sandbox: SandboxFactory, tmp_path: Path, engine: str,
) -> None:
    sandbox = fresh_sandbox(engine)
    state, pidfile = tmp_path / "state", tmp_path / "child.pid"
    command = (f"sh -c 'sleep 300 & echo $! > {pidfile}; "
               f"exec {restart_command(sandbox)}'")
    started = time.monotonic()
    try:
        # Before: the wait for the pipes' end outlasted --restart-timeout, then hung on.
        result = cli(sandbox, state, "run", "--yes", "--containers", "leave",
                     "--restart-command", command, "--restart-timeout", "60", timeout=240)
        assert result.returncode == 0, _show(result)
        assert time.monotonic() - started < 55, _show(result)
        assert sandbox.containerd_snapshotter()
        child = int(pidfile.read_text())
        assert process_start_time(child) is not None, "the command's child is left alone"
    finally:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)  # the test's own child
