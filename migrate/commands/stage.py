"""`containerd-migrate stage`: fill the containerd store ahead of the window, while serving."""

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
from migrate.phases.runner import STAGE_PHASES, Runner
from migrate.support.sizes import human_bytes


def stage(opts: GlobalOptions, containers: str | None = None,
          restart_command: str | None = None, snapshotter: str | None = None) -> int:
    """Snapshot + stage while the daemon keeps serving; a later `run` continues.

    As with `export`, the containers policy and restart command are journaled for `run`."""
    state_dir = open_state(opts)
    restart = chosen_restart_command(opts, restart_command) or ()
    options = run_options(opts, RunArgs(containers=containers, snapshotter=snapshotter), restart)
    runner = Runner(state_dir, options, lambda: connect(opts), say=opts.console.emit,
                    command_line=command_line(opts))

    def plan_first(steps: tuple[PhaseName, ...], state: JournalState) -> PreparedPlan | None:
        return plan_or_refuse(opts, options, steps, state)

    outcome = runner.forward(STAGE_PHASES, plan_first, tuple(sys.argv[1:]), command="stage")
    result: dict[str, Any] = dict((outcome.state.phase("stage").result if outcome.state
                                   else None) or {})
    opts.console.emit(
        f"stage done: {result.get('staged', 0)} image(s) in the containerd store at "
        f"{result.get('address')} ({result.get('staged_now', 0)} staged now, "
        f"{human_bytes(int(result.get('bytes_streamed_now', 0)))} streamed; the store grew by "
        f"about {human_bytes(int(result.get('disk_bytes', 0)))}); the daemon kept serving "
        "on the legacy store.\nnext, in the maintenance window: containerd-migrate run "
        f"(containers policy: {options.containers}); it stages what changed since, then "
        "switches")
    return int(ExitCode.OK)
