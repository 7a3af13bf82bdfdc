"""The on-disk record of a migration: the state dir and its append-only journal.

`records` holds the record models and the pure fold of records into a `JournalState`;
`reader` parses `journal.jsonl` (tolerating a torn last line) and replays it read-only;
`writer` appends records (intent before a side effect, completion after, fsync per
record); `state_dir` owns the directory: its layout, ownership rules, lock and host
identity.
"""

from migrate.journal.reader import replay
from migrate.journal.records import (
    JOURNAL_VERSION,
    KEPT_IN_CONTAINERD,
    OPT_IN_PHASES,
    PHASE_ORDER,
    CleanedUp,
    JournalState,
    JsonDict,
    JsonMap,
    MigrationFinished,
    Outcome,
    PhaseDone,
    PhaseFailed,
    PhaseName,
    PhaseStarted,
    PhaseState,
    PhaseStatus,
    Progress,
    Record,
    RunInterrupted,
    RunStarted,
    ToolImage,
    UndoDone,
    UndoFailed,
    UndoStarted,
    compute_state,
)
from migrate.journal.state_dir import StateDir
from migrate.journal.writer import Journal, PhaseHandle, new_migration_id

__all__ = [
    "JOURNAL_VERSION", "KEPT_IN_CONTAINERD", "OPT_IN_PHASES", "PHASE_ORDER", "CleanedUp",
    "Journal", "JournalState", "JsonDict", "JsonMap",
    "MigrationFinished", "Outcome", "PhaseDone", "PhaseFailed", "PhaseHandle", "PhaseName",
    "PhaseStarted", "PhaseState", "PhaseStatus", "Progress", "Record", "RunInterrupted",
    "RunStarted", "StateDir", "ToolImage", "UndoDone", "UndoFailed", "UndoStarted", "compute_state",
    "new_migration_id", "replay",
]
