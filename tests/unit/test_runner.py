"""The run plan is a pure function of the journal: assert it as a value."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.commands.status import render_status, status_document
from migrate.errors import BlockedError
from migrate.journal import Journal, PhaseName, PhaseStarted, replay
from migrate.phases.lifecycle import HostNow
from migrate.phases.runner import PREPARE_PHASES, result_summary, steps_to_run

pytestmark = pytest.mark.unit

ALL: tuple[PhaseName, ...] = (
    "snapshot", "export", "quiesce", "commit", "switch", "restart", "import", "verify",
    "recreate",
)


def _journal(path: Path, *done: PhaseName, started: PhaseName | None = None) -> Journal:
    journal = Journal(path).open()
    journal.start_run("0.1.0", ["run"], {})
    for name in done:
        with journal.phase(name, {}) as handle:
            handle.done(undo={}, result={"images": 3})
    if started is not None:
        # As a crash leaves it: intent written, side effect maybe done, no result.
        journal.append(PhaseStarted(migration_id=journal.require_migration(), phase=started,
                                    intent={}))
    return journal


def test_fresh_journal_runs_every_phase(tmp_path: Path) -> None:
    assert steps_to_run(replay(tmp_path / "none.jsonl")) == ALL


def test_prepared_export_is_redone_so_new_images_are_picked_up(tmp_path: Path) -> None:
    journal = _journal(tmp_path / "j", "snapshot", "export")
    assert steps_to_run(journal.state()) == ALL


def test_export_command_plans_only_the_prepare_phases(tmp_path: Path) -> None:
    journal = _journal(tmp_path / "j", "snapshot", "export")
    assert steps_to_run(journal.state(), PREPARE_PHASES) == ("snapshot", "export")


def test_after_quiesce_the_snapshot_is_frozen(tmp_path: Path) -> None:
    journal = _journal(tmp_path / "j", "snapshot", "export", "quiesce", "commit", "switch")
    assert steps_to_run(journal.state()) == ("restart", "import", "verify", "recreate")


def test_a_phase_started_but_not_done_is_run_again(tmp_path: Path) -> None:
    journal = _journal(tmp_path / "j", "snapshot", "export", "quiesce", "commit",
                       "switch", started="restart")
    assert steps_to_run(journal.state()) == ("restart", "import", "verify", "recreate")
    assert steps_to_run(journal.state(), PREPARE_PHASES) == ()


def test_half_rolled_back_migration_refuses_to_run_forward(tmp_path: Path) -> None:
    journal = _journal(tmp_path / "j", "snapshot", "export", "quiesce", "commit", "switch")
    with journal.undo("switch"):
        pass
    with pytest.raises(BlockedError, match="half rolled back"):
        steps_to_run(journal.state())


def test_status_document_reports_remaining_and_undo_order(tmp_path: Path) -> None:
    journal = _journal(tmp_path / "j", "snapshot", "export", "quiesce", "commit", "switch")
    doc = status_document(journal.state())
    assert doc["active"] is True
    assert doc["remaining"] == ["restart", "import", "verify", "recreate"]
    assert doc["rollback_would_undo"] == ["switch", "commit", "quiesce", "export", "snapshot"]
    text = render_status(doc, journal.state())
    assert "remaining: restart, import, verify, recreate" in text
    assert "rollback would undo: switch, commit, quiesce, export, snapshot" in text


def test_status_of_a_rolled_back_migration_offers_no_undo(tmp_path: Path) -> None:
    journal = _journal(tmp_path / "j", "snapshot")
    with journal.undo("snapshot"):
        pass
    journal.finish("rolled_back")
    doc = status_document(journal.state())
    assert doc["active"] is False
    assert doc["outcome"] == "rolled_back"
    assert doc["rollback_would_undo"] == []
    assert doc["remaining"] == []


def test_status_after_export_lists_no_phase_as_both_done_and_remaining(tmp_path: Path) -> None:
    journal = _journal(tmp_path / "j", "snapshot", "export")
    doc = status_document(journal.state())
    done = {p["name"] for p in doc["phases"] if p["status"] == "done"}
    assert done == {"snapshot", "export"} and not done & set(doc["remaining"])
    assert doc["next"].startswith("next: in the maintenance window: `containerd-migrate run "
                                  "--yes`")


def test_status_believes_the_host_over_the_journal_after_cleanup(tmp_path: Path) -> None:
    journal = _journal(tmp_path / "j", *ALL)
    journal.finish("completed")
    state = journal.state()
    cleaned = status_document(state, HostNow(store="containerd", volume_guard=False))
    assert cleaned["volume_guard"] is False
    assert "cleanup --prune-legacy --yes" in cleaned["next"]
    pending = status_document(state, HostNow(store="containerd", volume_guard=True,
                                             archive_bytes=12_500_000))
    assert "`containerd-migrate cleanup`" in pending["next"]
    assert "12.5 MB" in render_status(pending, state)
    pruned = status_document(state, HostNow(store="containerd", legacy_pruned=True))
    assert pruned["rollback_would_undo"] == [] and "no rollback" in pruned["next"]


def test_status_next_step_after_a_rollback_with_archives_left(tmp_path: Path) -> None:
    journal = _journal(tmp_path / "j", "snapshot", "export")
    journal.finish("rolled_back")
    doc = status_document(journal.state(), HostNow(store="legacy", archive_bytes=2_000_000))
    assert doc["next"].startswith("next: `containerd-migrate cleanup` deletes what the "
                                  "migration left (2 MB of archives)")


def test_status_result_column_has_counts_and_sizes_not_reprs() -> None:
    summary = result_summary("export", {
        "archives": ["a.tar", "b.tar"], "written": ["a.tar"], "reused": [],
        "bytes_written": 12_491_776, "oversize": [], "images": 3, "staged": 1})
    assert summary == ("2 archives, 1 archives written, 0 archives reused, 12.5 MB written, "
                       "3 images, 1 images staged")
    assert "[" not in summary and "=" not in summary
    # Read through each phase's own result model: the same key means what its phase says.
    assert result_summary("quiesce", {"stopped": ["a", "b"], "containers": 5}) == \
        "2 stopped, 5 containers"
    assert result_summary("restart", {"restarted": True, "store": "containerd"}) == \
        "containerd store"
    assert result_summary("switch", {"path": "/etc/docker/daemon.json"}) == ""
    # None (never ran) or a result of another shape: nothing, never an error.
    assert result_summary("verify", None) == ""
    assert result_summary("verify", {"images": "many"}) == ""
