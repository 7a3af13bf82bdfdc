"""Runs phases forward and backward, journaling every step.

Which phases to run is a pure function of the journal state (`steps_to_run`), like an
alembic revision plan; executing a step is: intent to the journal, side effect, undo
record to the journal. Rollback walks the journal's phases in reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from migrate import __version__
from migrate.engine.client import Engine
from migrate.errors import MigrateError, StateError
from migrate.journal import PHASE_ORDER, Journal, JournalState, JsonDict, PhaseName, PhaseState
from migrate.journal.state_dir import StateDir
from migrate.phases import export, import_, quiesce, restart, snapshot, switch, verify
from migrate.phases.base import Phase, PhaseContext, RunOptions, UndoContext
from migrate.support import failpoints
from migrate.support.logconfig import get_logger

log = get_logger(__name__)

PHASES: Mapping[PhaseName, Phase] = {
    "snapshot": snapshot.PHASE,
    "export": export.PHASE,
    "quiesce": quiesce.PHASE,
    "switch": switch.PHASE,
    "restart": restart.PHASE,
    "import": import_.PHASE,
    "verify": verify.PHASE,
}
PREPARE_PHASES: tuple[PhaseName, ...] = ("snapshot", "export")
# Until containers are stopped nothing on the host has changed, so a later run takes a
# fresh inventory and exports only what is new; after that the snapshot is the truth.
_FROZEN_FROM: PhaseName = "quiesce"


def steps_to_run(state: JournalState, wanted: tuple[PhaseName, ...] = PHASE_ORDER,
                 ) -> tuple[PhaseName, ...]:
    """The phases a run executes now, in order (pure)."""
    refuse_if_rolling_back(state)
    frozen = state.phase(_FROZEN_FROM).status != "pending"
    steps: list[PhaseName] = []
    for name in PHASE_ORDER:
        if name not in wanted:
            continue
        rerun = name in PREPARE_PHASES and not frozen
        if rerun or state.phase(name).status != "done":
            steps.append(name)
    return tuple(steps)


def refuse_if_rolling_back(state: JournalState) -> None:
    if state.migration_id is None:
        return
    if any(p.status == "undone" or p.undo_error for p in state.phases):
        raise StateError(
            f"migration {state.migration_id} is half rolled back",
            "finish the rollback first: `containerd-migrate rollback`",
        )


def _json(value: Mapping[str, Any]) -> JsonDict:
    return cast(JsonDict, dict(value))


class Runner:
    def __init__(self, state_dir: StateDir, journal: Journal, options: RunOptions,
                 connect: Callable[[], Engine]):
        self.state_dir = state_dir
        self.journal = journal
        self.options = options
        self.connect = connect

    def start(self, argv: tuple[str, ...]) -> str:
        record = self.journal.start_run(__version__, argv, _json(self.options.to_record()))
        return record.migration_id

    def context(self, name: PhaseName) -> PhaseContext:
        state = self.journal.state()
        finished = [p for p in state.phases if p.status == "done"]
        done: dict[str, dict[str, Any]] = {p.name: dict(p.undo or {}) for p in finished}
        results: dict[str, dict[str, Any]] = {p.name: dict(p.result or {}) for p in finished}

        def checkpoint(data: Mapping[str, Any]) -> None:
            self.journal.progress(name, _json(data))

        return PhaseContext(
            options=self.options,
            connect=self.connect,
            checkpoint=checkpoint,
            archives_dir=self.state_dir.archives_dir,
            reports_dir=self.state_dir.reports_dir,
            inventory_path=self.state_dir.inventory_path,
            previous_progress=tuple(dict(p) for p in state.phase(name).progress),
            done=done,
            results=results,
        )

    def run_phase(self, name: PhaseName) -> None:
        phase = PHASES[name]
        ctx = self.context(name)
        log.info("phase started", phase=name)
        failpoints.hit(f"before:{name}")
        with self.journal.phase(name, _json(phase.intent(ctx))) as handle:
            outcome = phase.run(ctx)
            failpoints.hit(f"done-unrecorded:{name}")
            handle.done(undo=_json(outcome.undo), result=_json(outcome.result))
        failpoints.hit(f"after:{name}")
        log.info("phase done", phase=name, **{k: v for k, v in outcome.result.items()
                                              if isinstance(v, int | float | str)})

    def run(self, steps: tuple[PhaseName, ...]) -> None:
        for name in steps:
            self.run_phase(name)

    def rollback(self, force: bool = False, purge_imported: bool = False) -> list[str]:
        """Undo every phase that may have touched the host, most recent first."""
        state = self.journal.state()
        ctx = UndoContext(options=self.options, connect=self.connect,
                          inventory_path=self.state_dir.inventory_path, force=force,
                          purge_imported=purge_imported)
        lines: list[str] = []
        to_undo = state.phases_to_undo()
        if not force:
            # Refuse before undoing anything: a refused rollback must leave the host as it was.
            for phase_state in to_undo:
                if phase_state.name == "switch":
                    switch.refuse_if_drifted(_undo_record(phase_state))
        for phase_state in to_undo:
            name = phase_state.name
            record = _undo_record(phase_state)
            log.info("undo started", phase=name, complete=phase_state.complete)
            with self.journal.undo(name):
                lines.extend(PHASES[name].undo(ctx, record))
        self.journal.finish("rolled_back")
        return lines


def _undo_record(phase_state: PhaseState) -> dict[str, Any]:
    # A phase that stopped half-way has only its intent, which is written to be
    # enough for undo (e.g. the original daemon.json bytes).
    record = dict(phase_state.undo if phase_state.complete and phase_state.undo
                  is not None else phase_state.intent)
    if phase_state.progress:
        record.setdefault("progress", [dict(p) for p in phase_state.progress])
    return record


def describe_failure(error: MigrateError) -> str:
    return error.message
