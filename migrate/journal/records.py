"""Record models of the rollback journal and the pure fold of records into state.

Every line of `<state-dir>/journal.jsonl` is one `Record`; `compute_state` turns the
records of the most recent migration into a `JournalState`. Parsing and replaying the
file live in `reader`, writing it in `writer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, TypeAlias, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from migrate import errors

JOURNAL_VERSION: Final = 1
# quiesce (stop running containers) comes before switch so that undo, which runs in
# reverse, restarts the containers only after the switch undo has brought legacy back.
# commit (writable layers of stopped containers -> images) needs the legacy store, recreate
# the verified containerd store; their undos run in the same store for the same reason.
# stage comes before export, which skips what it staged.
PhaseName: TypeAlias = Literal[
    "snapshot", "stage", "export", "quiesce", "commit", "switch", "restart", "import", "verify",
    "recreate",
]
PHASE_ORDER: Final[tuple[PhaseName, ...]] = get_args(PhaseName)
# Phases a migration runs only once asked for (`containerd-migrate stage`); a pending one
# is not "next", it is simply not part of this migration.
OPT_IN_PHASES: Final[tuple[PhaseName, ...]] = ("stage",)
# The key of the progress record in which a rollback journals the containers it kept in the
# containerd store (someone created them there after the switch).
KEPT_IN_CONTAINERD: Final = "kept_in_containerd"
PhaseStatus: TypeAlias = Literal["pending", "started", "done", "failed", "interrupted", "undone"]
Outcome: TypeAlias = Literal["completed", "rolled_back"]
JsonDict: TypeAlias = dict[str, JsonValue]
# Callers may pass e.g. dict[str, int]; a dict parameter would reject it (invariance).
JsonMap: TypeAlias = Mapping[str, JsonValue]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class _Record(_Frozen):
    journal_version: int = Field(default=JOURNAL_VERSION, ge=1)
    seq: int = Field(default=0, ge=0)
    ts: AwareDatetime = Field(default_factory=utc_now)
    migration_id: str = Field(min_length=1)


class RunStarted(_Record):
    event: Literal["run_started"] = "run_started"
    run_id: str
    tool_version: str
    argv: tuple[str, ...] = ()
    options: JsonDict = Field(default_factory=dict)


class PhaseStarted(_Record):
    event: Literal["phase_started"] = "phase_started"
    phase: PhaseName
    intent: JsonDict = Field(default_factory=dict)


class PhaseDone(_Record):
    event: Literal["phase_done"] = "phase_done"
    phase: PhaseName
    undo: JsonDict = Field(default_factory=dict)
    result: JsonDict = Field(default_factory=dict)


class PhaseFailed(_Record):
    event: Literal["phase_failed"] = "phase_failed"
    phase: PhaseName
    error: str
    hint: str = ""
    exit_code: int


class RunInterrupted(_Record):
    event: Literal["interrupted"] = "interrupted"
    # None when the interrupt landed between phases, or after the phase recorded its result.
    phase: PhaseName | None = None
    signal: str | None = None


class UndoStarted(_Record):
    event: Literal["undo_started"] = "undo_started"
    phase: PhaseName


class UndoDone(_Record):
    event: Literal["undo_done"] = "undo_done"
    phase: PhaseName


class UndoFailed(_Record):
    event: Literal["undo_failed"] = "undo_failed"
    phase: PhaseName
    error: str
    exit_code: int


class MigrationFinished(_Record):
    event: Literal["migration_finished"] = "migration_finished"
    outcome: Outcome


class CleanedUp(_Record):
    """`cleanup` finished for the migration (archives deleted, the tool's images removed
    from the containerd store after a rollback); `pruned` when the legacy data went too."""

    event: Literal["cleaned_up"] = "cleaned_up"
    pruned: bool = False
    # Image names of the tool's that the operator asked to keep in the containerd store.
    kept_images: bool = False


class Progress(_Record):
    event: Literal["progress"] = "progress"
    phase: PhaseName
    data: JsonDict = Field(default_factory=dict)


Record: TypeAlias = Annotated[
    RunStarted
    | PhaseStarted
    | PhaseDone
    | PhaseFailed
    | RunInterrupted
    | UndoStarted
    | UndoDone
    | UndoFailed
    | MigrationFinished
    | CleanedUp
    | Progress,
    Field(discriminator="event"),
]
# Built at first use (defer_build): a command that reads no journal does not pay for it.
RECORD_ADAPTER: TypeAdapter[Record] = TypeAdapter(Record, config=ConfigDict(defer_build=True))


class ToolImage(_Frozen):
    """An image name this tool put into the containerd store, as some migration of the
    journal recorded it: staged (`name` as containerd has it) or imported (`name` as
    `docker save` was given it; `dangling` when it had none)."""

    name: str
    # The manifest digest the name pointed at; only a name still pointing there is ours.
    digest: str
    staged: bool
    dangling: bool = False
    # The migration that put it there (the last one, when several did).
    migration_id: str = ""


class PhaseState(_Frozen):
    name: PhaseName
    status: PhaseStatus = "pending"
    attempts: int = 0
    # seq of the latest phase_started: undo runs in reverse order of this.
    started_seq: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    intent: JsonDict = Field(default_factory=dict)
    undo: JsonDict | None = None
    result: JsonDict | None = None
    # Kept across attempts so a resumed phase can skip work already checkpointed.
    progress: tuple[JsonDict, ...] = ()
    error: str | None = None
    exit_code: int | None = None
    undo_error: str | None = None

    @property
    def complete(self) -> bool:
        """False for a phase that may have stopped half-way: undo has only its intent."""
        return self.status == "done"


class JournalState(_Frozen):
    """What the records of the most recent migration say; a pure function of the file."""

    record_count: int = 0
    last_seq: int = 0
    torn_tail: bool = False
    # The migration still in progress (no migration_finished), else None.
    migration_id: str | None = None
    last_migration_id: str | None = None
    runs: tuple[RunStarted, ...] = ()
    phases: tuple[PhaseState, ...] = tuple(PhaseState(name=name) for name in PHASE_ORDER)
    done_phases: tuple[PhaseName, ...] = ()
    finished: bool = False
    outcome: Outcome | None = None
    # `cleanup` ran after the migration finished (journals of 0.1.0 have no such record).
    cleaned: bool = False
    pruned: bool = False
    # Images that earlier, rolled-back migrations of this journal imported into the
    # containerd store (`rollback --purge-imported` removes them too).
    earlier_imports: tuple[JsonDict, ...] = ()
    # Every image name any migration of this journal staged or imported (`cleanup` after a
    # rollback removes those still pointing where they did).
    tool_images: tuple[ToolImage, ...] = ()
    # Containers someone created in the containerd store after a switch that a rollback
    # kept there (hidden until the next switch), by name, across migrations.
    kept_in_containerd: tuple[str, ...] = ()

    @property
    def resumed(self) -> bool:
        return len(self.runs) > 1

    def phase(self, name: PhaseName) -> PhaseState:
        return next(phase for phase in self.phases if phase.name == name)

    def part_of_migration(self, name: PhaseName) -> bool:
        """An opt-in phase (stage) never started is not part of this migration."""
        return not (name in OPT_IN_PHASES and self.phase(name).status == "pending")

    @property
    def remaining(self) -> tuple[PhaseName, ...]:
        """Phases of the migration in progress not done yet."""
        if self.migration_id is None:
            return ()
        return tuple(p.name for p in self.phases
                     if p.status != "done" and self.part_of_migration(p.name))

    @property
    def half_rolled_back(self) -> bool:
        """A rollback of the migration in progress began (or failed) and did not finish:
        nothing may run forward until it does."""
        return self.migration_id is not None and any(
            p.status == "undone" or p.undo_error for p in self.phases)

    def for_next_run(self) -> JournalState:
        """The state a forward run plans from: a finished migration is history, so the next
        run starts a migration of its own, with nothing staged or exported."""
        if not self.finished:
            return self
        return JournalState(record_count=self.record_count, last_seq=self.last_seq,
                            earlier_imports=self.earlier_imports,
                            tool_images=self.tool_images,
                            kept_in_containerd=self.kept_in_containerd)

    def phases_to_undo(self) -> tuple[PhaseState, ...]:
        """Phases that may have changed the host, most recent first; see `complete`."""
        touched = [p for p in self.phases if p.status not in ("pending", "undone")]
        return tuple(sorted(touched, key=lambda p: p.started_seq, reverse=True))


def _apply(phase: PhaseState, record: Record) -> PhaseState:
    changes: dict[str, object]
    match record:
        case PhaseStarted():
            changes = {
                "status": "started", "attempts": phase.attempts + 1,
                "started_seq": record.seq, "started_at": record.ts, "finished_at": None,
                "intent": record.intent, "undo": None, "result": None,
                "error": None, "exit_code": None, "undo_error": None,
            }
        case PhaseDone():
            changes = {"status": "done", "finished_at": record.ts,
                       "undo": record.undo, "result": record.result}
        case PhaseFailed():
            changes = {"status": "failed", "finished_at": record.ts,
                       "error": record.error, "exit_code": record.exit_code}
        case RunInterrupted():
            changes = {"status": "interrupted", "finished_at": record.ts,
                       "exit_code": int(errors.ExitCode.INTERRUPTED)}
        case UndoStarted():
            changes = {"undo_error": None}
        case UndoDone():
            # finished_at keeps the forward timing for `status`.
            changes = {"status": "undone"}
        case UndoFailed():
            changes = {"undo_error": record.error}
        case _:
            changes = {}
    return phase.model_copy(update=changes)


def compute_state(records: Sequence[Record], torn_tail: bool = False) -> JournalState:
    """Fold the records of the most recent migration into a JournalState."""
    last_id = next((r.migration_id for r in reversed(records) if isinstance(r, RunStarted)), None)
    phases = {name: PhaseState(name=name) for name in PHASE_ORDER}
    done_seq: dict[PhaseName, int] = {}
    # Gathered in lists, not tuples rebuilt per record: exports checkpoint every image.
    progress: dict[PhaseName, list[JsonDict]] = {name: [] for name in PHASE_ORDER}
    runs: list[RunStarted] = []
    outcome: Outcome | None = None
    cleaned: CleanedUp | None = None
    earlier = _earlier_imports(records, last_id)
    for record in records:
        if record.migration_id != last_id:
            continue
        if isinstance(record, RunStarted):
            runs.append(record)
        elif isinstance(record, MigrationFinished):
            outcome = record.outcome
        elif isinstance(record, CleanedUp):
            cleaned = record
        elif isinstance(record, Progress):
            progress[record.phase].append(record.data)
        elif record.phase is not None:
            if isinstance(record, UndoStarted):
                # A completed migration being rolled back is in progress again until the
                # rollback finishes (one whose undo failed is half rolled back).
                outcome = None
            phases[record.phase] = _apply(phases[record.phase], record)
            if isinstance(record, PhaseDone):
                done_seq[record.phase] = record.seq
            elif isinstance(record, UndoDone):
                # The checkpoints describe artefacts that undo just removed.
                progress[record.phase].clear()
    for name, items in progress.items():
        phases[name] = phases[name].model_copy(update={"progress": tuple(items)})
    done = sorted((n for n, p in phases.items() if p.status == "done"), key=done_seq.__getitem__)
    return JournalState(
        record_count=len(records),
        last_seq=records[-1].seq if records else 0,
        torn_tail=torn_tail,
        migration_id=last_id if outcome is None else None,
        last_migration_id=last_id,
        runs=tuple(runs),
        phases=tuple(phases.values()),
        done_phases=tuple(done),
        finished=outcome is not None,
        outcome=outcome,
        cleaned=cleaned is not None,
        pruned=cleaned is not None and cleaned.pruned,
        earlier_imports=earlier,
        tool_images=_tool_images(records),
        kept_in_containerd=tuple(sorted({
            str(name) for r in records if isinstance(r, Progress)
            for name in _names(r.data.get(KEPT_IN_CONTAINERD))})),
    )


def _earlier_imports(records: Sequence[Record], current: str | None) -> tuple[JsonDict, ...]:
    """What the import phase of every other rolled-back migration said it imported."""
    rolled_back = {r.migration_id for r in records
                   if isinstance(r, MigrationFinished) and r.outcome == "rolled_back"}
    found: dict[str, JsonDict] = {}
    for record in records:
        if record.migration_id == current or record.migration_id not in rolled_back:
            continue
        listed: JsonValue = None
        if isinstance(record, Progress) and record.phase == "import":
            listed = record.data.get("imported")
        elif isinstance(record, PhaseDone) and record.phase == "import":
            listed = record.undo.get("imported")
        for image in listed if isinstance(listed, list) else ():
            if isinstance(image, dict) and isinstance(image.get("id"), str):
                found.setdefault(str(image["id"]), image)
    return tuple(found.values())


def _listed(record: Record, key: str) -> JsonValue:
    """`key` of a stage/import record's intent, checkpoint or undo record."""
    if isinstance(record, PhaseStarted):
        return record.intent.get(key)
    if isinstance(record, Progress):
        return record.data.get(key)
    if isinstance(record, PhaseDone):
        return record.undo.get(key)
    return None


def _tool_images(records: Sequence[Record]) -> tuple[ToolImage, ...]:
    """Every name staged or imported by any migration of the journal (pure)."""
    before: dict[str, set[str]] = {}
    found: dict[tuple[str, str], ToolImage] = {}
    for record in records:
        phase = getattr(record, "phase", None)
        if phase == "stage":
            listed_before = _listed(record, "before")
            if isinstance(listed_before, list):
                before.setdefault(record.migration_id, set()).update(map(str, listed_before))
            names = _listed(record, "names")
            for name, digest in (names.items() if isinstance(names, dict) else ()):
                if name not in before.get(record.migration_id, ()):
                    found[(name, str(digest))] = ToolImage(
                        name=name, digest=str(digest), staged=True,
                        migration_id=record.migration_id)
        elif phase == "import":
            images = _listed(record, "imported")
            for image in images if isinstance(images, list) else ():
                if not isinstance(image, dict) or not isinstance(image.get("id"), str):
                    continue
                digest = str(image["id"])
                refs = image.get("refs")
                for ref in refs if isinstance(refs, list) and refs else ():
                    found[(str(ref), digest)] = ToolImage(
                        name=str(ref), digest=digest, staged=False,
                        migration_id=record.migration_id)
                if not refs:
                    found[("", digest)] = ToolImage(name="", digest=digest, staged=False,
                                                    dangling=True,
                                                    migration_id=record.migration_id)
    return tuple(found.values())


def _names(value: JsonValue) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []
