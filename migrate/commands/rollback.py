"""`containerd-migrate rollback`: undo the migration from its journal."""

from __future__ import annotations

from dataclasses import dataclass

from migrate.commands.cleanup import CleanupArgs, cleanup
from migrate.commands.context import (
    GlobalOptions,
    command_line,
    confirm,
    connect,
    lifecycle_decision,
    open_state,
    read_state,
    require_confirmation,
)
from migrate.commands.output import Format, Report, reported, rollback_fields
from migrate.errors import MigrateError
from migrate.journal import JournalState
from migrate.phases.runner import RollbackOutcome, Runner


@dataclass(frozen=True)
class RollbackArgs:
    restart_command: str | None = None
    restart_timeout: float | None = None
    force: bool = False
    purge_imported: bool = False
    yes: bool = False
    fmt: Format = "text"


def rollback(opts: GlobalOptions, args: RollbackArgs) -> int:
    return reported(opts, "rollback", args.fmt, lambda report: _rollback(report, args))


def _rollback(report: Report, args: RollbackArgs) -> int:
    opts = report.opts
    report.set(**rollback_fields(RollbackOutcome(None)))  # every key, also when refused
    state = read_state(opts)
    decision = lifecycle_decision(opts, "rollback", state, purge_imported=args.purge_imported)
    if decision.action == "nothing":  # never creates a state dir it has nothing to do in
        next_step = decision.next.render(command_line(opts)) if decision.next else ""
        report.set(migration_id=state.last_migration_id, reason=decision.reason,
                   next=next_step or None)
        if not report.json:
            opts.console.emit(f"{decision.reason}\nnext: {next_step}" if next_step
                              else decision.reason)
        return report.done("nothing_to_do")
    if state.outcome == "rolled_back":
        # `--purge-imported` after the rollback: what is left in the containerd store is
        # cleanup's to remove, the one command that frees it (its document says "cleanup").
        return cleanup(report.hand_over(), CleanupArgs(fmt=args.fmt))
    require_confirmation("the rollback", yes=args.yes, interactive=opts.interactive)
    state_dir = open_state(opts)

    def ask(state: JournalState) -> None:
        confirm(opts.console, f"roll back migration {state.last_migration_id} "
                f"({', '.join(p.name for p in state.phases_to_undo())})?",
                yes=args.yes, interactive=opts.interactive)

    # Without --restart-command/--restart-timeout each undo uses what its journal record
    # names; given, they win (host.restart_command.resolve_restart_command,
    # engine.daemon_wait.resolve_restart_timeout).
    given = opts.given(restart_command=args.restart_command,
                       restart_timeout=args.restart_timeout)
    runner = Runner(state_dir, given, lambda: connect(opts), say=opts.console.emit,
                    command_line=command_line(opts))
    outcome = runner.rollback(ask, opts.argv, force=args.force,
                              purge_imported=args.purge_imported)
    report.set(migration_id=outcome.migration_id)
    if outcome.nothing_to_do:
        report.set(reason=outcome.nothing_to_do, next=None)
        if not report.json:
            opts.console.emit(outcome.nothing_to_do)
        return report.done("nothing_to_do")
    report.set(**rollback_fields(outcome))
    if not report.json:
        opts.console.emit("rollback:\n" + "\n".join(f"  did: {line}" for line in outcome.lines))
        if outcome.failed:
            opts.console.emit("\n".join(f"  FAILED: {line}" for line in outcome.failed))
        opts.console.emit("checked:\n" + "\n".join(f"  ok: {line}" for line in outcome.ok))
        if outcome.problems:
            opts.console.emit("\n".join(f"  PROBLEM: {line}" for line in outcome.problems))
    if outcome.failed:
        raise MigrateError(
            f"rollback could not undo everything: {'; '.join(outcome.failed)}",
            "fix the cause, then run "
            f"`{command_line(opts)(('rollback', '--yes'))}` again: it retries exactly what "
            "failed")
    if outcome.problems:
        raise MigrateError(f"rollback finished but {len(outcome.problems)} check(s) failed",
                           "see the PROBLEM lines above and the daemon log"
                           if not report.json else "see `problems` and the daemon log")
    return report.done("rolled_back")
