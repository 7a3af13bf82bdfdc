"""`containerd-migrate plan`: the dry-run inventory report. Changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from migrate.commands.context import GlobalOptions, connect, staged_images, state_or_empty
from migrate.errors import ExitCode, UsageError
from migrate.host.fs import write_private
from migrate.journal import JournalState
from migrate.preflight.facts import PlanOptions, gather_facts
from migrate.preflight.render import render
from migrate.preflight.report import PlanReport, build_plan


@dataclass(frozen=True)
class PlanArgs:
    fmt: str = "text"
    output: Path | None = None
    throughput: float | None = None
    # None: the policy journaled by `export`, else the default (see containers_policy).
    containers: str | None = None
    snapshotter: str | None = None
    restart_command: str | None = None
    show_env: bool = False


def plan_options(opts: GlobalOptions, args: PlanArgs, state: JournalState) -> PlanOptions:
    return PlanOptions(
        containers=opts.given(containers=args.containers).containers_policy(state),
        snapshotter=args.snapshotter,
        throughput_mbps=args.throughput,
        follow_symlinks=opts.follow_symlinks,
        show_env=args.show_env,
    )


def make_report(opts: GlobalOptions, args: PlanArgs) -> PlanReport:
    # Read-only and unlocked: plan changes nothing, it only shows what a run would use.
    state = state_or_empty(opts)
    restart = opts.given(restart_command=args.restart_command).chosen_restart_command(state)
    with connect(opts) as engine:
        facts = gather_facts(engine, opts.daemon_config, opts.state_dir,
                             restart_command=restart, snapshotter=args.snapshotter)
    return build_plan(facts, plan_options(opts, args, state), staged=staged_images(state))


def plan(opts: GlobalOptions, args: PlanArgs) -> int:
    report = make_report(opts, args)
    text = render(report, cast(Literal["text", "json", "markdown"], args.fmt))
    if args.output is None:
        opts.console.emit(text)
    else:
        try:
            write_private(args.output, (text + ("" if text.endswith("\n") else "\n")).encode())
        except OSError as exc:
            raise UsageError(f"cannot write the report to {args.output}: {exc.strerror}",
                             "choose a writable --output path") from exc
        opts.console.emit(report.verdict)
    return int(ExitCode.OK if report.ready else ExitCode.BLOCKED)
