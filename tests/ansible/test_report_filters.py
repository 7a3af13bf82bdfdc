"""The role's report filters (ansible/roles/cm/filter_plugins/cm_report.py) on their own:
how each exit code of the CLI becomes an outcome of the plays, and when a wave stops the
rollout. Pure functions over what the CLI prints; no Ansible, no daemon."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from migrate.preflight.rehearsal import REHEARSAL_SCHEMA_VERSION, RehearsalReport

pytestmark = pytest.mark.unit

PLUGIN = Path(__file__).resolve().parents[2] / "ansible/roles/cm/filter_plugins/cm_report.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cm_report", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cm = _load()
READY_PLAN: dict[str, Any] = {
    "ready": True,
    "verdict": "READY: 2 image(s) to move",
    "options": {"containers": "leave"},
    "engine": {"version": "28.5.2", "store": "legacy", "driver": "overlay2"},
    "images": [{"tags": ["a:1", "a:latest"]}, {"tags": []}],
    "containers": [{"state": "running"}, {"state": "exited"}],
    "volumes": [{"name": "v"}],
    "state_dir": {"path": "/s", "free_bytes": 100, "mount_point": "/"},
    "data_root": {"path": "/d", "free_bytes": 50, "mount_point": "/"},
    "estimate": {"state_dir_need_bytes": 10, "data_root_need_bytes": 60,
                 "downtime_seconds": 12.5, "total_seconds": 20.0, "archive_bytes": 7},
    "checks": [{"id": "dangling-images", "severity": "info", "message": "m", "hint": "h"},
               {"id": "registry-digests", "severity": "warning", "message": "w", "hint": "x",
                "details": ["d1"]}],
}  # fmt: skip
BLOCKED_PLAN: dict[str, Any] = {**READY_PLAN, "ready": False, "verdict": "BLOCKED", "checks": [
    {"id": "containers-present", "severity": "blocker", "message": "3 containers",
     "hint": "pass --containers leave", "details": []}]}  # fmt: skip


def _result(rc: int, stdout: Any = "", stderr: str = "", **more: Any) -> dict[str, Any]:
    text = stdout if isinstance(stdout, str) else json.dumps(stdout)
    return {"rc": rc, "stdout": text, "stderr": stderr, "delta": "0:00:02.500000", **more}


SKIPPED = {"skipped": True, "changed": False}


def test_plan_records_ready_blocked_and_errors() -> None:
    ready = cm.plan_record(_result(0, READY_PLAN), "h1")
    assert ready["state"] == "ready"
    assert (ready["images"], ready["tags"], ready["dangling"]) == (2, 2, 1)
    assert (ready["containers"], ready["running"], ready["volumes"]) == (2, 1, 1)
    assert ready["disk"]["state_dir"]["enough"] is True
    assert ready["disk"]["data_root"]["enough"] is False
    assert [w["id"] for w in ready["warnings"]] == ["registry-digests"]
    blocked = cm.plan_record(_result(3, BLOCKED_PLAN), "h2")
    assert blocked["state"] == "blocked"
    assert blocked["blockers"][0]["hint"] == "pass --containers leave"
    down = cm.plan_record(_result(5, "", "error: cannot reach the daemon\nhint: start it"), "h3")
    assert (down["state"], down["error"], down["hint"]) == ("error", "cannot reach the daemon",
                                                            "start it")  # fmt: skip
    assert down["exit"] == "exit 5: Docker daemon unreachable"
    gone = cm.plan_record({"unreachable": True, "msg": "ssh: timeout"}, "h4")
    assert gone["state"] == "unreachable" and "ssh: timeout" in gone["error"]


def test_plan_fleet_groups_hosts_by_state_and_blocker() -> None:
    records = [cm.plan_record(_result(0, READY_PLAN), "h1"),
               cm.plan_record(_result(3, BLOCKED_PLAN), "h2"),
               cm.plan_record(_result(3, BLOCKED_PLAN), "h3"),
               None]  # fmt: skip
    fleet = cm.plan_fleet(records, ["h1", "h2", "h3", "h4"])
    assert fleet["by_state"] == {"ready": ["h1"], "blocked": ["h2", "h3"], "migrated": [],
                                 "error": ["h4"], "unreachable": []}  # fmt: skip
    groups = {g["id"]: [h["host"] for h in g["hosts"]] for g in fleet["by_blocker"]}
    assert groups == {"containers-present": ["h2", "h3"], "plan-failed": ["h4"]}
    assert fleet["by_blocker"][0]["id"] == "containers-present"  # the most hosts first
    assert fleet["totals"]["tags"] == 6
    assert fleet["totals"]["downtime_seconds"] == 37.5
    assert fleet["totals"]["longest_downtime_seconds"] == 12.5


def _migrate(run: Any, verify: Any = SKIPPED, rollback: Any = None, prepare: Any = SKIPPED,
             plan: Any = None, wave: str = "batch 1") -> dict[str, Any]:  # fmt: skip
    status = _result(0, {"migration_id": "m1", "outcome": "completed", "phases": [
        {"name": "snapshot", "seconds": 0.1}, {"name": "quiesce", "seconds": 0.5},
        {"name": "restart", "seconds": 1.25}, {"name": "import", "seconds": None}]})  # fmt: skip
    record: dict[str, Any] = cm.migrate_record(
        "h1", plan or _result(0, READY_PLAN), prepare, run, verify, rollback, status, wave=wave)
    return record


@pytest.mark.parametrize(
    ("run", "outcome", "failed"),
    [
        (_result(0), "migrated", False),
        (_result(3, stderr="error: blocked: containers-present"), "skipped", False),
        (_result(8, attempts=3, failed=True), "skipped", False),
        (_result(10, stderr="error: came back in the legacy image store"), "rolled_back", True),
        (_result(5, stderr="error: cannot reach the Docker daemon"), "failed", True),
        (_result(9), "failed", True),
        (_result(130), "failed", True),
    ],
)
def test_run_exit_codes_become_outcomes(run: dict[str, Any], outcome: str, failed: bool) -> None:
    verify = _result(0) if run["rc"] == 0 else SKIPPED
    record = _migrate(run, verify)
    assert (record["outcome"], record["failed"]) == (outcome, failed), record
    assert record["window_seconds"] == 1.8  # quiesce .. verify only
    assert record["run_seconds"] == 2.5
    if run["rc"] == 8:
        assert "locked by another run after 3 attempt(s)" in record["reason"]
    if run["rc"] == 10:
        assert "came back in the legacy image store" in record["reason"]


def test_blocked_plan_skips_and_a_canary_must_migrate() -> None:
    skipped = _migrate(SKIPPED, plan=_result(3, BLOCKED_PLAN))
    assert skipped["outcome"] == "skipped" and not skipped["failed"]
    assert "containers-present" in skipped["reason"]
    canary = _migrate(SKIPPED, plan=_result(3, BLOCKED_PLAN), wave="canary")
    assert canary["outcome"] == "skipped" and canary["failed"]
    assert "the batches do not start" in canary["reason"]


def test_an_already_migrated_canary_lets_a_rerun_go_on() -> None:
    already = {"id": "already-containerd", "severity": "blocker", "message": "nothing to do",
               "hint": ""}  # fmt: skip
    done = {**BLOCKED_PLAN, "checks": [already]}
    record = _migrate(SKIPPED, plan=_result(3, done), wave="canary")
    assert record["outcome"] == "already_migrated" and not record["failed"]
    # On the containerd store, checks about a migration that will not happen change nothing.
    other = {**BLOCKED_PLAN, "checks": [already, *BLOCKED_PLAN["checks"]]}
    assert _migrate(SKIPPED, plan=_result(3, other), wave="canary")["outcome"] == (
        "already_migrated")


def test_fleet_plan_shows_a_migrated_host_apart_and_leaves_it_out_of_the_totals() -> None:
    already = {"id": "already-containerd", "severity": "blocker", "message": "nothing to do",
               "hint": ""}  # fmt: skip
    migrated = {**BLOCKED_PLAN, "engine": {**READY_PLAN["engine"], "store": "containerd"},
                "checks": [already, *BLOCKED_PLAN["checks"]]}  # fmt: skip
    records = [cm.plan_record(_result(0, READY_PLAN), "h1"),
               cm.plan_record(_result(3, migrated), "h2")]  # fmt: skip
    assert records[1]["state"] == "migrated"
    fleet = cm.plan_fleet(records, ["h1", "h2"])
    assert fleet["by_state"]["migrated"] == ["h2"] and fleet["by_state"]["blocked"] == []
    assert fleet["by_blocker"] == []
    assert (fleet["totals"]["migrated"], fleet["totals"]["blocked"]) == (1, 0)
    assert fleet["totals"]["downtime_seconds"] == 12.5  # h1's alone
    assert fleet["totals"]["images"] == 2


def test_failed_prepare_and_verify() -> None:
    export_full = _migrate(SKIPPED, prepare=_result(9, stderr="error: no space left"))
    assert export_full["outcome"] == "failed" and "prepare" in export_full["reason"]
    bad_verify = _migrate(_result(0), _result(4, stderr="error: 1 image differs"),
                          rollback=_result(0, _rollback_doc(did=["switch: restored"])))
    assert bad_verify["outcome"] == "rolled_back" and bad_verify["failed"]
    kept = _migrate(_result(0), _result(4))
    assert kept["outcome"] == "failed"


def _row(host: str, failed: bool) -> dict[str, Any]:
    return {"host": host, "outcome": "rolled_back" if failed else "migrated", "failed": failed}


@pytest.mark.parametrize(
    ("batch_failures", "max_fail", "stopped"),
    [((False, False), 0, False), ((True, False), 0, True), ((True, False), 50, False),
     ((True, False), "49%", True), ((True, True), 100, True)],
)  # fmt: skip
def test_a_wave_stops_the_rollout_as_ansible_decides(
    batch_failures: tuple[bool, bool], max_fail: Any, stopped: bool
) -> None:
    records = [_row("c", False), _row("b1", batch_failures[0]), _row("b2", batch_failures[1])]
    summary = cm.migrate_summary(records, ["c", "b1", "b2", "later"], canary=["c"],
                                 batch=["b1", "b2"], wave="batch 1",
                                 max_fail_percentage=max_fail)  # fmt: skip
    assert summary["stopped"] is stopped
    later = summary["hosts"][-1]
    assert later["outcome"] == "not_started"
    assert ("stopped after batch 1" in later["reason"]) is stopped
    assert summary["counts"]["not_started"] == 1


def test_a_failed_canary_always_stops() -> None:
    summary = cm.migrate_summary([_row("c", True)], ["c", "b"], canary=["c"], batch=["c"],
                                 wave="canary", max_fail_percentage=100)  # fmt: skip
    assert summary["stopped"] and summary["state"] == "stopped after the canary: c rolled back"


def _rollback_doc(result: str = "rolled_back", **fields: Any) -> dict[str, Any]:
    """A `rollback --format json` document (schema version 1)."""
    return {"schema_version": 1, "command": "rollback", "result": result, "exit_code": 0,
            "migration_id": "m1", "did": [], "failed": [], "checked": [], "problems": [],
            "error": None, "messages": [], **fields}  # fmt: skip


def test_rollback_record_reads_what_was_restored() -> None:
    doc = _rollback_doc(did=["switch: restored the original /etc/docker/daemon.json",
                             "quiesce: started container web"],
                        checked=["daemon answers"])  # fmt: skip
    before = _result(0, {"migration_id": "m1", "outcome": "completed",
                         "rollback_would_undo": ["switch"]})  # fmt: skip
    after = _result(0, {"migration_id": "m1", "outcome": "rolled_back"})
    record = cm.rollback_record("h1", before, _result(0, doc), after)
    assert record["outcome"] == "restored" and not record["failed"]
    assert record["restored"] == ["switch: restored the original /etc/docker/daemon.json",
                                  "quiesce: started container web"]  # fmt: skip
    assert record["checked"] == ["daemon answers"]
    assert (record["outcome_before"], record["outcome_after"]) == ("completed", "rolled_back")
    nothing = cm.rollback_record("h2", None, _result(0, _rollback_doc(
        "nothing_to_do", migration_id=None, reason="no migration to roll back")), None)
    assert nothing["outcome"] == "nothing_to_do"
    assert nothing["messages"] == ["no migration to roll back"]
    drift = cm.rollback_record("h3", None, _result(3, stderr="error: daemon.json changed"), None)
    assert drift["outcome"] == "drifted" and drift["failed"]


def test_rollback_record_reads_no_text() -> None:
    """A reworded message changes no fleet report: a text line saying `did:` is nothing,
    an undo that failed is not restored, and a document of another schema is not read."""
    text = _result(0, "rollback:\n  did: import: FAILED to remove x\nchecked:\n  ok: y\n")
    assert cm.rollback_record("h1", None, text, None)["restored"] == []
    failed = cm.rollback_record("h2", None, _result(1, _rollback_doc(
        "failed", exit_code=1, did=["switch: restored"], failed=["import: could not remove x"],
        error={"message": "rollback could not undo everything", "hint": "again"})), None)
    assert (failed["outcome"], failed["failed"]) == ("failed", True)
    assert failed["not_undone"] == ["import: could not remove x"]
    assert failed["restored"] == ["switch: restored"]
    future = _rollback_doc(schema_version=2, did=["switch: restored"])
    assert cm.rollback_record("h3", None, _result(0, future), None)["restored"] == []
    assert cm.command_result(_result(0, _rollback_doc())) == "rolled_back"
    assert cm.command_result(_result(0, "rolled_back")) == ""


def test_a_run_document_is_shown_as_lines_in_the_rollout_report() -> None:
    doc = {"schema_version": 1, "command": "run", "result": "rolled_back", "exit_code": 10,
           "migration_id": "m1", "messages": ["restart failed", "rolling back automatically"],
           "automatic_rollback": {"did": ["switch: restored"], "failed": [],
                                  "checked": ["legacy store"], "problems": []},
           "error": {"message": "came back in the legacy image store", "hint": "fix it"}}
    record = _migrate(_result(10, doc, stderr="error: came back in the legacy image store"))
    step = record["steps"]["run"]
    assert (record["outcome"], step["result"]) == ("rolled_back", "rolled_back")
    assert step["output"] == ["restart failed", "rolling back automatically",
                              "did: switch: restored", "ok: legacy store"]  # fmt: skip


def test_small_helpers() -> None:
    assert cm.duration_seconds("0:01:02.250000") == 62.2
    assert cm.duration_seconds("1 day, 0:00:01") == 86401.0
    assert cm.duration_seconds(None) is None
    assert cm.human_bytes(5 * 1024 * 1024) == "5.0 MiB"
    assert cm.human_seconds(75) == "1 min 15 s"
    assert cm.exit_name(10) == "rolled_back" and cm.exit_name(42) == "exit_42"
    assert cm.md_cell("a|b\nc") == "a\\|b c"
    assert cm.host_facts({"a": {"x": 1}, "b": {}}, ["a", "b", "c"], "x") == [1, None, None]


def _render(template: str, **data: Any) -> list[str]:
    """A role template rendered as Ansible's template lookup does (trim_blocks)."""
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PLUGIN.parents[1] / "templates"),
                             trim_blocks=True)  # fmt: skip
    env.filters.update(cm.FilterModule().filters())
    text: str = env.get_template(template).render(cm_report_dir="/r", **data)
    return text.strip().split("\n")


def test_rollback_summary_gives_each_thing_restored_a_line() -> None:
    restored = _result(0, _rollback_doc(did=[
        "recreate: removed web", "switch: restored the original /etc/docker/daemon.json"],
        checked=["legacy store"]))
    record = cm.rollback_record("h1", None, restored, None)
    lines = _render("rollback-summary.j2", cm_rollback_report=cm.rollback_summary([record]))
    assert lines == ["rollback on 1 host(s): 1 restored", "h1: restored",
                     "  recreate: removed web",
                     "  switch: restored the original /etc/docker/daemon.json",
                     "report: /r/rollback.md, /r/rollback.json"]


def test_plan_summary_and_markdown_show_a_migrated_host_apart() -> None:
    already = {"id": "already-containerd", "severity": "blocker", "message": "nothing to do",
               "hint": ""}  # fmt: skip
    migrated = {**BLOCKED_PLAN, "checks": [already]}
    fleet = cm.plan_fleet([cm.plan_record(_result(0, READY_PLAN), "h1"),
                           cm.plan_record(_result(3, BLOCKED_PLAN), "h2"),
                           cm.plan_record(_result(3, migrated), "h3")], ["h1", "h2", "h3"])
    lines = _render("plan-summary.j2", cm_plan_report=fleet)
    assert lines[0] == ("fleet plan: 3 host(s), 1 ready, 1 blocked, 1 already migrated, "
                        "0 error/unreachable")
    assert lines[1:4] == ["h1: ready", "h2: blocked (containers-present)",
                          "h3: already migrated (on the containerd store; not in the totals)"]
    markdown = "\n".join(_render("plan.md.j2", cm_plan_report=fleet))
    assert "### h3: ALREADY MIGRATED" in markdown
    assert "| h3 | **already migrated** |" in markdown
    assert "- **already migrated** (1): h3" in markdown
    assert "leave out the 1 already migrated host(s)" in markdown


def _rehearsal(ok: bool = True, **fields: Any) -> dict[str, Any]:
    """A `rehearse --format json` report, with every key it has today."""
    return {"schema_version": 2, "ok": ok, "exit_code": 0 if ok else 4,
            "finished_at": "2026-12-05T02:00:00Z", "hostname": "h", "engine_version": "28.5.2",
            "dockerd": "/usr/sbin/dockerd",
            "binaries": {"dockerd": "/usr/sbin/dockerd"}, "images": 3, "containers": 2,
            "containers_created": 2, "containers_started": None,
            "failures": [] if ok else ["image a:1 did not load", "cannot recreate container w"],
            "notes": ["web: created without its networks"], "blockers": None, "dir": None,
            "leftovers_removed": [],
            "figures": {"engine_start_seconds": 1.2, "archive_bytes": 1000, "save_seconds": 2.0,
                        "load_seconds": 3.0, "load_mbps": 0.3, "verify_seconds": 0.5,
                        "create_seconds": 0.25, "window_seconds": 15.5, "run_seconds": 17.5},
            **fields}  # fmt: skip


def test_a_rehearsal_becomes_a_host_record_with_its_figures_and_failures() -> None:
    passed = cm.rehearse_record("h1", _result(0, _rehearsal()))
    assert (passed["outcome"], passed["failed"], passed["exit_code"]) == ("rehearsed", False, 0)
    assert passed["rehearsal"]["figures"]["window_seconds"] == 15.5
    assert passed["rehearsal"]["finished_at"] == "2026-12-05T02:00:00Z"
    assert passed["line"] == "h1: rehearsed, window 15.5 s, run 17.5 s"
    assert passed["output"] == ["note web: created without its networks"]
    # Non-zero exit with the report printed: failed, with the rehearsal's own failures.
    failed = cm.rehearse_record("h2", _result(4, _rehearsal(ok=False)))
    assert (failed["outcome"], failed["failed"]) == ("failed", True)
    assert failed["rehearsal"]["failures"] == ["image a:1 did not load",
                                               "cannot recreate container w"]  # fmt: skip
    assert failed["reason"] == ("rehearsal failed, exit 4: verification failed: image a:1 did "
                                "not load (and 1 more)")
    assert failed["output"][:2] == ["FAIL image a:1 did not load",
                                    "FAIL cannot recreate container w"]  # fmt: skip
    # A report that says it failed is a failure whatever the exit code says.
    assert cm.rehearse_record("h2", _result(0, _rehearsal(ok=False)))["failed"]
    # Blocked (exit 3): its blockers, skipped, not a failure of the host.
    blocked = cm.rehearse_record("h3", _result(3, {"ok": False, "exit_code": 3,
                                                    "blockers": ["too deep for a socket"]}))
    assert (blocked["outcome"], blocked["failed"]) == ("skipped", False)
    assert blocked["reason"] == "rehearse blocked: too deep for a socket"
    assert blocked["rehearsal"]["figures"] is None
    locked = cm.rehearse_record("h4", _result(8, attempts=3, failed=True))
    assert locked["outcome"] == "skipped" and "after 3 attempt(s)" in locked["reason"]


def test_a_rehearsal_that_printed_no_report_fails_with_the_error() -> None:
    down = cm.rehearse_record("h1", _result(5, "", "error: cannot reach the Docker daemon"))
    assert (down["outcome"], down["failed"], down["rehearsal"]) == ("failed", True, None)
    assert down["reason"] == ("rehearse: exit 5: Docker daemon unreachable: cannot reach the "
                              "Docker daemon")
    # Text on stdout is not a report; nor is a report of a later schema.
    text = cm.rehearse_record("h2", _result(0, "rehearsal: OK (3 image(s))"))
    assert (text["outcome"], text["rehearsal"]) == ("failed", None)
    later = cm.rehearse_record("h3", _result(0, _rehearsal(schema_version=3)))
    assert later["rehearsal"] is None and later["failed"]
    assert cm.rehearse_record("h4", _result(0, _rehearsal(schema_version=1)))["outcome"] == (
        "rehearsed")
    unreachable = cm.rehearse_record("h5", {"unreachable": True, "msg": "ssh: timeout"})
    assert unreachable["failed"] and "ssh: timeout" in unreachable["reason"]


def test_the_fleet_rehearsal_has_totals_over_the_hosts_that_rehearsed() -> None:
    records = [cm.rehearse_record("h1", _result(0, _rehearsal())),
               cm.rehearse_record("h2", _result(4, _rehearsal(
                   ok=False, figures={**_rehearsal()["figures"], "window_seconds": 20.0}))),
               cm.rehearse_record("h3", _result(3, {"ok": False, "exit_code": 3,
                                                    "blockers": ["no room"]})),
               None]  # fmt: skip
    summary = cm.prepare_summary(records, ["h1", "h2", "h3", "h4"], command="rehearse")
    assert summary["counts"] == {"rehearsed": 1, "failed": 2, "skipped": 1}
    totals = summary["totals"]
    assert (totals["hosts_rehearsed"], totals["hosts_with_failures"], totals["failures"]) == (
        2, 1, 2)
    assert (totals["images"], totals["containers"], totals["archive_bytes"]) == (6, 4, 2000)
    assert (totals["window_seconds"], totals["longest_window_seconds"]) == (35.5, 20.0)
    assert totals["longest_run_seconds"] == 17.5
    assert [row["host"] for row in summary["hosts"]] == ["h1", "h2", "h3", "h4"]
    assert "totals" not in cm.prepare_summary(records[:1], ["h1"], command="export")


def test_the_fleet_reads_every_key_and_the_schema_version_rehearse_writes_today() -> None:
    # The filter cannot import the product (it runs on the controller); this ties them.
    assert REHEARSAL_SCHEMA_VERSION in cm.REHEARSAL_SCHEMA_VERSIONS
    assert set(cm.REHEARSAL_KEYS) <= set(RehearsalReport.model_fields)
    assert set(_rehearsal()) - {"schema_version"} <= set(RehearsalReport.model_fields)
