"""`containerd-migrate run`: the whole migration, or its resumption."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Any, cast

from migrate.commands.context import (
    GlobalOptions,
    command,
    confirm,
    connect,
    open_state,
    require_confirmation,
)
from migrate.engine.restart import parse_restart_command, resolve_restart_command
from migrate.errors import ExitCode
from migrate.journal import PHASE_ORDER, JournalState, PhaseName
from migrate.phases.base import RunOptions
from migrate.phases.runner import Runner
from migrate.preflight.facts import ContainersPolicy


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
        containers=cast(ContainersPolicy, args.containers),
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
    outcome = runner.forward(PHASE_ORDER, ask, tuple(sys.argv[1:]),
                             auto_rollback=args.auto_rollback)
    if outcome.already_completed:
        opts.console.emit(f"migration {outcome.migration_id} already completed; "
                          "see `containerd-migrate status` and `containerd-migrate verify`")
        return int(ExitCode.OK)
    opts.console.emit(
        f"migration {outcome.migration_id} completed: every image verified on the containerd "
        f"store.\nreports: {state_dir.reports_dir / 'verification.txt'}, "
        f"{state_dir.reports_dir / 'id-map.json'}")
    if outcome.state is not None:
        opts.console.emit("\n".join(containers_summary(opts, outcome.state, restart)))
    return int(ExitCode.OK)


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _seconds(value: object) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "unknown"


def containers_summary(opts: GlobalOptions, state: JournalState,
                       restart: tuple[str, ...]) -> list[str]:
    """What happened to the containers, and the next step when some are down."""
    recreate: dict[str, Any] = dict(state.phase("recreate").result or {})
    stopped = [str(n) for n in _list((state.phase("quiesce").result or {}).get("stopped"))]
    if recreate.get("recreated"):
        running = _list(recreate.get("running"))
        downtime = dict(recreate.get("downtime_seconds") or {})
        lines = [f"containers: {len(recreate['recreated'])} recreated in the containerd store "
                 f"(map: {recreate.get('container_map')})"]
        if running:
            lines.append("  running again: " + ", ".join(
                f"{name} (down {_seconds(downtime.get(str(name)))})" for name in running))
        if recreate.get("left_created"):
            lines.append("  created, not started (they were not running before): "
                         + ", ".join(map(str, _list(recreate["left_created"]))))
        return lines
    if not stopped:
        return ["containers: none was running; legacy containers (if any) stay hidden in the "
                "legacy store"]
    rerun = command(opts, "run", "--yes", "--containers", "recreate",
                    *(("--restart-command", shlex.join(restart)) if restart else ()))
    return [f"containers: {len(stopped)} stopped and left hidden in the legacy store, so they "
            f"are DOWN now: {', '.join(stopped)}",
            f"  next step: bring them back with `{command(opts, 'rollback', '--yes')}`, then "
            f"migrate again with them recreated: `{rerun}`"]
