"""What a rehearsal tells the operator afterwards (issue 20, parts 5 and 6), on engine 28.

One sample host: a rehearsal killed once its engine answered is shown by `status` as
interrupted, and `status` removes what it left (its engine by pid, its directory); a
rehearsal run to its end prints the change ticket's markdown section, `status` (text and
JSON) shows it apart from the migration (there is none), and `plan` then stands on its
figures, labelled "measured by rehearsal <time>".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrate.commands.rehearse import PENDING_NAME, REPORT_NAME
from migrate.errors import ExitCode
from migrate.host.throwaway import RECORD_NAME
from migrate.preflight.rehearsal import RehearsalReport
from migrate.sandbox import SandboxFactory

from .cli import cli
from .test_rehearse import _processes_naming, short_tmp

pytestmark = pytest.mark.engine

__all__ = ["short_tmp"]  # the fixture, shared with test_rehearse.py
KILLED = -9


def test_status_and_plan_show_the_last_rehearsal(fresh_sandbox: SandboxFactory,
                                                 short_tmp: Path) -> None:
    sandbox = fresh_sandbox("28", samples=True)
    state_dir = short_tmp / "state"
    rehearsal = short_tmp / "r"

    # Killed once its engine answered: status says so and removes what it left.
    killed = cli(sandbox, state_dir, "rehearse", "--dir", str(rehearsal),
                 failpoints="rehearse:engine-started=kill")
    assert killed.returncode == KILLED, killed.stderr
    pid = json.loads((rehearsal / RECORD_NAME).read_text())["pid"]
    interrupted = cli(sandbox, state_dir, "status")

    assert interrupted.returncode == ExitCode.OK, interrupted.stdout + interrupted.stderr
    assert "no migration has been started" in interrupted.stdout
    assert ("rehearsal: interrupted before it finished; removed what it left: "
            f"stopped process {pid}") in interrupted.stdout
    assert not rehearsal.exists() and not (state_dir / PENDING_NAME).exists()
    assert _processes_naming(str(rehearsal)) == []

    # Run to its end: the change ticket's section.
    done = cli(sandbox, state_dir, "rehearse", "--format", "markdown")

    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert done.stdout.startswith("## Rehearsal: OK")
    assert "| engine start (stands for the restart) |" in done.stdout
    assert "| `stage` + `run` window |" in done.stdout
    report = RehearsalReport.model_validate_json(
        (state_dir / "reports" / REPORT_NAME).read_text())
    assert report.ok and report.figures is not None and report.images_fingerprint

    text = cli(sandbox, state_dir, "status")
    as_json = cli(sandbox, state_dir, "status", "--format", "json")

    assert text.returncode == as_json.returncode == ExitCode.OK, text.stderr + as_json.stderr
    assert f"last rehearsal: {report.when()}, OK: " in text.stdout
    assert "interrupted" not in text.stdout
    assert text.stdout.rstrip().splitlines()[-1].startswith("next: ")
    shown = json.loads(as_json.stdout)
    assert shown["migration_id"] is None
    assert shown["rehearsal"]["state"] == "finished"
    assert shown["rehearsal"]["last"]["figures"] == report.figures.model_dump()

    plan = cli(sandbox, state_dir, "plan", "--containers", "recreate")
    plan_json = cli(sandbox, state_dir, "plan", "--containers", "recreate", "--format", "json")

    assert plan.returncode == plan_json.returncode == ExitCode.OK, plan.stdout + plan.stderr
    assert f"measured by rehearsal {report.when()}" in plan.stdout
    estimate = json.loads(plan_json.stdout)["estimate"]
    assert {estimate["bases"][name]["kind"] for name in ("restart", "import", "verify")} \
        == {"rehearsal"}
    assert estimate["verify_seconds"] == report.figures.verify_seconds
    assert estimate["rehearsal"]["used"] is True
