"""`containerd-migrate export`: snapshot and export ahead of the window, while serving."""

from __future__ import annotations

import sys
from typing import Any

from migrate.commands.context import (
    GlobalOptions,
    chosen_restart_command,
    command_line,
    connect,
    open_state,
)
from migrate.commands.run import RunArgs, plan_or_refuse, run_options
from migrate.errors import ExitCode
from migrate.journal import JournalState, PhaseName
from migrate.phases.base import PreparedPlan
from migrate.phases.runner import PREPARE_PHASES, Runner
from migrate.support.sizes import human_bytes


def export(opts: GlobalOptions, containers: str | None = None,
           restart_command: str | None = None) -> int:
    """Snapshot + export while the daemon keeps serving; a later `run` continues.

    The containers policy and restart command are journaled with the run, so the `run`
    in the window uses them unless it is given others."""
    state_dir = open_state(opts)
    restart = chosen_restart_command(opts, restart_command) or ()
    options = run_options(opts, RunArgs(containers=containers), restart)
    runner = Runner(state_dir, options, lambda: connect(opts), say=opts.console.emit,
                    command_line=command_line(opts))

    def plan_first(steps: tuple[PhaseName, ...], state: JournalState) -> PreparedPlan | None:
        return plan_or_refuse(opts, options, steps, state)

    outcome = runner.forward(PREPARE_PHASES, plan_first, tuple(sys.argv[1:]), command="export")
    result: dict[str, Any] = dict(
        (outcome.state.phase("export").result if outcome.state else None) or {})
    archives = len(result.get("archives") or ())
    opts.console.emit(
        f"export done: {archives} archive(s) in {state_dir.archives_dir} "
        f"({len(result.get('written') or ())} new, {len(result.get('reused') or ())} reused, "
        f"{human_bytes(int(result.get('bytes_written') or 0))} written); the daemon was not "
        f"touched.\nnext, in the maintenance window: containerd-migrate run "
        f"(containers policy: {options.containers})")
    return int(ExitCode.OK)
