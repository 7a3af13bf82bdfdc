"""`containerd-migrate run`: the whole migration, or its resumption."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from migrate.commands.context import (
    GlobalOptions,
    command,
    command_line,
    confirm,
    connect,
    open_state,
    require_confirmation,
    staged_images,
)
from migrate.commands.output import Format, Report, reported, rollback_fields
from migrate.journal import JournalState, PhaseName
from migrate.phases.base import GivenOptions, PreparedPlan, RunOptions
from migrate.phases.lifecycle import containers_policy_of
from migrate.phases.records import PhaseRecords, records_of
from migrate.phases.runner import RUN_PHASES, Runner
from migrate.phases.snapshot import blocker_error, prepare_plan
from migrate.preflight.checks import volatile_state_dir
from migrate.preflight.facts import probe_filesystem
from migrate.preflight.render import figure


@dataclass(frozen=True)
class RunArgs:
    yes: bool = False
    # None: the policy journaled by `export`, else the default (see containers_policy).
    containers: str | None = None
    snapshotter: str | None = None
    restart_command: str | None = None
    restart_timeout: float | None = None
    auto_rollback: bool = True
    fmt: Format = "text"


def given_options(opts: GlobalOptions, args: RunArgs) -> GivenOptions:
    return opts.given(containers=args.containers, restart_command=args.restart_command,
                      restart_timeout=args.restart_timeout, snapshotter=args.snapshotter)


def plan_or_refuse(opts: GlobalOptions, options: RunOptions, steps: tuple[PhaseName, ...],
                   state: JournalState) -> PreparedPlan | None:
    """The plan a run starts from, taken before anything is journaled. A NEW migration
    that its plan blocks is refused right here, so it leaves no migration behind (status
    then says nothing happened, not "resume or roll back")."""
    if "snapshot" not in steps:
        return None
    prepared = prepare_plan(options, lambda: connect(opts), staged_images(state))
    if not prepared.report.ready and state.migration_id is None:
        raise blocker_error(prepared.report)
    return prepared


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def confirmation_question(options: RunOptions, steps: tuple[PhaseName, ...],
                          state: JournalState, prepared: PreparedPlan | None) -> str:
    """What the operator agrees to: the daemon, what stops, what restarts, for how long."""
    what = "resume the migration of" if state.migration_id else "migrate"
    lines = [f"{what} the Docker daemon at {options.host} to the containerd image store "
             f"({', '.join(steps)})"]
    if prepared is not None:
        report = prepared.report
        lines[0] = (f"{what} the Docker daemon at {options.host} (Engine "
                    f"{report.engine.version}, data root {report.engine.data_root}, "
                    f"{report.daemon_config.path}) to the containerd image store")
        running = [c.name for c in report.containers if c.running]
        fate = ("created again in the containerd store after verification"
                if options.containers == "recreate" else "kept hidden in the legacy store")
        lines.append(f"  stops: {', '.join(running)} ({fate})"
                     if running else "  stops: no running container")
        est = report.estimate
        lines.append(f"  window: about {_minutes(est.window_seconds)}")
        for name in ("stop", "restart", "import", "verify"):
            lines.append(f"    {name} {figure(est, name)}")
        if est.rehearsal is not None and not est.rehearsal.used:
            lines.append(f"    (the last rehearsal is {est.rehearsal.text()})")
        if "export" in steps:
            lines.append(f"  before it, export {figure(est, 'export')}")
    if "restart" in steps:
        lines.append(f"  restarts dockerd with: {shlex.join(options.restart_command)}")
    return "\n".join(lines) + "\nproceed?"


def warn_volatile_state_dir(opts: GlobalOptions) -> None:
    """Said before anything is written: plan's warning, for an operator who skipped plan."""
    volatile = volatile_state_dir(probe_filesystem(opts.state_dir))
    if volatile is not None:
        opts.console.emit(f"warning: {volatile.message}\n  hint: {volatile.hint}")


def run(opts: GlobalOptions, args: RunArgs) -> int:
    return reported(opts, "run", args.fmt, lambda report: _run(report, args))


def _run(report: Report, args: RunArgs) -> int:
    opts = report.opts
    report.set(steps=None, automatic_rollback=None)  # every key, also when refused
    require_confirmation("the migration", yes=args.yes, interactive=opts.interactive)
    warn_volatile_state_dir(opts)
    state_dir = open_state(opts)

    def ask(steps: tuple[PhaseName, ...], state: JournalState,
            options: RunOptions) -> PreparedPlan | None:
        # Blockers first: asking to confirm a run that is going to refuse wastes a window.
        prepared = plan_or_refuse(opts, options, steps, state)
        if prepared is not None and not prepared.report.ready:
            return prepared  # the resumed migration's snapshot refuses with it (journaled)
        confirm(opts.console, confirmation_question(options, steps, state, prepared),
                yes=args.yes, interactive=opts.interactive)
        return prepared

    runner = Runner(state_dir, given_options(opts, args), lambda: connect(opts),
                    say=opts.console.emit, command_line=command_line(opts))
    try:
        outcome = runner.forward(RUN_PHASES, ask, opts.argv, auto_rollback=args.auto_rollback)
    finally:
        undone = runner.automatic_rollback
        report.set(migration_id=runner.migration_id,
                   automatic_rollback=rollback_fields(undone) if undone else None)
    report.set(migration_id=outcome.migration_id, steps=list(outcome.steps))
    if outcome.already_completed:
        if not report.json:
            opts.console.emit(f"migration {outcome.migration_id} already completed; see "
                              "`containerd-migrate status` and `containerd-migrate verify`")
        return report.done("already_completed")
    reports = {"verification": str(state_dir.reports_dir / "verification.txt"),
               "id_map": str(state_dir.reports_dir / "id-map.json")}
    if outcome.state is not None:
        report.set(reports=reports, **run_fields(outcome.state))
    if report.json:
        return report.done("completed")
    opts.console.emit(
        f"migration {outcome.migration_id} completed: every image verified on the containerd "
        f"store.\nreports: {reports['verification']}, {reports['id_map']}")
    if outcome.state is not None and outcome.options is not None:
        capability = multi_platform_summary(outcome.state)
        if capability:
            opts.console.emit(capability)
        opts.console.emit("\n".join(containers_summary(opts, outcome.state,
                                                       outcome.options.restart_command)))
    return report.done("completed")


def run_fields(state: JournalState) -> dict[str, Any]:
    """What a completed run's document says of the store and the containers."""
    records = records_of(state)
    recreate = records.recreate
    return {
        "multi_platform": multi_platform_of(records),
        "containers": {
            "policy": containers_policy_of(state),
            "stopped": list(records.quiesce.stopped),
            "recreated": list(recreate.recreated),
            "running": list(recreate.running),
            "left_created": list(recreate.left_created),
            "downtime_seconds": dict(recreate.downtime_seconds),
            "container_map": recreate.container_map,
            # Stopped and not recreated: down until a rollback brings them back.
            "down": [] if recreate.recreated else list(records.quiesce.stopped),
        },
    }


def multi_platform_of(records: PhaseRecords) -> str | None:
    """Verify's multi-platform check, or the recreate phase's when verify left it until the
    stopped containers ran again (issue 19: nobody waits for it)."""
    return records.recreate.multi_platform or records.verify.multi_platform


def multi_platform_summary(state: JournalState) -> str:
    """What the multi-platform check found, for the end of a run (see platform_check)."""
    found = multi_platform_of(records_of(state))
    if found == "supported":
        return ("multi-platform: supported (the migration loaded a two-platform image, ran "
                "the native one and removed it)")
    if found == "unsupported":
        return ("multi-platform: NOT SUPPORTED by this store (see the report): the migration "
                "is complete and its images are fine; a rollback would not bring the "
                "capability back")
    return ""


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "unknown"


def containers_summary(opts: GlobalOptions, state: JournalState,
                       restart: tuple[str, ...]) -> list[str]:
    """What happened to the containers, and the next step when some are down."""
    records = records_of(state)
    recreate = records.recreate
    stopped = records.quiesce.stopped
    if recreate.recreated:
        lines = [f"containers: {len(recreate.recreated)} recreated in the containerd store "
                 f"(map: {recreate.container_map})"]
        if recreate.running:
            lines.append("  running again: " + ", ".join(
                f"{name} (down {_seconds(recreate.downtime_seconds.get(name))})"
                for name in recreate.running))
        if recreate.left_created:
            lines.append("  created, not started (they were not running before): "
                         + ", ".join(recreate.left_created))
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
