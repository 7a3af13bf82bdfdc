"""`run` (the whole migration, or its resumption) and `export` (prepare ahead of time)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal, cast

from migrate.commands.common import (
    GlobalOptions,
    can_confirm,
    confirm,
    connect,
    emit,
    load_inventory,
    open_state,
)
from migrate.engine.restart import default_restart_command, parse_restart_command
from migrate.errors import ExitCode, MigrateError, RestartFailed, RolledBack, VerificationFailed
from migrate.journal import JournalState
from migrate.journal.state_dir import StateDir
from migrate.phases.base import RunOptions
from migrate.phases.rollback_check import check_restored
from migrate.phases.runner import PREPARE_PHASES, Runner, steps_to_run
from migrate.support.logconfig import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class RunArgs:
    yes: bool = False
    containers: str = "refuse"
    snapshotter: str | None = None
    restart_command: str | None = None
    restart_timeout: float = 120.0
    auto_rollback: bool = True
    interactive: bool = False


def run_options(opts: GlobalOptions, args: RunArgs, restart: tuple[str, ...]) -> RunOptions:
    return RunOptions(
        host=opts.host, daemon_config=opts.daemon_config, state_dir=opts.state_dir,
        restart_command=restart, restart_timeout=args.restart_timeout,
        containers=cast(Literal["refuse", "leave"], args.containers),
        follow_symlinks=opts.follow_symlinks, snapshotter=args.snapshotter,
        auto_rollback=args.auto_rollback,
    )


def _bind_host(state_dir: StateDir, opts: GlobalOptions, state: JournalState) -> None:
    """Refuse a state dir that belongs to another host before anything changes."""
    if state.phase("switch").status != "pending":
        return  # the daemon may be down or on the new store; the identity was checked before
    engine = connect(opts)
    try:
        state_dir.check_host(engine.info().data_root)
    finally:
        engine.close()


def _auto_rollback(runner: Runner, failure: MigrateError) -> RolledBack:
    emit(f"{failure.message}\nrolling back automatically ...")
    lines = runner.rollback()
    engine = runner.connect()
    try:
        ok, problems = check_restored(engine, load_inventory(runner.state_dir.inventory_path))
    finally:
        engine.close()
    emit("\n".join(f"  {line}" for line in [*lines, *ok, *problems]))
    state = runner.state_dir
    if problems:
        return RolledBack(
            f"{failure.message}; the automatic rollback finished but found problems: "
            f"{'; '.join(problems)}",
            f"inspect the host; the journal is {state.journal_path}",
            exit_code=ExitCode.ERROR,
        )
    return RolledBack(
        f"{failure.message}. The migration was rolled back automatically: the host is back "
        "on the legacy image store with every image and container",
        f"logs: the daemon log (journalctl -u docker); journal: {state.journal_path}; "
        f"reports: {state.reports_dir}. Fix the cause, then run again.",
    )


def run(opts: GlobalOptions, args: RunArgs) -> int:
    can_confirm("the migration", yes=args.yes, interactive=args.interactive)
    restart = (parse_restart_command(args.restart_command) if args.restart_command
               else default_restart_command())
    state_dir = open_state(opts)
    options = run_options(opts, args, restart)
    with state_dir.lock():
        journal = state_dir.journal()
        state = journal.state()
        if state.finished and state.outcome == "completed":
            emit(f"migration {state.last_migration_id} already completed; "
                 "see `containerd-migrate status` and `verify`")
            return int(ExitCode.OK)
        steps = steps_to_run(state)
        _bind_host(state_dir, opts, state)
        what = "resume the migration" if state.migration_id else "migrate this host"
        confirm(f"{what} to the containerd image store ({', '.join(steps)})?",
                yes=args.yes, interactive=args.interactive)
        runner = Runner(state_dir, journal, options, lambda: connect(opts))
        migration = runner.start(tuple(sys.argv[1:]))
        log.info("run started", migration=migration, steps=list(steps))
        try:
            runner.run(steps)
        except (RestartFailed, VerificationFailed) as failure:
            if not args.auto_rollback:
                raise
            raise _auto_rollback(runner, failure) from failure
        journal.finish("completed")
    emit(f"migration {migration} completed: every image verified on the containerd store.\n"
         f"reports: {state_dir.reports_dir / 'verification.txt'}, "
         f"{state_dir.reports_dir / 'id-map.json'}")
    return int(ExitCode.OK)


def export(opts: GlobalOptions, containers: str = "leave") -> int:
    """Snapshot + export while the daemon keeps serving; a later `run` continues."""
    state_dir = open_state(opts)
    # Containers do not matter for an export: they are only touched by `run`.
    options = run_options(opts, RunArgs(containers=containers), ())
    with state_dir.lock():
        journal = state_dir.journal()
        state = journal.state()
        steps = steps_to_run(state, PREPARE_PHASES)
        if not steps:
            raise MigrateError(
                "the current migration is past the export: the host is being switched",
                "use `containerd-migrate run` to continue or `rollback` to undo it",
            )
        _bind_host(state_dir, opts, state)
        runner = Runner(state_dir, journal, options, lambda: connect(opts))
        runner.start(tuple(sys.argv[1:]))
        runner.run(steps)
        result = journal.state().phase("export").result or {}
    emit(f"export done: archives in {state_dir.archives_dir} ({result}); the daemon was not "
         "touched. Run `containerd-migrate run` in the maintenance window.")
    return int(ExitCode.OK)
