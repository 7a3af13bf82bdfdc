"""SIGTERM (systemd stopping the unit, `kill PID`) and SIGHUP (an ssh session that drops)
are interruptions like Ctrl-C: the journal records them, the exit code says so, and `run`
resumes. Losing the terminal or the log pipe never fails a migration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from migrate.errors import ExitCode
from migrate.journal import replay
from migrate.sandbox import SandboxFactory
from migrate.support.failpoints import ENV as FAILPOINTS_ENV
from migrate.support.failpoints import PAUSE_TIMEOUT_ENV, RESUME_ENV, reached_path

from .cli import child_signals, cli, run_args, wait_for_file

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_during_export_is_journaled_and_resumable(
    fresh_sandbox: SandboxFactory, tmp_path: Path, stop: signal.Signals
) -> None:
    sandbox = fresh_sandbox("28", samples=True)
    state = tmp_path / "state"
    resume = tmp_path / "resume"
    env = {**os.environ, FAILPOINTS_ENV: "export:archive-written=pause",
           RESUME_ENV: str(resume), PAUSE_TIMEOUT_ENV: "120"}
    argv = [sys.executable, "-m", "migrate", "--host", sandbox.host, "--daemon-config",
            str(sandbox.daemon_json), "--state-dir", str(state), *run_args(sandbox)]
    process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=child_signals)  # noqa: PLW1509  (no threads here)
    wait_for_file(reached_path(resume), process)
    original = sandbox.daemon_json.read_bytes() if sandbox.daemon_json.exists() else None
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert stop.name in stderr
    assert "Traceback" not in stderr
    journal = replay(state / "journal.jsonl")
    assert journal.phase("export").status == "interrupted"
    assert _interrupt_signal(state) == stop.name
    assert journal.phase("switch").status == "pending"
    assert not list((state / "archives").glob("*.partial"))
    current = sandbox.daemon_json.read_bytes() if sandbox.daemon_json.exists() else None
    assert current == original, "an interrupted export must not touch daemon.json"

    resumed = cli(sandbox, state, *run_args(sandbox))
    assert resumed.returncode == 0, resumed.stderr
    assert replay(state / "journal.jsonl").outcome == "completed"


def _interrupt_signal(state: Path) -> str | None:
    lines = (state / "journal.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if '"interrupted"' in line]
    return str(records[-1]["signal"]) if records else None


def test_a_run_whose_logs_and_terminal_went_away_completes(
    fresh_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """`run ... | head -1` or a `tee` that died: stdout and stderr are closed pipes."""
    sandbox = fresh_sandbox("28")
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "migrate", "--host", sandbox.host, "--daemon-config",
            str(sandbox.daemon_json), "--state-dir", str(state), *run_args(sandbox)]
    process = subprocess.Popen(argv, env=os.environ.copy(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=child_signals)  # noqa: PLW1509  (no threads here)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    process.stderr.close()

    assert process.wait(timeout=300) == 0
    assert replay(state / "journal.jsonl").outcome == "completed"
