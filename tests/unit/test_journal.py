from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from migrate.errors import DiskFullError, ExitCode, MigrateError, StateError, VerificationFailed
from migrate.journal import (
    JOURNAL_VERSION,
    PHASE_ORDER,
    Journal,
    PhaseName,
    PhaseStarted,
    Progress,
    RunStarted,
    compute_state,
    replay,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.jsonl"


def _run(path: Path, *phases: PhaseName) -> Journal:
    """A journal with a started migration whose `phases` are done."""
    journal = Journal(path).open()
    journal.start_run("0.1.0", ["migrate", "--yes"], {"keep_archives": True})
    for name in phases:
        with journal.phase(name, {"about_to": name}) as ph:
            ph.done(undo={"restore": name}, result={"bytes": 1})
    return journal


def _events(path: Path) -> list[str]:
    return [json.loads(line)["event"] for line in path.read_text().splitlines()]


def test_phase_order() -> None:
    assert PHASE_ORDER == (
        "snapshot", "stage", "export", "quiesce", "commit", "switch", "restart", "import",
        "verify", "recreate",
    )


def test_append_and_replay_round_trip(path: Path) -> None:
    journal = _run(path, "snapshot")
    with journal.phase("export", {"images": ["a", "b"]}) as ph:
        journal.progress("export", {"archive": "a.tar", "sha256": "00" * 32})
        ph.done(undo={"archives": ["a.tar"]}, result={"bytes": 10, "count": 1})
    journal.close()

    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    assert next(iter(first)) == "event"
    assert first["journal_version"] == JOURNAL_VERSION
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))

    state = replay(path)
    assert state == Journal(path).state()
    assert state.record_count == len(lines) == 6
    assert state.migration_id is not None
    assert state.migration_id == state.last_migration_id
    assert state.runs[0].options == {"keep_archives": True}
    assert state.runs[0].argv == ("migrate", "--yes")
    assert state.done_phases == ("snapshot", "export")
    assert state.remaining[:1] == ("quiesce",)
    export = state.phase("export")
    assert export.status == "done"
    assert export.intent == {"images": ["a", "b"]}
    assert export.undo == {"archives": ["a.tar"]}
    assert export.result == {"bytes": 10, "count": 1}
    assert export.progress == ({"archive": "a.tar", "sha256": "00" * 32},)
    assert export.started_at is not None and export.finished_at is not None
    assert export.started_at.tzinfo is not None
    assert state.phase("verify").status == "pending"
    assert not state.finished and not state.torn_tail


def test_append_returns_stamped_record(path: Path) -> None:
    journal = _run(path)
    mid = journal.require_migration()
    written = journal.append(PhaseStarted(migration_id=mid, phase="snapshot", seq=99))
    assert written.seq == 2
    assert written.ts.tzinfo is not None


def test_missing_journal_replays_empty(path: Path) -> None:
    state = replay(path)
    assert state.record_count == 0
    assert state.migration_id is None
    assert state.phases_to_undo() == ()
    assert not path.exists()


@pytest.mark.parametrize("tail", [b'{"event":"phase_st', b'{"event":"phase_started"}', b"\x00\x00"])
def test_torn_last_line_tolerated_then_repaired(path: Path, tail: bytes) -> None:
    _run(path, "snapshot").close()
    before = replay(path)
    with path.open("ab") as handle:
        handle.write(tail)

    torn = replay(path)
    assert torn.torn_tail
    assert torn.record_count == before.record_count
    assert torn.done_phases == ("snapshot",)

    journal = Journal(path)
    with journal.phase("export", {}) as ph:
        ph.done()
    journal.close()
    for line in path.read_bytes().splitlines():
        json.loads(line)
    after = replay(path)
    assert not after.torn_tail
    assert after.done_phases == ("snapshot", "export")
    assert after.record_count == before.record_count + 2


def test_terminated_garbage_last_line_is_damage_not_torn(path: Path) -> None:
    """Issue 11.8: only an unterminated last line is torn; the file is never rewritten."""
    _run(path, "snapshot").close()
    with path.open("ab") as handle:
        handle.write(b"garbage\n")
    before = path.read_bytes()
    with pytest.raises(StateError) as caught:
        replay(path)
    assert caught.value.exit_code == ExitCode.STATE_INVALID
    with pytest.raises(StateError):
        Journal(path).open()
    assert path.read_bytes() == before


def test_only_line_garbage_is_not_truncated(path: Path) -> None:
    path.write_bytes(b"garbage\n")
    with pytest.raises(StateError) as caught:
        Journal(path).open()
    assert "from a backup" in caught.value.hint
    assert path.read_bytes() == b"garbage\n"


def test_unterminated_last_line_is_torn(path: Path) -> None:
    _run(path, "snapshot").close()
    with path.open("ab") as handle:
        handle.write(b'{"event": "phase_')
    assert replay(path).torn_tail


def test_corrupt_middle_line_is_refused(path: Path) -> None:
    _run(path, "snapshot").close()
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b"not json\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(StateError) as caught:
        replay(path)
    assert "line 2" in caught.value.message
    # The hint's recovery works: cut to the intact line(s), then the journal reads.
    assert f"head -n 1 {path}.damaged > {path}" in caught.value.hint
    assert "containerd-migrate rollback --yes" in caught.value.hint
    with pytest.raises(StateError):
        Journal(path).open()
    assert path.read_bytes() == b"".join(lines)
    path.write_bytes(lines[0])
    assert replay(path).migration_id is not None


def test_sequence_going_back_is_refused(path: Path) -> None:
    _run(path, "snapshot").close()
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines, lines[0]]))
    with pytest.raises(StateError, match="sequence"):
        replay(path)


@pytest.mark.parametrize("last", [True, False])
def test_future_version_is_refused(path: Path, last: bool) -> None:
    _run(path, "snapshot").close()
    lines = path.read_bytes().splitlines(keepends=True)
    index = -1 if last else 0
    record = json.loads(lines[index])
    record["journal_version"] = JOURNAL_VERSION + 1
    lines[index] = json.dumps(record).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(StateError, match="journal version 2") as caught:
        replay(path)
    assert "newer" in caught.value.hint


def test_phase_failure_is_recorded(path: Path) -> None:
    journal = _run(path, "snapshot")
    with pytest.raises(VerificationFailed), journal.phase("export", {"n": 1}):
        raise VerificationFailed("digest mismatch", hint="look")
    with pytest.raises(ValueError), journal.phase("switch", {}):
        raise ValueError("boom")
    state = journal.state()
    export = state.phase("export")
    assert (export.status, export.error, export.exit_code) == (
        "failed", "digest mismatch", int(ExitCode.VERIFY_FAILED)
    )
    assert state.phase("switch").error == "ValueError: boom"
    assert _events(path)[-4:] == ["phase_started", "phase_failed"] * 2


def test_keyboard_interrupt_is_recorded_and_reraised(path: Path) -> None:
    journal = _run(path, "snapshot")
    with pytest.raises(KeyboardInterrupt), journal.phase("export", {}):
        raise KeyboardInterrupt
    assert _events(path)[-1] == "interrupted"
    assert json.loads(path.read_text().splitlines()[-1])["signal"] == "SIGINT"
    assert journal.state().phase("export").status == "interrupted"


def test_interrupt_after_done_keeps_phase_done(path: Path) -> None:
    journal = _run(path)
    with pytest.raises(KeyboardInterrupt), journal.phase("snapshot", {}) as ph:
        ph.done(undo={"x": 1})
        raise KeyboardInterrupt
    with pytest.raises(RuntimeError), journal.phase("export", {}) as ph:
        ph.done()
        raise RuntimeError("after the fact")
    assert _events(path)[-4:] == ["phase_done", "interrupted", "phase_started", "phase_done"]
    assert json.loads(path.read_text().splitlines()[-3])["phase"] is None
    state = journal.state()
    assert state.done_phases == ("snapshot", "export")


def test_phase_without_done_is_a_failure(path: Path) -> None:
    journal = _run(path)
    with pytest.raises(MigrateError, match="without recording"), journal.phase("snapshot", {}):
        pass
    assert journal.state().phase("snapshot").status == "failed"


def test_done_twice_is_refused(path: Path) -> None:
    journal = _run(path)
    with pytest.raises(StateError), journal.phase("snapshot", {}) as ph:
        ph.done()
        ph.done()


def test_phase_needs_a_started_migration(path: Path) -> None:
    with pytest.raises(StateError, match="no migration"), Journal(path).phase("snapshot", {}):
        pass


def test_every_append_is_fsynced(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(path).open()
    calls: list[int] = []
    real = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    journal.start_run("0.1.0")
    assert len(calls) == 1
    with journal.phase("snapshot", {}) as ph:
        assert len(calls) == 2
        ph.done()
    assert len(calls) == 3


def test_journal_file_is_private(path: Path) -> None:
    old = os.umask(0)
    try:
        _run(path).close()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600


def test_symlinked_journal_is_refused(tmp_path: Path, path: Path) -> None:
    real = tmp_path / "elsewhere.jsonl"
    _run(real, "snapshot").close()
    path.symlink_to(real)
    with pytest.raises(StateError, match="symlink"):
        replay(path)
    with pytest.raises(StateError, match="symlink"):
        Journal(path).open()


def test_disk_full_append_leaves_journal_clean(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = _run(path, "snapshot")
    real_write = os.write
    calls = 0

    def half_then_full(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(DiskFullError), journal.phase("export", {}):
        pass
    monkeypatch.undo()
    with journal.phase("export", {}) as ph:
        ph.done()
    state = replay(path)
    assert not state.torn_tail
    assert state.done_phases == ("snapshot", "export")


def test_undo_order_and_bookkeeping(path: Path) -> None:
    journal = _run(path, "snapshot", "export")
    # A crash in the middle of switch: only its intent is on disk.
    mid = journal.require_migration()
    journal.append(PhaseStarted(migration_id=mid, phase="switch", intent={"write": "daemon.json"}))

    todo = journal.state().phases_to_undo()
    assert [p.name for p in todo] == ["switch", "export", "snapshot"]
    assert [p.complete for p in todo] == [False, True, True]
    assert todo[0].intent == {"write": "daemon.json"}
    assert todo[1].undo == {"restore": "export"}

    with journal.undo("switch"):
        pass
    with pytest.raises(OSError), journal.undo("export"):
        raise OSError("busy")
    state = journal.state()
    assert state.phase("switch").status == "undone"
    assert state.phase("export").undo_error == "OSError: busy"
    assert [p.name for p in state.phases_to_undo()] == ["export", "snapshot"]

    with journal.undo("export"), journal.undo("snapshot"):
        pass
    journal.finish("rolled_back")
    state = replay(path)
    assert state.phases_to_undo() == ()
    assert state.finished and state.outcome == "rolled_back"
    assert state.migration_id is None
    assert state.last_migration_id == mid


def test_undo_follows_start_order_not_phase_order(path: Path) -> None:
    journal = _run(path, "snapshot", "export")
    with journal.undo("export"):
        pass
    with journal.phase("export", {}) as ph:
        ph.done()
    with journal.phase("switch", {}) as ph:
        ph.done()
    state = journal.state()
    assert [p.name for p in state.phases_to_undo()] == ["switch", "export", "snapshot"]
    assert state.phase("export").attempts == 2


def test_resume_continues_the_unfinished_migration(path: Path) -> None:
    first = _run(path, "snapshot")
    mid = first.require_migration()
    first.close()

    again = Journal(path)
    run = again.start_run("0.1.0", ["migrate"])
    assert run.migration_id == mid
    state = again.state()
    assert state.resumed
    assert len({r.run_id for r in state.runs}) == 2
    assert state.done_phases == ("snapshot",)
    assert state.remaining[:1] == ("export",)

    with pytest.raises(StateError, match="unfinished"):
        again.start_run("0.1.0", migration_id="other")


def test_finished_migration_can_be_rolled_back_then_a_new_one_starts(path: Path) -> None:
    journal = _run(path, *PHASE_ORDER)
    mid = journal.require_migration()
    journal.finish("completed")
    assert journal.migration_id is None
    assert replay(path).outcome == "completed"

    journal.start_run("0.1.0", ["rollback"], migration_id=mid)
    for phase in reversed(replay(path).phases_to_undo()):
        with journal.undo(phase.name):
            pass
    journal.finish("rolled_back")
    assert replay(path).outcome == "rolled_back"

    fresh = journal.start_run("0.1.0", ["migrate"])
    assert fresh.migration_id != mid
    state = replay(path)
    assert state.migration_id == fresh.migration_id
    assert not state.resumed
    assert state.done_phases == ()
    journal.finish("completed")
    with pytest.raises(StateError, match="not the most recent"):
        journal.start_run("0.1.0", migration_id=mid)


def test_records_for_other_migrations_are_refused(path: Path) -> None:
    journal = _run(path)
    with pytest.raises(StateError):
        journal.append(Progress(migration_id="someone-else", phase="export"))


def test_compute_state_is_pure_over_records() -> None:
    run = RunStarted(migration_id="m", run_id="r", tool_version="1", seq=1)
    started = PhaseStarted(migration_id="m", phase="snapshot", seq=2)
    state = compute_state([run, started])
    assert state.phase("snapshot").status == "started"
    assert state.phases_to_undo()[0].complete is False
