"""Append-only rollback journal: `<state-dir>/journal.jsonl`, one JSON record per line.

Like pip's uninstall stash and alembic's version table, the journal is written *before*
a side effect (the intent) and *after* it (what undo needs), so after a crash we can
tell which phases may have touched the host and how to put them back. Every record is
fsynced before the caller acts on it. Only the journal assigns `seq` and `ts`.

Writers must hold the state dir lock; `reader.replay` is read-only and safe without it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from migrate import errors
from migrate.errors import StateError
from migrate.host.fs import disk_full_guard, fsync_dir
from migrate.journal.reader import open_nofollow, parse_journal, read_all
from migrate.journal.records import (
    JOURNAL_VERSION,
    CleanedUp,
    JournalState,
    JsonMap,
    MigrationFinished,
    Outcome,
    PhaseDone,
    PhaseFailed,
    PhaseName,
    PhaseStarted,
    Progress,
    Record,
    RunInterrupted,
    RunStarted,
    UndoDone,
    UndoFailed,
    UndoStarted,
    compute_state,
    utc_now,
)


def new_migration_id() -> str:
    return f"{utc_now():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


class PhaseHandle:
    """Yielded by `Journal.phase`; `done()` records the result right after the side effect."""

    def __init__(self, journal: Journal, name: PhaseName) -> None:
        self._journal = journal
        self.name = name
        self.record: PhaseDone | None = None

    def done(self, undo: JsonMap | None = None, result: JsonMap | None = None) -> PhaseDone:
        if self.record is not None:
            raise StateError(f"phase {self.name} recorded its result twice")
        record = self._journal.append(PhaseDone(
            migration_id=self._journal.require_migration(), phase=self.name,
            undo=dict(undo or {}), result=dict(result or {}),
        ))
        assert isinstance(record, PhaseDone)
        self.record = record
        return record


class UndoHandle:
    """Yielded by `Journal.undo`: an undo that could not do everything says so here."""

    def __init__(self) -> None:
        self.error: str | None = None

    def failed(self, error: str) -> None:
        self.error = error


def _is_interrupt(error: BaseException) -> bool:
    # KeyboardInterrupt, and SystemExit from a SIGTERM handler: the run was stopped, not
    # broken (no MigrateError means an interruption: the CLI only renders one).
    return not isinstance(error, Exception)


class Journal:
    """Writer for one journal file. Opening it cuts off a torn last record, so that
    records appended afterwards start on a line of their own."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._records: list[Record] = []
        self._torn_tail = False
        self._seen_ids: set[str] = set()
        self._last_id: str | None = None
        self._finished = False

    def open(self) -> Journal:
        if self._fd is not None:
            return self
        flags = os.O_RDWR | os.O_APPEND
        try:
            fd, created = open_nofollow(self.path, flags | os.O_CREAT | os.O_EXCL), True
        except FileExistsError:
            fd, created = open_nofollow(self.path, flags), False
        try:
            if created:
                os.fchmod(fd, 0o600)  # umask may only remove bits; be explicit anyway
                fsync_dir(self.path.parent)
            data = read_all(fd, self.path)
            parsed = parse_journal(data, self.path)
            if parsed.good_length < len(data):
                with disk_full_guard(self.path, "repairing the journal"):
                    os.ftruncate(fd, parsed.good_length)
                    os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._torn_tail = parsed.torn_tail
        for record in parsed.records:
            self._track(record)
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Journal:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _track(self, record: Record) -> None:
        self._records.append(record)
        self._seen_ids.add(record.migration_id)
        if isinstance(record, RunStarted):
            self._finished = self._finished and record.migration_id == self._last_id
            self._last_id = record.migration_id
        elif isinstance(record, MigrationFinished):
            self._finished = True

    @property
    def migration_id(self) -> str | None:
        """The unfinished migration, if any."""
        self.open()
        return None if self._finished else self._last_id

    def require_migration(self) -> str:
        """The migration records are appended to: the most recent one, finished or not
        (a completed migration can still be rolled back)."""
        self.open()
        if self._last_id is None:
            raise StateError("no migration has been started in this state dir",
                             hint="run `containerd-migrate run` first")
        return self._last_id

    def state(self) -> JournalState:
        self.open()
        return compute_state(self._records, self._torn_tail)

    def _check(self, record: Record) -> None:
        mid = record.migration_id
        if not isinstance(record, RunStarted):
            if mid != self.require_migration():
                raise StateError(f"record for migration {mid} while {self._last_id} is current")
        elif self.migration_id is not None and mid != self.migration_id:
            raise StateError(
                f"migration {self.migration_id} is unfinished; cannot start {mid}",
                hint="resume it with `containerd-migrate run`, or undo it with "
                "`containerd-migrate rollback`",
            )
        elif mid != self._last_id and mid in self._seen_ids:
            raise StateError(f"migration {mid} is not the most recent one in this journal")

    def append(self, record: Record) -> Record:
        """Write `record` durably (fsynced) and return it as written, with seq and ts set."""
        self.open()
        assert self._fd is not None
        self._check(record)
        last_seq = self._records[-1].seq if self._records else 0
        record = record.model_copy(
            update={"seq": last_seq + 1, "ts": utc_now(), "journal_version": JOURNAL_VERSION}
        )
        data = record.model_dump(mode="json")
        line = json.dumps({"event": data.pop("event"), **data}, separators=(",", ":")) + "\n"
        size = os.fstat(self._fd).st_size
        with disk_full_guard(self.path, "writing the rollback journal"):
            try:
                view = memoryview(line.encode())
                while view:
                    view = view[os.write(self._fd, view) :]
                os.fsync(self._fd)
            except BaseException:
                # A half-written record must not be followed by a good one.
                os.ftruncate(self._fd, size)
                raise
        self._track(record)
        return record

    def _append_after(self, failure: BaseException, record: Record) -> None:
        """Record a failure without masking it if the journal itself cannot be written."""
        try:
            self.append(record)
        except (OSError, errors.MigrateError) as error:
            failure.add_note(f"could not journal this failure: {error}")

    def start_run(
        self,
        tool_version: str,
        argv: Sequence[str] = (),
        options: JsonMap | None = None,
        *,
        migration_id: str | None = None,
    ) -> RunStarted:
        """Start a run: resumes the unfinished migration, else begins a new one."""
        mid = migration_id or self.migration_id or new_migration_id()
        record = self.append(RunStarted(
            migration_id=mid, run_id=uuid.uuid4().hex, tool_version=tool_version,
            argv=tuple(argv), options=dict(options or {}),
        ))
        assert isinstance(record, RunStarted)
        return record

    def progress(self, phase: PhaseName, data: JsonMap) -> None:
        mid = self.require_migration()
        self.append(Progress(migration_id=mid, phase=phase, data=dict(data)))

    def finish(self, outcome: Outcome) -> None:
        self.append(MigrationFinished(migration_id=self.require_migration(), outcome=outcome))

    def cleaned_up(self, *, pruned: bool = False, kept_images: bool = False) -> None:
        self.append(CleanedUp(migration_id=self.require_migration(), pruned=pruned,
                              kept_images=kept_images))

    @contextmanager
    def phase(self, name: PhaseName, intent: JsonMap) -> Iterator[PhaseHandle]:
        """phase_started now; phase_done via `handle.done()`; failures and interrupts
        that escape before `done()` are recorded against the phase, then re-raised."""
        mid = self.require_migration()
        self.append(PhaseStarted(migration_id=mid, phase=name, intent=dict(intent)))
        handle = PhaseHandle(self, name)
        try:
            yield handle
        except BaseException as error:
            if _is_interrupt(error):
                phase = name if handle.record is None else None
                signal = (getattr(error, "signal_name", "SIGINT")
                          if isinstance(error, KeyboardInterrupt) else None)
                self._append_after(
                    error, RunInterrupted(migration_id=mid, phase=phase, signal=signal)
                )
            elif handle.record is None:
                self._append_after(error, _failure(mid, name, error))
            raise
        if handle.record is None:
            missing = errors.MigrateError(f"phase {name} ended without recording its result")
            self._append_after(missing, _failure(mid, name, missing))
            raise missing

    @contextmanager
    def undo(self, name: PhaseName) -> Iterator[UndoHandle]:
        """undo_started now; undo_done on a clean exit, undo_failed if anything escapes or
        the undo said `handle.failed(...)` (it ran to its end, but did not do everything)."""
        mid = self.require_migration()
        self.append(UndoStarted(migration_id=mid, phase=name))
        handle = UndoHandle()
        try:
            yield handle
        except BaseException as error:
            failed = _failure(mid, name, error)
            self._append_after(error, UndoFailed(
                migration_id=mid, phase=name, error=failed.error, exit_code=failed.exit_code))
            raise
        if handle.error is not None:
            self.append(UndoFailed(migration_id=mid, phase=name, error=handle.error,
                                   exit_code=int(errors.ExitCode.ERROR)))
        else:
            self.append(UndoDone(migration_id=mid, phase=name))


def _failure(mid: str, name: PhaseName, error: BaseException) -> PhaseFailed:
    if _is_interrupt(error):
        return PhaseFailed(migration_id=mid, phase=name, error=f"interrupted ({error!r})",
                           exit_code=int(errors.ExitCode.INTERRUPTED))
    if isinstance(error, errors.MigrateError):
        return PhaseFailed(migration_id=mid, phase=name, error=error.message,
                           hint=error.hint, exit_code=int(error.exit_code))
    return PhaseFailed(migration_id=mid, phase=name, error=f"{type(error).__name__}: {error}",
                       exit_code=int(errors.ExitCode.ERROR))
