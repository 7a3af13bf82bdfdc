"""The plan's estimate against a measured run (issue 19): on a staged sandbox host with
running containers (one ignoring SIGTERM, with its own stop timeout), the stop bound holds,
nothing is left to import and the import takes next to nothing, and the window is within
2x of the estimate or under it."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from migrate.sandbox import SandboxFactory, build_bulk_images
from migrate.sandbox.samples import BUSY_LOOP, docker
from tests.engine.cli import cli

pytestmark = pytest.mark.engine


def _out(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-6000:]}"


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _phases(state: Path) -> dict[str, tuple[datetime, datetime]]:
    """Phase -> (started, done) of its last attempt, from the journal's own timestamps."""
    started: dict[str, datetime] = {}
    spans: dict[str, tuple[datetime, datetime]] = {}
    for line in (state / "journal.jsonl").read_text().splitlines():
        record: dict[str, Any] = json.loads(line)
        if record.get("event") == "phase_started":
            started[record["phase"]] = _when(record["ts"])
        elif record.get("event") == "phase_done":
            spans[record["phase"]] = (started[record["phase"]], _when(record["ts"]))
    return spans


def test_estimate_holds_against_a_measured_run(fresh_sandbox: SandboxFactory,
                                               tmp_path: Path) -> None:
    sandbox = fresh_sandbox("28")
    (tag,) = build_bulk_images(sandbox.host, 1, prefix="cm-est/app", workdir=sandbox.dir)
    for name in ("web", "db"):
        docker(sandbox.host, "run", "-d", "--name", name, tag, "sh", "-c", BUSY_LOOP)
    docker(sandbox.host, "run", "-d", "--name", "stubborn", "--stop-timeout", "2", tag,
           "sleep", "3600")
    state = tmp_path / "state"
    staged = cli(sandbox, state, "stage", "--containers", "recreate")
    assert staged.returncode == 0, _out(staged)

    plan = cli(sandbox, state, "plan", "--containers", "recreate", "--format", "json")
    assert plan.returncode == 0, _out(plan)
    est = json.loads(plan.stdout)["estimate"]
    assert est["bases"]["import"]["kind"] == "measured" and est["import_seconds"] == 0
    assert est["bases"]["stop"]["kind"] == "bound" and est["stop_seconds"] >= 2

    ran = cli(sandbox, state, "run", "--yes", "--restart-command", sandbox.restart_command)
    assert ran.returncode == 0, _out(ran)
    spans = _phases(state)
    stop = (spans["quiesce"][1] - spans["quiesce"][0]).total_seconds()
    restart = (spans["restart"][1] - spans["restart"][0]).total_seconds()
    imported = (spans["import"][1] - spans["import"][0]).total_seconds()
    window = (spans["verify"][1] - spans["quiesce"][0]).total_seconds()
    assert stop <= est["stop_seconds"], (stop, est)  # a bound that holds
    assert imported < 2.0, imported  # nothing left to import
    assert restart <= 2 * est["restart_seconds"], (restart, est)
    assert window <= 2 * est["window_seconds"], (window, est)
