"""The records phases hand to each other and to the commands, as typed values.

Every phase declares its intent, undo record and result as frozen `RecordModel`s; the
runner journals them as JSON (`model_dump(mode="json")`) and hands `undo()` its record
read back through the phase's undo model. The models another phase or a command reads are
declared here, once (so a phase reads them without importing another phase), and read
through `records_of` / `PhaseRecords` (never `result["key"]` in the reader); the others
live in their phase's module. The models ignore keys they do not declare and default what
is missing, so journals written by 0.1.0 replay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sized
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError

from migrate.archives.saved_tar import ExpectedImage
from migrate.errors import StateError
from migrate.journal import JournalState, PhaseName
from migrate.models import DOCKERD_CONTAINERD_NAMESPACE
from migrate.support.sizes import human_bytes


class RecordModel(BaseModel):
    """A journaled record: frozen, unknown keys ignored, missing ones defaulted."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    def to_json(self) -> dict[str, Any]:
        """The record as the journal stores it."""
        return self.model_dump(mode="json")

    def summary(self) -> str:
        """A phase result for people (`status`): counts and sizes, never a Python repr."""
        return ""


def summarised(*parts: str | None) -> str:
    return ", ".join(part for part in parts if part)


def counted(count: int | Sized | None, what: str) -> str | None:
    """"3 images" (a collection counts its members); None when there is nothing to count."""
    if count is None:
        return None
    return f"{count if isinstance(count, int) else len(count)} {what}"


def sized(size: int, what: str) -> str:
    return f"{human_bytes(size)} {what}"


class NoUndo(RecordModel):
    """The undo record of a phase that changes nothing a rollback must reverse."""


class StageTarget(RecordModel):
    """The containerd store the stage phase fills, and the names it held before (never
    ours to remove): the stage phase's intent."""

    ctr: str | None = None
    address: str | None = None
    namespace: str = DOCKERD_CONTAINERD_NAMESPACE
    snapshotter: str | None = None
    before: tuple[str, ...] = ()


class StagedNames(StageTarget):
    # Every name this migration staged -> the manifest digest it staged there.
    names: dict[str, str] = {}


class StageFlush(RecordModel):
    how: str = ""
    seconds: float = 0.0


class StageResult(StagedNames):
    # What the containerd store proves is staged, with the IDs after the switch.
    expected: tuple[ExpectedImage, ...] = ()
    staged: int = 0
    staged_now: int = 0
    batches_now: int = 0
    bytes_streamed: int = 0
    bytes_streamed_now: int = 0
    unstaged: tuple[str, ...] = ()
    disk_bytes: int = 0
    flushed: StageFlush | None = None

    def summary(self) -> str:
        return summarised(counted(self.staged, "images staged"),
                          counted(self.staged_now, "staged now"),
                          sized(self.bytes_streamed, "streamed into containerd"),
                          sized(self.disk_bytes, "added to the containerd store"))


class ExportResult(RecordModel):
    # None: the export has no result (never ran); [] when it wrote nothing.
    archives: tuple[str, ...] | None = None
    written: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()
    bytes_written: int = 0
    images: int = 0
    staged: int = 0
    oversize: tuple[str, ...] = ()

    def summary(self) -> str:
        return summarised(counted(self.archives, "archives"),
                          counted(self.written, "archives written"),
                          counted(self.reused, "archives reused"),
                          sized(self.bytes_written, "written"), counted(self.images, "images"),
                          counted(self.staged, "images staged"))


class QuiescedContainer(RecordModel):
    """A container the quiesce phase stops, and the undo starts again."""

    id: str
    name: str = ""
    state: str = ""
    # Its dependency level (0: needs no other container); None in records of 0.1.0.
    level: int | None = None
    stop_timeout: int | None = None
    # When it stopped (ISO); None until it did.
    stopped_at: str | None = None


class QuiesceUndo(RecordModel):
    containers: tuple[QuiescedContainer, ...] = ()
    # The containers policy the containers were stopped under (it decides from then on).
    policy: str | None = None


class QuiesceResult(RecordModel):
    stopped: tuple[str, ...] = ()
    containers: int = 0
    # container ID -> when it stopped (ISO), for the recreate phase's downtime figures.
    stopped_at: dict[str, str] = {}

    def summary(self) -> str:
        return summarised(counted(self.stopped, "stopped"),
                          counted(self.containers, "containers"))


class CommitEntry(RecordModel):
    """A container whose writable layer the commit phase commits, to `ref`."""

    container: str
    name: str = ""
    ref: str


class CommittedEntry(CommitEntry):
    # The commit's image ID in the legacy store ("" in an intent: not committed yet).
    image_id: str = ""


class CommitUndo(RecordModel):
    commits: tuple[CommittedEntry, ...] = ()


class CommitResult(RecordModel):
    committed: tuple[str, ...] = ()
    archives: tuple[str, ...] = ()
    written: tuple[str, ...] = ()
    bytes_written: int = 0

    def summary(self) -> str:
        return summarised(counted(self.committed, "committed"),
                          counted(self.archives, "archives"),
                          counted(self.written, "archives written"),
                          sized(self.bytes_written, "written"))


class SwitchOriginal(RecordModel):
    """daemon.json as it was before the switch: what its undo restores, byte for byte."""

    path: str | None = None
    # None: there was no file (`original_absent`).
    original_b64: str | None = None
    original_absent: bool = False
    # Strict: a journal that is not ours must not slip a mode past the undo's check.
    mode: StrictInt | None = None
    uid: StrictInt = 0
    gid: StrictInt = 0
    dir_existed: bool = True


class SwitchUndo(SwitchOriginal):
    """The switch record: its intent, its checkpoint's base and its undo record alike."""

    written_sha256: str | None = None
    written_b64: str | None = None
    restart_command: tuple[str, ...] = ()
    restart_timeout: float | None = None
    host: str = ""

    def wrote(self, content: bytes | None) -> bool:
        """Whether `content` is the daemon.json this switch wrote (not edited since)."""
        return (content is not None and self.written_sha256 is not None
                and hashlib.sha256(content).hexdigest() == self.written_sha256)


class VerifyResult(RecordModel):
    images: int = 0
    tags: int = 0
    id_map: str | None = None
    # The volumes the guard container protects (empty: no guard was needed).
    volume_guard: tuple[str, ...] = ()
    report: str | None = None
    # The multi-platform check: "supported", "unsupported" or "unchecked" (None: not run).
    multi_platform: str | None = None

    def summary(self) -> str:
        return summarised(counted(self.images, "images"), counted(self.tags, "tags"))


class RecreatedEntry(RecordModel):
    id: str
    name: str = ""
    new_id: str = ""


class RecreateUndo(RecordModel):
    containers: tuple[RecreatedEntry, ...] = ()


class RecreateResult(RecordModel):
    recreated: tuple[str, ...] = ()
    running: tuple[str, ...] = ()
    left_created: tuple[str, ...] = ()
    downtime_seconds: dict[str, float | None] = {}
    container_map: str | None = None
    # Volumes still guarded after recreating; None when the phase did not recreate.
    volume_guard: tuple[str, ...] | None = None
    # Verify's multi-platform check when it was left until the containers ran again
    # (supported, unsupported, unchecked); None: verify did it.
    multi_platform: str | None = None

    def summary(self) -> str:
        return summarised(counted(self.recreated, "recreated"))


R = TypeVar("R", bound=RecordModel)


def read_record(model: type[R], data: Mapping[str, Any] | None, phase: str = "") -> R:
    """`data` (a journaled record, or None) as `model`; a record of the wrong shape is a
    damaged journal, said as such."""
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as error:
        raise StateError(f"the journal's {phase or model.__name__} record is damaged: "
                         f"{error.errors()[0]['msg']} at {error.errors()[0]['loc']}",
                         "roll back with `containerd-migrate rollback`, or start again with "
                         "a fresh --state-dir") from error


class PhaseRecords:
    """Typed views of the undo records and results of a migration's finished phases."""

    def __init__(self, undo: Mapping[str, Mapping[str, Any]],
                 results: Mapping[str, Mapping[str, Any]]) -> None:
        self._undo = undo
        self._results = results

    @classmethod
    def of(cls, state: JournalState) -> PhaseRecords:
        done = [p for p in state.phases if p.status == "done"]
        return cls({p.name: dict(p.undo or {}) for p in done},
                   {p.name: dict(p.result or {}) for p in done})

    def _result(self, model: type[R], phase: PhaseName) -> R:
        return read_record(model, self._results.get(phase), f"{phase} result")

    def _undo_record(self, model: type[R], phase: PhaseName) -> R:
        return read_record(model, self._undo.get(phase), f"{phase} undo")

    @property
    def stage(self) -> StageResult:
        return self._result(StageResult, "stage")

    @property
    def export(self) -> ExportResult:
        return self._result(ExportResult, "export")

    @property
    def quiesce(self) -> QuiesceResult:
        return self._result(QuiesceResult, "quiesce")

    @property
    def quiesce_undo(self) -> QuiesceUndo:
        return self._undo_record(QuiesceUndo, "quiesce")

    @property
    def commit(self) -> CommitResult:
        return self._result(CommitResult, "commit")

    @property
    def commit_undo(self) -> CommitUndo:
        return self._undo_record(CommitUndo, "commit")

    @property
    def switch_undo(self) -> SwitchUndo:
        return self._undo_record(SwitchUndo, "switch")

    @property
    def verify(self) -> VerifyResult:
        return self._result(VerifyResult, "verify")

    @property
    def recreate(self) -> RecreateResult:
        return self._result(RecreateResult, "recreate")

    @property
    def recreate_undo(self) -> RecreateUndo:
        return self._undo_record(RecreateUndo, "recreate")


def records_of(state: JournalState) -> PhaseRecords:
    return PhaseRecords.of(state)
