"""`containerd-migrate run`: the whole migration, or its resumption."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal, cast

from migrate.commands.context import (
    GlobalOptions,
    confirm,
    connect,
    open_state,
    require_confirmation,
)
from migrate.engine.restart import parse_restart_command, resolve_restart_command
from migrate.errors import ExitCode
from migrate.journal import JournalState, PhaseName
from migrate.phases.base import RunOptions
from migrate.phases.runner import RUN_PHASES, Runner


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
    )


def run(opts: GlobalOptions, args: RunArgs) -> int:
    require_confirmation("the migration", yes=args.yes, interactive=args.interactive)
    explicit = parse_restart_command(args.restart_command) if args.restart_command else None
    restart = resolve_restart_command(explicit)
    state_dir = open_state(opts)

    def ask(steps: tuple[PhaseName, ...], state: JournalState) -> None:
        what = "resume the migration" if state.migration_id else "migrate this host"
        confirm(opts.console, f"{what} to the containerd image store ({', '.join(steps)})?",
                yes=args.yes, interactive=args.interactive)

    runner = Runner(state_dir, run_options(opts, args, restart), lambda: connect(opts),
                    say=opts.console.emit)
    outcome = runner.forward(RUN_PHASES, ask, tuple(sys.argv[1:]),
                             auto_rollback=args.auto_rollback)
    if outcome.already_completed:
        opts.console.emit(f"migration {outcome.migration_id} already completed; "
                          "see `containerd-migrate status` and `containerd-migrate verify`")
        return int(ExitCode.OK)
    opts.console.emit(
        f"migration {outcome.migration_id} completed: every image verified on the containerd "
        f"store.\nreports: {state_dir.reports_dir / 'verification.txt'}, "
        f"{state_dir.reports_dir / 'id-map.json'}")
    return int(ExitCode.OK)
