"""`containerd-migrate export`: snapshot and export ahead of the window, while serving."""

from __future__ import annotations

import sys
from typing import Any

from migrate.commands.context import GlobalOptions, chosen_restart_command, connect, open_state
from migrate.commands.run import RunArgs, run_options
from migrate.errors import ExitCode, MigrateError
from migrate.journal import JournalState, PhaseName
from migrate.phases.base import PreparedPlan
from migrate.phases.runner import PREPARE_PHASES, Runner
from migrate.support.sizes import human_bytes


def refuse_if_past_export(steps: tuple[PhaseName, ...], state: JournalState,
                          ) -> PreparedPlan | None:
    if not steps:
        raise MigrateError(
            "the current migration is past the preparation: the host is being switched",
            "use `containerd-migrate run` to continue or `containerd-migrate rollback` to "
            "undo it",
        )
    return None


def export(opts: GlobalOptions, containers: str | None = None,
           restart_command: str | None = None) -> int:
    """Snapshot + export while the daemon keeps serving; a later `run` continues.

    The containers policy and restart command are journaled with the run, so the `run`
    in the window uses them unless it is given others."""
    state_dir = open_state(opts)
    restart = chosen_restart_command(opts, restart_command) or ()
    options = run_options(opts, RunArgs(containers=containers), restart)
    runner = Runner(state_dir, options, lambda: connect(opts), say=opts.console.emit)
    outcome = runner.forward(PREPARE_PHASES, refuse_if_past_export, tuple(sys.argv[1:]))
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
