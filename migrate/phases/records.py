"""The records phases hand to each other and to the commands, as typed values.

The journal stores each phase's undo record and result as JSON; whatever another phase or
a command reads of them is declared here, once, as a frozen model, and read through
`records_of` / `PhaseRecords` (never `result["key"]` in the reader). The models ignore keys
they do not declare and default what is missing, so journals written by 0.1.0 replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from migrate.archives.saved_tar import ExpectedImage
from migrate.errors import StateError
from migrate.journal import JournalState, PhaseName


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)


class StageResult(_Record):
    # What the containerd store proves is staged, with the IDs after the switch.
    expected: tuple[ExpectedImage, ...] = ()
    staged: int = 0
    staged_now: int = 0
    bytes_streamed_now: int = 0
    disk_bytes: int = 0
    address: str | None = None


class ExportResult(_Record):
    # None: the export has no result (never ran); [] when it wrote nothing.
    archives: tuple[str, ...] | None = None
    written: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()
    bytes_written: int = 0


class QuiesceUndo(_Record):
    containers: tuple[dict[str, Any], ...] = ()
    # The containers policy the containers were stopped under (it decides from then on).
    policy: str | None = None


class QuiesceResult(_Record):
    stopped: tuple[str, ...] = ()
    containers: int = 0
    # container ID -> when it stopped (ISO), for the recreate phase's downtime figures.
    stopped_at: dict[str, str] = {}


class CommitEntry(_Record):
    container: str
    name: str = ""
    ref: str


class CommitUndo(_Record):
    commits: tuple[CommitEntry, ...] = ()


class CommitResult(_Record):
    archives: tuple[str, ...] = ()


class SwitchUndo(_Record):
    path: str | None = None
    written_sha256: str | None = None
    restart_command: tuple[str, ...] = ()
    restart_timeout: float | None = None


class VerifyResult(_Record):
    # The volumes the guard container protects (empty: no guard was needed).
    volume_guard: tuple[str, ...] = ()
    # The multi-platform check: "supported", "unsupported" or "unchecked" (None: not run).
    multi_platform: str | None = None


class RecreatedEntry(_Record):
    id: str
    name: str = ""
    new_id: str = ""


class RecreateUndo(_Record):
    containers: tuple[RecreatedEntry, ...] = ()


class RecreateResult(_Record):
    recreated: tuple[str, ...] = ()
    running: tuple[str, ...] = ()
    left_created: tuple[str, ...] = ()
    downtime_seconds: dict[str, float | None] = {}
    container_map: str | None = None
    # Volumes still guarded after recreating; None when the phase did not recreate.
    volume_guard: tuple[str, ...] | None = None


R = TypeVar("R", bound=_Record)


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
