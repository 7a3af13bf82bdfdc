"""`containerd-migrate export`: snapshot and export ahead of the window, while serving."""

from __future__ import annotations

import sys

from migrate.commands.context import GlobalOptions, connect, open_state
from migrate.commands.run import RunArgs, run_options
from migrate.errors import ExitCode, MigrateError
from migrate.journal import JournalState, PhaseName
from migrate.phases.runner import PREPARE_PHASES, Runner


def refuse_if_past_export(steps: tuple[PhaseName, ...], state: JournalState) -> None:
    if not steps:
        raise MigrateError(
            "the current migration is past the preparation: the host is being switched",
            "use `containerd-migrate run` to continue or `containerd-migrate rollback` to "
            "undo it",
        )


def export(opts: GlobalOptions, containers: str = "leave") -> int:
    """Snapshot + export while the daemon keeps serving; a later `run` continues."""
    state_dir = open_state(opts)
    # Containers do not matter for an export: they are only touched by `run`.
    options = run_options(opts, RunArgs(containers=containers), ())
    runner = Runner(state_dir, options, lambda: connect(opts), say=opts.console.emit)
    outcome = runner.forward(PREPARE_PHASES, refuse_if_past_export, tuple(sys.argv[1:]))
    result = (outcome.state.phase("export").result if outcome.state else None) or {}
    opts.console.emit(
        f"export done: archives in {state_dir.archives_dir} ({result}); the daemon was not "
        "touched. Run `containerd-migrate run` in the maintenance window.")
    return int(ExitCode.OK)
