"""`containerd-migrate export` and `stage`: prepare the window while the daemon serves.

Both take the snapshot, then export archives or stage images into the containerd store,
and journal the containers policy and restart command for the `run` in the window. What
they may do in the state dir's state is the lifecycle's decision; a new migration that its
plan blocks is refused before the journal knows of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from migrate.commands.context import (
    GlobalOptions,
    command,
    command_line,
    connect,
    open_state,
)
from migrate.commands.run import RunArgs, given_options, plan_or_refuse
from migrate.errors import ExitCode
from migrate.journal import JournalState, PhaseName
from migrate.phases.base import PreparedPlan, RunOptions
from migrate.phases.records import PhaseRecords, records_of
from migrate.phases.runner import PREPARE_PHASES, STAGE_PHASES, Runner
from migrate.support.sizes import human_bytes

Preparation = Literal["export", "stage"]


@dataclass(frozen=True)
class PrepareArgs:
    # None: the policy journaled by the migration in progress, else the default.
    containers: str | None = None
    restart_command: str | None = None
    # `stage` only: the snapshotter when the storage driver has no automatic mapping.
    snapshotter: str | None = None


def prepare(opts: GlobalOptions, what: Preparation, args: PrepareArgs) -> int:
    state_dir = open_state(opts)
    given = given_options(opts, RunArgs(containers=args.containers,
                                        snapshotter=args.snapshotter,
                                        restart_command=args.restart_command))
    runner = Runner(state_dir, given, lambda: connect(opts), say=opts.console.emit,
                    command_line=command_line(opts))

    def plan_first(steps: tuple[PhaseName, ...], state: JournalState,
                   options: RunOptions) -> PreparedPlan | None:
        return plan_or_refuse(opts, options, steps, state)

    phases = STAGE_PHASES if what == "stage" else PREPARE_PHASES
    outcome = runner.forward(phases, plan_first, opts.argv, command=what)
    records = records_of(outcome.state) if outcome.state else PhaseRecords({}, {})
    done = _staged(records) if what == "stage" else _exported(records, str(state_dir.archives_dir))
    opts.console.emit(
        f"{done}\nnext, in the maintenance window: `{command(opts, 'run', '--yes')}` "
        f"(containers policy: {runner.options.containers})"
        + ("; it stages what changed since, then switches" if what == "stage" else ""))
    return int(ExitCode.OK)


def _staged(records: PhaseRecords) -> str:
    result = records.stage
    return (f"stage done: {result.staged} image(s) in the containerd store at "
            f"{result.address} ({result.staged_now} staged now, "
            f"{human_bytes(result.bytes_streamed_now)} streamed; the store grew by about "
            f"{human_bytes(result.disk_bytes)}); the daemon kept serving on the legacy store.")


def _exported(records: PhaseRecords, archives_dir: str) -> str:
    result = records.export
    return (f"export done: {len(result.archives or ())} archive(s) in {archives_dir} "
            f"({len(result.written)} new, {len(result.reused)} reused, "
            f"{human_bytes(result.bytes_written)} written); the daemon was not touched.")
