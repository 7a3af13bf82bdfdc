"""The rehearsal's report (issue 20, parts 5 and 6): the typed model and the files it
reads, its text and markdown, the estimate standing on a usable rehearsal (and saying
why it ignores another), and `status` showing the last rehearsal apart."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from migrate.archives.manifest import ArchiveManifest
from migrate.commands.context import GlobalOptions
from migrate.commands.rehearse import PENDING_NAME, REPORT_NAME, MovedImages, measured
from migrate.commands.run import confirmation_question
from migrate.commands.status import StatusArgs, status
from migrate.host.throwaway import RECORD_NAME, ThrowawayEngine
from migrate.journal import JournalState
from migrate.phases.base import PreparedPlan, RunOptions
from migrate.preflight.estimate import DAEMON_STOP_SECONDS, MB, estimate
from migrate.preflight.facts import PlanOptions
from migrate.preflight.rehearsal import (
    REHEARSAL_SCHEMA_VERSION,
    RehearsalFigures,
    RehearsalReport,
    images_fingerprint,
    read_report,
)
from migrate.preflight.render import render, render_rehearsal
from migrate.preflight.report import build_plan
from tests.unit.test_estimate import APP, WEB, inventory
from tests.unit.test_render import host

pytestmark = pytest.mark.unit

FINISHED = datetime(2026, 12, 5, 2, 30, tzinfo=UTC)
# A report as the first `rehearse` wrote it (a plain dict, no schema_version).
SCHEMA_1: dict[str, Any] = {
    "ok": True, "exit_code": 0, "finished_at": "2026-12-05T02:30:00Z",
    "engine_version": "28.5.2", "dockerd": "/usr/bin/dockerd",
    "binaries": {"dockerd": "/usr/bin/dockerd", "runc": "/usr/sbin/runc"},
    "images": 2, "containers": 1, "containers_created": 1, "containers_started": None,
    "failures": [], "notes": ["web: created without its networks"], "dir": None,
    "leftovers_removed": [],
    "figures": {"engine_start_seconds": 1.5, "archive_bytes": 260_000_000,
                "save_seconds": 2.0, "load_seconds": 4.0, "load_mbps": 65.0,
                "verify_seconds": 3.0, "create_seconds": 0.5, "window_seconds": 19.5,
                "run_seconds": 21.5},
}


def report(**changes: Any) -> RehearsalReport:
    """A schema 2 report of a rehearsal of APP and WEB."""
    base = RehearsalReport.model_validate(SCHEMA_1).model_copy(update={
        "schema_version": REHEARSAL_SCHEMA_VERSION, "hostname": "db1",
        "images_fingerprint": images_fingerprint(inventory(APP, WEB))})
    return base.model_copy(update=changes)


# --- the model ---------------------------------------------------------------------------


def test_a_schema_1_report_still_reads_and_keeps_every_key(tmp_path: Path) -> None:
    path = tmp_path / REPORT_NAME
    path.write_text(json.dumps({**SCHEMA_1, "from_a_later_version": 1}))
    old = read_report(path)
    assert old is not None
    assert old.schema_version == 1 and old.images_fingerprint is None
    assert old.figures is not None and old.figures.staged_window_seconds is None
    assert old.finished_at == FINISHED
    dumped = json.loads(old.to_json())
    assert set(dumped) >= set(SCHEMA_1)
    # Same meaning, same values; only keys were added.
    assert {key: dumped[key] for key in SCHEMA_1 if key != "figures"} == \
        {key: value for key, value in SCHEMA_1.items() if key != "figures"}
    assert {key: dumped["figures"][key] for key in SCHEMA_1["figures"]} == SCHEMA_1["figures"]


def test_no_report_or_a_broken_one_reads_as_none(tmp_path: Path) -> None:
    assert read_report(tmp_path / "missing.json") is None
    (tmp_path / "broken.json").write_text('{"ok": tru')
    assert read_report(tmp_path / "broken.json") is None


def _exported() -> RehearsalFigures:
    """260 MB saved in 2 s and loaded in 4 s; the engine started in 1.5 s, verification
    3 s, containers created in 0.5 s, a stop bound of 10.5 s."""
    moved = MovedImages("export", ArchiveManifest(), (), 260_000_000, 2.0, 4.0)
    return measured(1.5, moved, verify_s=3.0, create_s=0.5, stop_s=10.5)


def _staged() -> RehearsalFigures:
    """The same host, the 260 MB streamed into the store in 5 s (nothing left to load)."""
    moved = MovedImages("staged", ArchiveManifest(), (), 260_000_000, 5.0, 0.0)
    return measured(1.5, moved, verify_s=3.0, create_s=0.5, stop_s=10.5)


def test_a_staged_rehearsal_has_the_stream_outside_the_window() -> None:
    figures = _staged()
    assert figures.window_seconds == figures.staged_window_seconds == 15.5
    assert figures.run_seconds == 20.5 and figures.load_mbps == 52.0
    staged = report(path="staged", figures=figures)
    text = render_rehearsal(staged, "text")
    assert "staged 260 MB in 5.0 s (52 MB/s); verified in 3.0 s" in text
    assert "loaded" not in text
    markdown = render_rehearsal(staged, "markdown")
    assert "| stage (before the window) | 260 MB in 5.0 s (52 MB/s) |" in markdown
    assert "| load |" not in markdown and "2 image(s) staged and verified" in markdown
    assert RehearsalReport.model_validate_json(staged.to_json()).path == "staged"


def test_the_figures_add_a_staged_window_without_the_load() -> None:
    figures = _exported()
    assert figures.window_seconds == 19.5
    assert figures.staged_window_seconds == 15.5
    assert figures.run_seconds == 21.5
    assert figures.load_mbps == 65.0


def test_the_fingerprint_names_the_image_set_in_any_order() -> None:
    assert images_fingerprint(inventory(APP, WEB)) == images_fingerprint(inventory(WEB, APP))
    assert images_fingerprint(inventory(APP)) != images_fingerprint(inventory(APP, WEB))


# --- rendering ---------------------------------------------------------------------------


def test_markdown_has_the_result_the_figures_and_the_failures() -> None:
    failed = report(ok=False, exit_code=4,
                    failures=("acme/app:1: expected image sha256:1 is missing",
                              "cannot recreate container web: no such image"))
    markdown = render_rehearsal(failed, "markdown")
    assert markdown.startswith("## Rehearsal: FAILED (exit 4)\n")
    assert "db1, rehearsed 2026-12-05 02:30:00 UTC" in markdown
    assert "| engine start (stands for the restart) | 1.5 s |" in markdown
    assert "| load | 4.0 s (65 MB/s) |" in markdown
    assert "### Failures (2)" in markdown
    assert "- cannot recreate container web: no such image" in markdown
    assert "### Notes (1)" in markdown
    ok = render_rehearsal(report(figures=_exported()), "markdown")
    assert ok.startswith("## Rehearsal: OK\n") and "Failures" not in ok
    assert "| `stage` + `run` window | about 16 s" in ok


def test_text_keeps_the_first_reports_words() -> None:
    text = render_rehearsal(report(failures=("cannot recreate container web: refused",),
                                   ok=False, exit_code=1), "text")
    first = text.splitlines()[0]
    assert first.startswith("rehearsal 2026-12-05T02:30:00Z: FAILED (exit 1) (2 image(s)")
    assert "FAIL cannot recreate container web: refused" in text
    assert "a `run` would take about 22 s, of which about 20 s" in text


def test_a_blocked_rehearsal_lists_its_blockers_in_every_format() -> None:
    blocked = RehearsalReport(ok=False, exit_code=3, finished_at=FINISHED,
                              blockers=("the host's engine binaries were not found: runc",))
    assert render_rehearsal(blocked, "text") == \
        "BLOCKER the host's engine binaries were not found: runc"
    markdown = render_rehearsal(blocked, "markdown")
    assert markdown.startswith("## Rehearsal: BLOCKED (exit 3)")
    assert "- the host's engine binaries were not found: runc" in markdown
    doc = json.loads(render_rehearsal(blocked, "json"))
    assert doc["ok"] is False and doc["exit_code"] == 3 and doc["figures"] is None


# --- the estimate ------------------------------------------------------------------------


def test_a_usable_rehearsal_gives_the_restart_import_verify_and_export() -> None:
    est = estimate(inventory(APP, WEB), rehearsal=report())
    kinds = {name: basis.kind for name, basis in est.bases.items()}
    assert kinds == {"export": "rehearsal", "stop": "measured", "restart": "rehearsal",
                     "import": "rehearsal", "verify": "rehearsal"}
    assert est.restart_seconds == 1.5 + DAEMON_STOP_SECONDS
    assert (est.import_seconds, est.verify_seconds, est.export_seconds) == (4.0, 3.0, 2.0)
    assert est.load_mbps == 65.0 and est.save_mbps == 130.0
    assert est.bases["import"].label().startswith(
        "measured by rehearsal 2026-12-05 02:30:00 UTC: loaded 260 MB in 4.0 s")
    assert est.rehearsal is not None and est.rehearsal.used


def test_a_staged_rehearsals_stream_bounds_both_the_save_and_the_load() -> None:
    est = estimate(inventory(APP, WEB), rehearsal=report(path="staged", figures=_staged()))
    # Never a load of 0 s: the stream saved and imported at once, in 5 s.
    assert (est.export_seconds, est.import_seconds) == (5.0, 5.0)
    assert est.bases["import"].label().startswith(
        "measured by rehearsal 2026-12-05 02:30:00 UTC: staged 260 MB in 5.0 s (52 MB/s)")


def test_the_live_daemons_last_start_wins_over_the_rehearsals_empty_engine() -> None:
    # The throwaway engine starts empty (0.1-0.2 s); the live daemon's own start is nearer
    # what the restart will take.
    est = estimate(inventory(APP, WEB), rehearsal=report(), last_start_seconds=1.3)
    assert est.bases["restart"].kind == "measured"
    assert est.restart_seconds == pytest.approx(1.3 + DAEMON_STOP_SECONDS)
    assert est.bases["verify"].kind == "rehearsal"


def test_given_throughput_wins_for_the_transfers_only() -> None:
    est = estimate(inventory(APP, WEB), 100.0, rehearsal=report())
    assert est.bases["import"].kind == est.bases["export"].kind == "given"
    assert est.bases["restart"].kind == est.bases["verify"].kind == "rehearsal"


def test_partly_staged_images_load_at_the_rehearsals_rate() -> None:
    est = estimate(inventory(APP, WEB), staged={APP.id}, rehearsal=report())
    # WEB alone: its batch (base + web layers) at 65 MB/s.
    assert est.import_seconds == pytest.approx((120 * MB + 8 * 1024) / (65.0 * MB))
    assert est.bases["import"].source.endswith("for the images not staged")


@pytest.mark.parametrize(("changes", "inv", "why"), [
    ({"ok": False, "exit_code": 4}, (APP, WEB), "failed (exit 4)"),
    ({"images_fingerprint": None}, (APP, WEB), "does not record which images"),
    ({}, (APP,), "the images changed since the rehearsal of 2026-12-05 02:30:00 UTC"),
])
def test_a_failed_or_stale_rehearsal_is_ignored_and_says_why(
        changes: dict[str, Any], inv: tuple[Any, ...], why: str) -> None:
    est = estimate(inventory(*inv), rehearsal=report(**changes))
    assert est.rehearsal is not None and not est.rehearsal.used
    assert why in est.rehearsal.text() and est.rehearsal.text().startswith("ignored: ")
    assert "rehearsal" not in {basis.kind for basis in est.bases.values()}
    assert est.bases["verify"].kind == "default"


def test_no_rehearsal_changes_nothing() -> None:
    assert estimate(inventory(APP, WEB), rehearsal=None) == estimate(inventory(APP, WEB))


def _rehearsed_host(**changes: Any) -> Any:
    facts = host(containers=False)
    fitting = report(images_fingerprint=images_fingerprint(facts.inventory), **changes)
    return facts.model_copy(update={"rehearsal": fitting})


def test_plan_and_the_prompt_stand_on_the_rehearsal_in_every_format() -> None:
    facts = _rehearsed_host()
    plan = build_plan(facts, PlanOptions())
    label = "measured by rehearsal 2026-12-05 02:30:00 UTC"
    rows = {line.split()[0]: " ".join(line.split()[1:])
            for line in render(plan, "text").splitlines() if line.startswith("  ")}
    assert rows["restart"].startswith(f"2 s ({label}: its engine started in 1.5 s")
    assert rows["rehearsal"] == f"used: {label}"
    assert label in render(plan, "markdown")
    doc = json.loads(render(plan, "json"))["estimate"]
    assert doc["bases"]["verify"] == {"kind": "rehearsal", "source": f"{label}: 3 image(s) "
                                      "verified in 3.0 s"}
    assert doc["rehearsal"]["used"] is True
    question = confirmation_question(
        RunOptions(host="unix:///run/docker.sock", daemon_config=Path("/d.json"),
                   state_dir=Path("/s")), ("snapshot", "restart"), JournalState(),
        PreparedPlan(facts=facts, report=plan, taken_monotonic=0.0))
    assert f"    verify 3 s ({label}: " in question


def test_plan_says_in_one_row_why_it_ignored_a_failed_rehearsal() -> None:
    plan = build_plan(_rehearsed_host(ok=False, exit_code=1), PlanOptions())
    rows = [" ".join(line.split()) for line in render(plan, "text").splitlines()
            if "rehearsal" in line]
    assert rows == ["rehearsal ignored: the rehearsal of 2026-12-05 02:30:00 UTC failed "
                    "(exit 1); its figures are not those of a migration that works"]
    question = confirmation_question(
        RunOptions(host="unix:///x.sock", daemon_config=Path("/d.json"), state_dir=Path("/s")),
        ("snapshot",), JournalState(),
        PreparedPlan(facts=host(containers=False), report=plan, taken_monotonic=0.0))
    assert "(the last rehearsal is ignored: the rehearsal of" in question


# --- status ------------------------------------------------------------------------------


class Shown:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def emit(self, text: str) -> None:
        self.lines.append(text)

    def ask(self, question: str) -> bool:
        return False


def _status(state_dir: Path, fmt: str = "text") -> str:
    shown = Shown()
    opts = GlobalOptions(host=f"unix://{state_dir.parent}/no-daemon.sock",
                         daemon_config=state_dir.parent / "daemon.json", state_dir=state_dir,
                         console=shown)
    assert status(opts, StatusArgs(fmt)) == 0
    assert len(shown.lines) == 1
    return shown.lines[0]


def _state_dir(tmp_path: Path, last: RehearsalReport | None = None) -> Path:
    state_dir = tmp_path / "state"
    (state_dir / "reports").mkdir(parents=True, mode=0o700)
    state_dir.chmod(0o700)
    if last is not None:
        (state_dir / "reports" / REPORT_NAME).write_text(last.to_json())
    return state_dir


def test_status_without_a_rehearsal_says_nothing_of_one_and_creates_nothing(
        tmp_path: Path) -> None:
    state_dir = tmp_path / "never"
    assert json.loads(_status(state_dir, "json"))["rehearsal"] is None
    assert "rehearsal" not in _status(state_dir)
    assert not state_dir.exists()


def test_status_shows_the_last_rehearsal_apart_from_the_migration(tmp_path: Path) -> None:
    state_dir = _state_dir(tmp_path, report(figures=_exported()))
    text = _status(state_dir)
    lines = text.splitlines()
    assert lines[0] == "no migration has been started with this state dir"
    assert "last rehearsal: 2026-12-05 02:30:00 UTC, OK: 2 image(s), 1 container(s), " \
        "0 failure(s)" in lines
    assert "  measured: engine start 1.5 s, load 4.0 s (65 MB/s), verify 3.0 s; a `run` " \
        "window about 20 s (after a `stage` about 16 s)" in lines
    assert any(line.startswith(f"  report: {state_dir}/reports/{REPORT_NAME} (JSON); "
                               "again: containerd-migrate ") for line in lines)
    assert lines[-1].startswith("next: ")
    doc = json.loads(_status(state_dir, "json"))
    assert doc["migration_id"] is None
    assert doc["rehearsal"]["state"] == "finished"
    assert doc["rehearsal"]["last"]["figures"]["staged_window_seconds"] == 15.5
    assert doc["rehearsal"]["last"]["ok"] is True


def test_status_removes_what_a_killed_rehearsal_left_and_says_so(tmp_path: Path) -> None:
    state_dir = _state_dir(tmp_path, report(ok=False, exit_code=4, failures=("x",)))
    left = ThrowawayEngine(tmp_path / "r")
    left.prepare({})
    (state_dir / PENDING_NAME).write_text(json.dumps({"dir": str(left.dir)}))
    text = _status(state_dir)
    assert f"rehearsal: interrupted before it finished; removed what it left: removed " \
        f"{left.dir}" in text.splitlines()
    assert "last rehearsal: 2026-12-05 02:30:00 UTC, FAILED (exit 4): " in text
    assert not left.dir.exists() and not (state_dir / PENDING_NAME).exists()
    # Nothing left the second time: a finished rehearsal again.
    assert json.loads(_status(state_dir, "json"))["rehearsal"]["state"] == "finished"


def test_status_as_json_with_a_killed_rehearsal_that_never_finished_one(
        tmp_path: Path) -> None:
    state_dir = _state_dir(tmp_path)
    (state_dir / PENDING_NAME).write_text(json.dumps({"dir": str(tmp_path / "gone")}))
    doc = json.loads(_status(state_dir, "json"))["rehearsal"]
    assert doc["state"] == "interrupted" and doc["last"] is None
    assert doc["leftovers_removed"] == [] and not (state_dir / PENDING_NAME).exists()


def test_status_leaves_a_kept_rehearsal_directory(tmp_path: Path) -> None:
    state_dir = _state_dir(tmp_path, report(dir=str(tmp_path / "r")))
    kept = ThrowawayEngine(tmp_path / "r")
    kept.prepare({})
    (state_dir / PENDING_NAME).write_text(json.dumps({"dir": str(kept.dir), "kept": True}))
    assert f"rehearsal directory kept: {kept.dir} (its engine stopped; the next rehearse " \
        "or cleanup removes it)" in _status(state_dir).splitlines()
    assert (kept.dir / RECORD_NAME).exists() and (state_dir / PENDING_NAME).exists()


def test_status_only_says_a_running_rehearsal_runs(tmp_path: Path) -> None:
    state_dir = _state_dir(tmp_path)
    running = ThrowawayEngine(tmp_path / "r")
    running.prepare({})
    (state_dir / PENDING_NAME).write_text(json.dumps({"dir": str(running.dir)}))
    # Another process holds the state dir's lock, as a rehearsal does while it runs.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from migrate.journal.state_dir import StateDir\n"
         f"with StateDir({str(state_dir)!r}).lock():\n"
         "    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        line = next(line for line in _status(state_dir).splitlines() if "rehearsal" in line)
        assert line == f"rehearsal: one is running now (state dir {state_dir} is locked by " \
            f"pid {holder.pid})"
        assert running.dir.exists() and (state_dir / PENDING_NAME).exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_rehearsal_record_is_typed() -> None:
    # The figures of a JSON document, as the Ansible role reads them.
    assert set(RehearsalFigures.model_fields) >= set(SCHEMA_1["figures"])
