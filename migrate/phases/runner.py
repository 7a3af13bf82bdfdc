"""The lifecycle of a migration: runs phases forward and backward, journaling every step.

Which phases to run is a pure function of the journal state (`steps_to_run`), like an
alembic revision plan. Executing a step is: intent to the journal, side effect, undo
record to the journal. Rollback walks the journal's phases in reverse.

The runner owns everything around that, so a command only says what it wants: the state
dir lock, binding the state dir to this host, starting and finishing the journal run, the
automatic rollback when the daemon does not come back right, and the check that a
rollback really restored the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError

from migrate import __version__
from migrate.engine import Engine
from migrate.engine.daemon_wait import resolve_restart_timeout
from migrate.errors import (
    EngineUnreachable,
    ExitCode,
    MigrateError,
    RolledBack,
)
from migrate.host.restart_command import resolve_restart_command
from migrate.journal import (
    KEPT_IN_CONTAINERD,
    OPT_IN_PHASES,
    PHASE_ORDER,
    Journal,
    JournalState,
    JsonDict,
    PhaseName,
    PhaseState,
)
from migrate.journal.state_dir import StateDir, host_lock
from migrate.models import EngineInfo
from migrate.phases import (
    commit,
    export,
    import_,
    quiesce,
    recreate,
    restart,
    snapshot,
    stage,
    switch,
    verify,
)
from migrate.phases.base import (
    GivenOptions,
    Phase,
    PhaseContext,
    PreparedPlan,
    RunOptions,
    UndoContext,
)
from migrate.phases.daemon_restart import wait_for_journaled_restarts
from migrate.phases.lifecycle import (
    Command,
    CommandLine,
    HostNow,
    containers_policy_of,
    decide,
    default_command_line,
)
from migrate.phases.platform_check import PROBE_LABEL
from migrate.phases.records import RecordModel, read_record, records_of
from migrate.phases.recreate import RECREATED_LABEL
from migrate.phases.rollback_check import check_restored, created_since_switch
from migrate.phases.verify import VERIFY_LABEL
from migrate.phases.volume_guard import GUARD_LABEL
from migrate.preflight.facts import CONTAINERS_POLICIES, DEFAULT_CONTAINERS_POLICY, ContainersPolicy
from migrate.support import failpoints
from migrate.support.logconfig import get_logger

log = get_logger(__name__)

# Each phase with its own record models: the runner only journals them and reads them back.
PHASES: Mapping[PhaseName, Phase[RecordModel, Any, Any]] = {
    "snapshot": snapshot.PHASE,
    "stage": stage.PHASE,
    "export": export.PHASE,
    "quiesce": quiesce.PHASE,
    "commit": commit.PHASE,
    "switch": switch.PHASE,
    "restart": restart.PHASE,
    "import": import_.PHASE,
    "verify": verify.PHASE,
    "recreate": recreate.PHASE,
}
PREPARE_PHASES: tuple[PhaseName, ...] = ("snapshot", "export")
STAGE_PHASES: tuple[PhaseName, ...] = ("snapshot", "stage")
# OPT_IN_PHASES run only when asked for (`containerd-migrate stage`), and from then on by
# every run of the same migration: `run` alone exports and imports, it needs no ctr.
RUN_PHASES: tuple[PhaseName, ...] = tuple(p for p in PHASE_ORDER if p not in OPT_IN_PHASES)


def result_summary(name: PhaseName, result: Mapping[str, Any] | None) -> str:
    """A journaled phase result for people, read through the phase's result model; ""
    when there is none or it does not read (a journal of a later version)."""
    if not result:
        return ""
    model: type[RecordModel] = PHASES[name].result_model
    try:
        return model.model_validate(result).summary()
    except ValidationError:
        return ""
# Re-run by every run until containers are stopped, to catch images changed since.
_RERUN_PHASES: tuple[PhaseName, ...] = (*PREPARE_PHASES, *OPT_IN_PHASES)
# Until containers are stopped nothing on the host has changed, so a later run takes a
# fresh inventory and exports only what is new; after that the snapshot is the truth.
_FROZEN_FROM: PhaseName = "quiesce"
# Before this phase the daemon must answer (the state dir is bound to it); once the switch
# has started it may be down, and only the machine can be checked until it answers again.
_BIND_BEFORE: PhaseName = "switch"
RESUME_HINT = ("once the daemon answers, `containerd-migrate run` resumes the migration; "
               "`containerd-migrate rollback` undoes it")


def steps_to_run(state: JournalState, wanted: tuple[PhaseName, ...] = RUN_PHASES,
                 ) -> tuple[PhaseName, ...]:
    """The phases a run executes now, in order (pure). A finished migration is history: the
    next run plans a migration of its own (`JournalState.for_next_run`)."""
    refuse_if_rolling_back(state)
    state = state.for_next_run()
    frozen = state.phase(_FROZEN_FROM).status != "pending"
    steps: list[PhaseName] = []
    for name in PHASE_ORDER:
        opted_in = name in OPT_IN_PHASES and state.part_of_migration(name)
        if name not in wanted and not opted_in:
            continue
        rerun = name in _RERUN_PHASES and not frozen
        if rerun or state.phase(name).status != "done":
            steps.append(name)
    return tuple(steps)


def refuse_if_rolling_back(state: JournalState) -> None:
    if state.half_rolled_back:
        raise decide(state, "run").refusal(default_command_line)


def _json(value: Mapping[str, Any]) -> JsonDict:
    return cast(JsonDict, dict(value))


def _undo_record(phase_state: PhaseState) -> dict[str, Any]:
    # A phase that stopped half-way has only its intent, which is written to be
    # enough for undo (e.g. the original daemon.json bytes); its undo model reads it. The
    # checkpoints go along under `progress` (the stage undo removes the names they list).
    record = dict(phase_state.undo if phase_state.complete and phase_state.undo
                  is not None else phase_state.intent)
    if phase_state.progress:
        record.setdefault("progress", [dict(p) for p in phase_state.progress])
    return record


@dataclass(frozen=True)
class ForwardOutcome:
    """What a forward run did. `migration_id` is None when nothing was started."""

    migration_id: str | None
    steps: tuple[PhaseName, ...]
    already_completed: bool = False
    state: JournalState | None = None
    # The options the run resolved under the lock; None when nothing was started.
    options: RunOptions | None = None


@dataclass(frozen=True)
class RollbackOutcome:
    migration_id: str | None
    # Why nothing was done, when nothing was ("no migration to roll back", ...).
    nothing_to_do: str = ""
    lines: tuple[str, ...] = ()
    ok: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    # Undos that failed (journaled `undo_failed`; `rollback` again retries them).
    failed: tuple[str, ...] = ()


# Called inside the lock, after the steps and the run's options are known and before
# anything is journaled: the command's chance to plan, to ask the operator, or to refuse. A
# plan it returns is handed to the snapshot phase, so the host is not read twice.
ConfirmForward = Callable[[tuple[PhaseName, ...], JournalState, RunOptions],
                          PreparedPlan | None]
ConfirmRollback = Callable[[JournalState], None]


class Runner:
    """Runs the migration of one host, recorded in one state dir."""

    def __init__(self, state_dir: StateDir, given: GivenOptions,
                 connect: Callable[[], Engine], say: Callable[[str], None] = print,
                 command_line: CommandLine = default_command_line):
        self.state_dir = state_dir
        self.given = given
        # Resolved from `given` and the journal once, under the lock (`forward`, `rollback`).
        self._options: RunOptions | None = None
        self.connect = connect
        self.say = say
        # Renders a next step as a command for this host and state dir (lifecycle hints).
        self.command_line = command_line
        # What the last forward run or rollback journaled and undid, kept as values for the
        # commands' JSON documents when the run fails (a raised error carries only text).
        self.migration_id: str | None = None
        self.automatic_rollback: RollbackOutcome | None = None

    @property
    def options(self) -> RunOptions:
        if self._options is None:
            raise RuntimeError("the run's options are resolved under the lock, by forward or "
                               "rollback")
        return self._options

    def _forward_options(self, state: JournalState, command: Command) -> RunOptions:
        """What the operator gave, else what the migration in progress journaled, else the
        defaults; only `run` restarts the daemon, so only it asks the host for the restart
        command when none is given nor journaled (and fails when there is none)."""
        chosen = self.given.chosen_restart_command(state)
        restart = resolve_restart_command(chosen) if command == "run" else chosen or ()
        return self.given.resolve(self.given.containers_policy(state), restart)

    def _rollback_options(self, state: JournalState) -> RunOptions:
        """Each undo uses the restart command and timeout its journal record names unless
        given now; the rollback's run record keeps the migration's containers policy (the
        next-step hint after it, "run --containers <policy>", reads it from there)."""
        policy = containers_policy_of(state)
        return self.given.resolve(
            cast(ContainersPolicy, policy) if policy in CONTAINERS_POLICIES
            else DEFAULT_CONTAINERS_POLICY, self.given.restart_command or ())

    # --- forward ----------------------------------------------------------------------

    def forward(self, wanted: tuple[PhaseName, ...], confirm: ConfirmForward,
                argv: tuple[str, ...], *, auto_rollback: bool = True,
                command: Command = "run") -> ForwardOutcome:
        """Run (or resume) the `wanted` phases that are not done yet.

        What `command` may do in the state dir's state is the lifecycle's decision
        (`lifecycle.decide`), taken under the lock. A run that reaches the end of
        PHASE_ORDER finishes the migration as completed. Any failure once containers are
        stopped (quiesce started) rolls the host back at once, unless `auto_rollback` is
        off, and raises RolledBack: a failed window never leaves the services down.
        """
        completes = wanted[-1:] == PHASE_ORDER[-1:]
        with self.state_dir.lock():
            journal = self.state_dir.journal()
            state = journal.state()
            decision = decide(state, command)
            if decision.action == "refuse":
                raise decision.refusal(self.command_line)
            if decision.action == "nothing":
                return ForwardOutcome(state.last_migration_id, (), already_completed=True,
                                      state=state)
            steps = steps_to_run(state, wanted)
            options = self._options = self._forward_options(state, command)
            with self._this_host(state):
                # A new migration refused by its plan leaves nothing behind: the command
                # raises here, before the journal knows of it.
                prepared = confirm(steps, state, options)
                record = journal.start_run(__version__, argv, _json(self.options.to_record()))
                self.migration_id = record.migration_id
                log.info("run started", migration=record.migration_id, steps=list(steps))
                try:
                    for name in steps:
                        self._run_phase(journal, name, prepared)
                except MigrateError as failure:
                    if not (auto_rollback and self._containers_down(journal)):
                        raise self._resumable(failure) from failure
                    raise self._auto_rollback(journal, failure) from failure
                if completes:
                    journal.finish("completed")
                return ForwardOutcome(record.migration_id, steps, state=journal.state(),
                                      options=options)

    @staticmethod
    def _containers_down(journal: Journal) -> bool:
        """Once quiesce has started, containers may be down: a failure from there on must
        not leave them so (a restart that failed, a verification, an import, a recreate)."""
        return journal.state().phase(_FROZEN_FROM).status != "pending"

    @staticmethod
    def _resumable(failure: MigrateError) -> MigrateError:
        if isinstance(failure, EngineUnreachable):
            return EngineUnreachable(failure.message, f"{failure.hint}; {RESUME_HINT}")
        return failure

    @contextmanager
    def _this_host(self, state: JournalState) -> Iterator[None]:
        """Refuse a state dir that belongs to another machine, data-root or daemon before
        anything changes, then hold the host-wide lock on that daemon."""
        try:
            with self.connect() as engine:
                info: EngineInfo | None = engine.info()
        except EngineUnreachable:
            if state.phase(_BIND_BEFORE).status == "pending":
                raise  # nothing changed yet: a run needs the daemon from the start
            info = None  # down after the switch: resume or rollback restarts it
        identity = self.state_dir.check_host(info.data_root if info else "",
                                             info.daemon_id if info else "")
        with host_lock(identity.data_root or "unknown"):
            yield

    def _context(self, journal: Journal, name: PhaseName,
                 prepared: PreparedPlan | None = None) -> PhaseContext:
        state = journal.state()

        def checkpoint(data: Mapping[str, Any]) -> None:
            journal.progress(name, _json(data))

        return PhaseContext(
            options=self.options,
            connect=self.connect,
            checkpoint=checkpoint,
            state_dir=self.state_dir,
            previous_progress=tuple(dict(p) for p in state.phase(name).progress),
            records=records_of(state),
            migration_id=state.migration_id or "",
            earlier_tool_images=tuple(i for i in state.tool_images
                                      if i.migration_id != state.migration_id),
            prepared=prepared,
        )

    def _run_phase(self, journal: Journal, name: PhaseName,
                   prepared: PreparedPlan | None = None) -> None:
        phase = PHASES[name]
        ctx = self._context(journal, name, prepared)
        log.info("phase started", phase=name)
        failpoints.hit(f"before:{name}")
        with journal.phase(name, _json(phase.intent(ctx).to_json())) as handle:
            outcome = phase.run(ctx)
            failpoints.hit(f"done-unrecorded:{name}")
            result = outcome.result.to_json()
            handle.done(undo=_json(outcome.undo.to_json()), result=_json(result))
        failpoints.hit(f"after:{name}")
        log.info("phase done", phase=name, **{k: v for k, v in result.items()
                                              if isinstance(v, int | float | str)})

    def _auto_rollback(self, journal: Journal, failure: MigrateError) -> MigrateError:
        self.say(f"{failure.message}\nrolling back automatically ...")
        state_dir = self.state_dir
        try:
            lines, failed = self._undo_all(journal, force=False, purge_imported=False)
            ok, problems = self._check_restored()
        except MigrateError as undo_error:
            return MigrateError(
                f"{failure.message}; the automatic rollback failed too: {undo_error.message}",
                f"{undo_error.hint}; then finish it with "
                f"`{self.command_line(('rollback', '--yes'))}` (journal: "
                f"{state_dir.journal_path})", exit_code=undo_error.exit_code)
        self.automatic_rollback = RollbackOutcome(
            self.migration_id, lines=tuple(lines), ok=tuple(ok), problems=tuple(problems),
            failed=tuple(failed))
        problems = [*failed, *problems]
        self.say("\n".join(f"  {line}" for line in [*lines, *ok, *problems]))
        if problems:
            return RolledBack(
                f"{failure.message}; the automatic rollback finished but found problems: "
                f"{'; '.join(problems)}",
                f"inspect the host; the journal is {state_dir.journal_path}",
                exit_code=ExitCode.ERROR,
            )
        return RolledBack(
            f"{failure.message}. The migration was rolled back automatically: the host is "
            "back on the legacy image store with every image and container",
            f"logs: the daemon log (journalctl -u docker); journal: {state_dir.journal_path}; "
            f"reports: {state_dir.reports_dir}. Fix the cause, then run again.",
        )

    # --- backward ---------------------------------------------------------------------

    def rollback(self, confirm: ConfirmRollback, argv: tuple[str, ...], *, force: bool = False,
                 purge_imported: bool = False) -> RollbackOutcome:
        """Undo the current (or last completed) migration, then check the host is restored.

        An already rolled-back migration has nothing to undo (`cleanup` frees what it left in
        the containerd store; the command routes `--purge-imported` there)."""
        with self.state_dir.lock():
            journal = self.state_dir.journal()
            state = journal.state()
            migration = state.last_migration_id
            self.migration_id = migration
            legacy_pruned = self.state_dir.legacy_pruned_path.exists()
            decision = decide(state, "rollback", HostNow(legacy_pruned=legacy_pruned))
            if decision.action == "refuse":
                raise decision.refusal(self.command_line)
            if decision.action == "nothing" or state.outcome == "rolled_back":
                return RollbackOutcome(migration, nothing_to_do=decision.reason or
                                       f"migration {migration} is already rolled back")
            self._options = self._rollback_options(state)
            with self._this_host(state):
                confirm(state)
                journal.start_run(__version__, argv, _json(self.options.to_record()),
                                  migration_id=migration)
                lines, failed = self._undo_all(journal, force=force,
                                               purge_imported=purge_imported)
                ok, problems = self._check_restored()
        return RollbackOutcome(migration, lines=tuple(lines), ok=tuple(ok),
                               problems=tuple(problems), failed=tuple(failed))

    def _undo_all(self, journal: Journal, *, force: bool, purge_imported: bool,
                  ) -> tuple[list[str], list[str]]:
        """Undo every phase that may have touched the host, most recent first; returns what
        was done and what failed. An undo that fails is journaled as failed and the others
        go on (bringing the legacy daemon back matters most); the migration is finished as
        rolled back only when every undo succeeded, so `rollback` again retries the rest."""
        state = journal.state()

        def checkpoint(phase: str, data: Mapping[str, Any]) -> None:
            journal.progress(cast(PhaseName, phase), _json(data))

        ctx = UndoContext(options=self.options, connect=self.connect,
                          state_dir=self.state_dir, force=force,
                          purge_imported=purge_imported, say=self.say,
                          earlier_imports=tuple(dict(i) for i in state.earlier_imports),
                          checkpoint=checkpoint)
        to_undo = state.phases_to_undo()
        # Every record read (a damaged one refuses) before any undo.
        records = {p.name: read_record(PHASES[p.name].undo_model, _undo_record(p),
                                       f"{p.name} undo") for p in to_undo}
        # Every refusal before any undo: a refused rollback must leave the host as it was.
        for phase_state in to_undo:
            PHASES[phase_state.name].refuse_undo(ctx, records[phase_state.name])
        # A restart command a killed run (or rollback) left behind must end before the undo
        # restarts: the switch undo journals its own.
        wait_for_journaled_restarts(
            (*state.phase("restart").progress, *state.phase("switch").progress),
            resolve_restart_timeout(self.options.restart_timeout))
        lines = self._created_since_switch(journal, to_undo)
        failed: list[str] = []
        for phase_state in to_undo:
            name = phase_state.name
            log.info("undo started", phase=name, complete=phase_state.complete)
            with journal.undo(name) as undo:
                report = PHASES[name].undo(ctx, records[name])
                lines.extend(report.did)
                if not report.ok:
                    undo.failed("; ".join(report.failed))
                    failed.extend(report.failed)
        if not failed:
            journal.finish("rolled_back")
        return lines, failed

    def _created_since_switch(self, journal: Journal, to_undo: tuple[PhaseState, ...],
                              ) -> list[str]:
        """Containers someone made in the containerd store stay there (the switch back hides
        them, never deletes them); say which, before they disappear from view, and journal
        their names: the next migration's plan sees them collide with recreated ones."""
        if not any(p.name == "restart" for p in to_undo):
            return []
        try:
            with self.connect() as engine:
                found = created_since_switch(engine, (RECREATED_LABEL, GUARD_LABEL,
                                                      VERIFY_LABEL, PROBE_LABEL))
        except MigrateError as error:
            return [f"could not list the containers of the containerd store: {error.message}"]
        if not found:
            return []
        journal.progress("recreate", {KEPT_IN_CONTAINERD: [c.name for c in found]})
        return ["kept in the containerd store (created there after the switch; hidden on the "
                "legacy store, back at the next switch): "
                + ", ".join(f"{c.name} ({c.id[:12]}, {c.state})" for c in found)]

    def _check_restored(self) -> tuple[list[str], list[str]]:
        with self.connect() as engine:
            return check_restored(engine, self.state_dir.load_inventory())
