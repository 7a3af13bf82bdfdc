"""`containerd-migrate rollback`: undo the migration from its journal."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from migrate.commands.context import (
    GlobalOptions,
    confirm,
    connect,
    open_state,
    require_confirmation,
)
from migrate.engine.restart import parse_restart_command
from migrate.errors import BlockedError, ExitCode, MigrateError
from migrate.journal import JournalState
from migrate.phases.base import RunOptions
from migrate.phases.runner import Runner


@dataclass(frozen=True)
class RollbackArgs:
    restart_command: str | None = None
    restart_timeout: float | None = None
    force: bool = False
    purge_imported: bool = False
    yes: bool = False
    interactive: bool = False


def rollback_options(opts: GlobalOptions, args: RollbackArgs) -> RunOptions:
    # Without --restart-command/--restart-timeout each undo uses what its journal record
    # names; given, they win (engine.restart.resolve_restart_command/_timeout).
    restart = parse_restart_command(args.restart_command) if args.restart_command else ()
    return RunOptions(
        host=opts.host, daemon_config=opts.daemon_config, state_dir=opts.state_dir,
        restart_command=restart, restart_timeout=args.restart_timeout,
        follow_symlinks=opts.follow_symlinks,
    )


def rollback(opts: GlobalOptions, args: RollbackArgs) -> int:
    require_confirmation("the rollback", yes=args.yes, interactive=args.interactive)
    state_dir = open_state(opts)
    if state_dir.legacy_pruned_path.exists():
        raise BlockedError("the legacy data was pruned by `containerd-migrate cleanup "
                           "--prune-legacy`; there is nothing to roll back to",
                           "re-pull or rebuild images if needed")

    def ask(state: JournalState) -> None:
        confirm(opts.console, f"roll back migration {state.last_migration_id} "
                f"({', '.join(p.name for p in state.phases_to_undo())})?",
                yes=args.yes, interactive=args.interactive)

    runner = Runner(state_dir, rollback_options(opts, args), lambda: connect(opts),
                    say=opts.console.emit)
    outcome = runner.rollback(ask, tuple(sys.argv[1:]), force=args.force,
                              purge_imported=args.purge_imported)
    if outcome.nothing_to_do:
        opts.console.emit(outcome.nothing_to_do)
        return int(ExitCode.OK)
    opts.console.emit("rollback:\n" + "\n".join(f"  did: {line}" for line in outcome.lines))
    opts.console.emit("checked:\n" + "\n".join(f"  ok: {line}" for line in outcome.ok))
    if outcome.problems:
        opts.console.emit("\n".join(f"  PROBLEM: {line}" for line in outcome.problems))
        raise MigrateError(f"rollback finished but {len(outcome.problems)} check(s) failed",
                           "see the PROBLEM lines above and the daemon log")
    return int(ExitCode.OK)
