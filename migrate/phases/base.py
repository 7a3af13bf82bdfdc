"""What every phase gets and gives.

A phase is a module under `migrate/phases/` with a `PHASE: Phase` object, registered in
`runner.PHASES`. It declares its intent, undo record and result as frozen models
(`records.RecordModel`; `records.NoUndo` when a rollback has nothing to reverse). The
runner writes the phase's intent to the journal BEFORE calling `run()` and the returned
`PhaseOutcome.undo` AFTER it, so `undo()` can always work from the journal record alone,
read back through the phase's `undo_model`. The undo model of a phase also reads its
intent (and its `progress` checkpoints): that is the record `undo()` gets when the phase
stopped half-way. Phases must be idempotent: a phase that was started but not finished is
simply run again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast, get_args

from migrate.archives.manifest import ArchiveManifest, manifest_bytes, manifest_path, read_manifest
from migrate.archives.saved_tar import ExpectedImage
from migrate.engine import Engine
from migrate.errors import StateError
from migrate.journal import JournalState, ToolImage
from migrate.journal.state_dir import StateDir
from migrate.models import Inventory
from migrate.phases.records import PhaseRecords, RecordModel
from migrate.preflight.facts import (
    CONTAINERS_POLICIES,
    DEFAULT_CONTAINERS_POLICY,
    ContainersPolicy,
    HostFacts,
)
from migrate.preflight.report import PlanReport

JSONDict = dict[str, Any]


@dataclass(frozen=True)
class RunOptions:
    host: str
    daemon_config: Path
    state_dir: Path
    restart_command: tuple[str, ...] = ()
    # None: not given; `engine.daemon_wait.resolve_restart_timeout` decides.
    restart_timeout: float | None = None
    stop_timeout: int = 10
    containers: ContainersPolicy = DEFAULT_CONTAINERS_POLICY
    follow_symlinks: bool = False
    snapshotter: str | None = None

    def to_record(self) -> JSONDict:
        return {
            "host": self.host,
            "daemon_config": str(self.daemon_config),
            "state_dir": str(self.state_dir),
            "restart_command": list(self.restart_command),
            "restart_timeout": self.restart_timeout,
            "stop_timeout": self.stop_timeout,
            "containers": self.containers,
            "follow_symlinks": self.follow_symlinks,
            "snapshotter": self.snapshotter,
        }


@dataclass(frozen=True)
class GivenOptions:
    """What a command was given; None where the operator gave nothing. The runner resolves
    it once, under the state dir lock, into the run's `RunOptions` (`Runner.forward`)."""

    host: str
    daemon_config: Path
    state_dir: Path
    follow_symlinks: bool = False
    containers: ContainersPolicy | None = None
    restart_command: tuple[str, ...] | None = None
    restart_timeout: float | None = None
    snapshotter: str | None = None

    def containers_policy(self, state: JournalState) -> ContainersPolicy:
        """One policy per migration: the one given now, else the one journaled by the
        migration in progress (`export`, `stage`), else the default."""
        chosen = self.containers or _journaled_options(state).get("containers")
        return cast(ContainersPolicy, chosen) if chosen in CONTAINERS_POLICIES \
            else DEFAULT_CONTAINERS_POLICY

    def chosen_restart_command(self, state: JournalState) -> tuple[str, ...] | None:
        """The restart command given now, else the journaled one, else None (then
        `host.restart_command.resolve_restart_command` asks the host)."""
        if self.restart_command:
            return self.restart_command
        recorded = _journaled_options(state).get("restart_command")
        return tuple(str(word) for word in recorded) \
            if isinstance(recorded, list) and recorded else None

    def resolve(self, containers: ContainersPolicy,
                restart_command: tuple[str, ...]) -> RunOptions:
        return RunOptions(
            host=self.host, daemon_config=self.daemon_config, state_dir=self.state_dir,
            restart_command=restart_command, restart_timeout=self.restart_timeout,
            containers=containers, follow_symlinks=self.follow_symlinks,
            snapshotter=self.snapshotter)


def _journaled_options(state: JournalState) -> dict[str, Any]:
    """The options the migration in progress was started (or last resumed) with; {} when
    none is in progress."""
    if state.migration_id is None or not state.runs:
        return {}
    return dict(state.runs[-1].options)


@dataclass(frozen=True)
class PreparedPlan:
    """The plan a command took before asking the operator; the snapshot phase reuses it
    while it is fresh, so one run reads the host once (see snapshot.PLAN_REUSE_SECONDS)."""

    facts: HostFacts
    report: PlanReport
    taken_monotonic: float


class Checkpoint(Protocol):
    """Writes a `progress` record to the journal (e.g. one archive done, with checksum)."""

    def __call__(self, data: Mapping[str, Any]) -> None: ...


@dataclass
class PhaseContext:
    options: RunOptions
    connect: Callable[[], Engine]
    checkpoint: Checkpoint
    # Every file a phase keeps goes in here, written through `state_dir.write_file`.
    state_dir: StateDir
    # Progress records this phase wrote in earlier, interrupted attempts (resume).
    previous_progress: tuple[JSONDict, ...] = ()
    # Typed undo records and results of the phases already done in this migration.
    records: PhaseRecords = field(default_factory=lambda: PhaseRecords({}, {}))
    prepared: PreparedPlan | None = None
    # The migration this run belongs to (labels what it creates as its own).
    migration_id: str = ""
    # What earlier migrations of the state dir put into the containerd store.
    earlier_tool_images: tuple[ToolImage, ...] = ()

    @property
    def archives_dir(self) -> Path:
        return self.state_dir.archives_dir

    @property
    def reports_dir(self) -> Path:
        return self.state_dir.reports_dir

    @property
    def inventory_path(self) -> Path:
        return self.state_dir.inventory_path

    def write_manifest(self, manifest: ArchiveManifest) -> None:
        self.state_dir.write_file(manifest_path(self.archives_dir), manifest_bytes(manifest))

    @property
    def containers_policy(self) -> ContainersPolicy:
        """The policy the containers were stopped under. Once quiesce is done it decides, so
        a resumed run (or one without --containers) carries on as the migration started."""
        journaled = self.records.quiesce_undo.policy
        if journaled in get_args(ContainersPolicy):
            return cast(ContainersPolicy, journaled)
        return self.options.containers

    @property
    def containers_wait(self) -> bool:
        """Containers quiesce stopped wait for the recreate phase to run again: what the
        window need not hold (verify's capability check) is done after them instead."""
        return self.containers_policy == "recreate" and bool(self.records.quiesce.stopped)

    def load_inventory(self) -> Inventory:
        inventory = self.state_dir.load_inventory()
        if inventory is None:
            raise StateError(f"the snapshot {self.inventory_path} is missing or unreadable",
                             "roll back with `containerd-migrate rollback`, or start again "
                             "with a fresh --state-dir")
        return inventory


def moved_image_ids(manifest: ArchiveManifest, staged: Iterable[ExpectedImage] = (),
                    ) -> dict[str, str]:
    """Legacy image ID -> its ID after the switch, for every image the migration moved:
    exported (the archive manifest) or staged (proven by the same chain in the containerd
    store). Verify expects these IDs and recreate creates containers from them."""
    ids = manifest.new_ids()
    ids.update({image.legacy_id: image.new_id for image in staged})
    return ids


def moved_image_ids_of(ctx: PhaseContext) -> dict[str, str]:
    return moved_image_ids(read_manifest(ctx.archives_dir), ctx.records.stage.expected)


@dataclass(frozen=True)
class UndoReport:
    """What an undo did and what it could not do. A failure is a failure: the runner
    journals `undo_failed` for the phase, the rollback exits non-zero, and `rollback`
    again retries that phase (pip's `req_uninstall` reports failed restores the same way)."""

    did: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed

    def __add__(self, other: UndoReport) -> UndoReport:
        return UndoReport(self.did + other.did, self.failed + other.failed)

    @classmethod
    def done(cls, *lines: str) -> UndoReport:
        return cls(did=lines)

    @classmethod
    def failure(cls, line: str, *did: str) -> UndoReport:
        return cls(did=did, failed=(line,))


IntentT_co = TypeVar("IntentT_co", bound=RecordModel, covariant=True)
UndoT = TypeVar("UndoT", bound=RecordModel)
ResultT = TypeVar("ResultT", bound=RecordModel)


@dataclass(frozen=True)
class PhaseOutcome(Generic[UndoT, ResultT]):
    undo: UndoT
    result: ResultT


@dataclass(frozen=True)
class UndoContext:
    options: RunOptions
    connect: Callable[[], Engine]
    # The migration's state dir, as `PhaseContext.state_dir`: its snapshot
    # (`state_dir.load_inventory()`), archives and reports.
    state_dir: StateDir
    force: bool = False
    purge_imported: bool = False
    # Imports of earlier rolled-back migrations of this state dir, purged with this one's.
    earlier_imports: tuple[JSONDict, ...] = ()
    # Tells the operator what is about to happen (e.g. which restart command runs).
    say: Callable[[str], None] = print
    # Journals a `progress` record for the phase being undone (e.g. the pid of the restart
    # command it started, which a rollback run after a kill must wait for).
    checkpoint: Callable[[str, Mapping[str, Any]], None] = lambda _phase, _data: None


class Phase(Protocol[IntentT_co, UndoT, ResultT]):
    name: str
    # Reads the journaled undo record (or, for a phase stopped half-way, its intent).
    undo_model: type[UndoT]
    # Reads the journaled result (`status` summarises it through the model).
    result_model: type[ResultT]

    def intent(self, ctx: PhaseContext) -> IntentT_co:
        """What the phase is about to do, written to the journal before `run`."""
        ...

    def run(self, ctx: PhaseContext) -> PhaseOutcome[UndoT, ResultT]: ...

    def undo(self, ctx: UndoContext, record: UndoT) -> UndoReport:
        """Reverse the phase from its journal record; says what it did and what failed."""
        ...

    def refuse_undo(self, ctx: UndoContext, record: UndoT) -> None:
        """Raise if this phase's undo is going to be refused; changes nothing.

        The runner asks every phase to undo before it undoes any, so a refused rollback
        leaves the host as it was. Phases subclass `Phase` to inherit this default.
        """
        return None
