"""`containerd-migrate status`: where the migration stands, and what to do next.

The journal knows what the tool did; what happened since (a `cleanup`, the daemon's
store now, the volume guard removed by hand) only the host knows, so those facts are
read from the host when it answers, and the status always ends with the next step.

The last rehearsal is shown apart: it is not a migration. One that was killed is
cleaned up here (as by the next `rehearse` or `cleanup`); one still running holds the
state dir's lock, and is only said to run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from migrate.archives.manifest import MANIFEST_NAME
from migrate.commands.context import GlobalOptions, command, command_line, connect, read_state
from migrate.commands.rehearse import REPORT_NAME, read_pending, remove_leftovers_locked
from migrate.engine import Engine
from migrate.errors import ExitCode, LockedError, MigrateError
from migrate.journal import JournalState, PhaseState
from migrate.journal.state_dir import StateDir
from migrate.models import Frozen, Store
from migrate.phases.lifecycle import (
    CommandLine,
    HostNow,
    Lifecycle,
    containers_policy_of,
    default_command_line,
    lifecycle_of,
)
from migrate.phases.lifecycle import next_step as lifecycle_next_step
from migrate.phases.records import records_of
from migrate.phases.runner import result_summary
from migrate.phases.tool_images import tool_images_now
from migrate.phases.volume_guard import GUARD_LABEL, GUARD_NOTE
from migrate.preflight.rehearsal import RehearsalReport, read_report
from migrate.preflight.render import human_duration
from migrate.support.sizes import human_bytes

RehearsalState = Literal["finished", "kept", "running", "interrupted"]


class RehearsalStatus(Frozen):
    """The last rehearsal, apart from the migration (`status --format json`: `rehearsal`)."""

    # finished: nothing of it is left; kept: finished with --keep, its directory left;
    # running: one holds the state dir now; interrupted: one was killed, and what it left
    # was removed just now (`leftovers_removed`, or `problem` when that failed).
    state: RehearsalState
    # The report of the last rehearsal that ran to its end (None: none did).
    report_file: str | None = None
    last: RehearsalReport | None = None
    kept_dir: str | None = None
    leftovers_removed: tuple[str, ...] = ()
    problem: str | None = None
    # The command that rehearses again, for this host and state dir.
    again: str = ""


def read_host(opts: GlobalOptions, state_dir: StateDir, state: JournalState) -> HostNow:
    archives = state_dir.archives_dir
    size = sum(p.stat().st_size for p in archives.iterdir()
               if p.is_file() and p.name != MANIFEST_NAME) if archives.is_dir() else 0
    pruned = state_dir.legacy_pruned_path.exists()
    try:
        with connect(opts) as engine:
            store = engine.info().store
            guard = bool(engine.containers_with_label(GUARD_LABEL))
            left = _tool_images_left(engine, opts, state) if store is Store.LEGACY else 0
    except MigrateError as error:
        # The most important line at 3 a.m.: say it, never leave it out.
        return HostNow(archive_bytes=size, legacy_pruned=pruned, unreachable=error.message)
    return HostNow(store.value, guard, size, pruned, tool_images=left)


def _tool_images_left(engine: Engine, opts: GlobalOptions, state: JournalState) -> int:
    """How many of the tool's image names a rolled-back host still keeps (0 if unknown)."""
    if state.outcome != "rolled_back" or not state.tool_images:
        return 0
    try:
        return len(tool_images_now(engine, opts.daemon_config, state.tool_images).names)
    except MigrateError:
        return 0


def _duration(phase: PhaseState) -> float | None:
    if phase.started_at is None or phase.finished_at is None:
        return None
    return round((phase.finished_at - phase.started_at).total_seconds(), 1)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _iso(moment: datetime | None) -> str | None:
    return moment.replace(microsecond=0).isoformat() if moment else None


def next_step(state: JournalState, host: HostNow,
              command_line: CommandLine = default_command_line) -> str:
    """The operator's next step, with commands as they can be pasted (pure)."""
    return "next: " + lifecycle_next_step(state, host).render(command_line)


def _guard_active(state: JournalState, host: HostNow) -> bool:
    if host.volume_guard is not None:
        return host.volume_guard
    records = records_of(state)
    if records.recreate.volume_guard == ():
        return False  # the recreated containers use their volumes again: guard removed
    return state.outcome != "rolled_back" and bool(records.verify.volume_guard)


def read_rehearsal(opts: GlobalOptions, state_dir: StateDir) -> RehearsalStatus | None:
    """The last rehearsal of this state dir; a killed one's leftovers are removed (under the
    state dir's lock, so never those of one still running). None: never rehearsed."""
    report_path = state_dir.reports_dir / REPORT_NAME
    last = read_report(report_path)
    pending = read_pending(state_dir.path)
    if pending is None and last is None:
        return None
    found = RehearsalStatus(state="finished", again=command(opts, "rehearse"),
                            report_file=str(report_path) if last is not None else None,
                            last=last)
    if pending is None:
        return found
    if pending.kept:
        return found.model_copy(update={"state": "kept", "kept_dir": pending.dir})
    try:
        removed = remove_leftovers_locked(state_dir.path)
    except LockedError as error:
        return found.model_copy(update={"state": "running", "problem": error.message})
    except MigrateError as error:
        return found.model_copy(update={"state": "interrupted", "problem": error.message})
    return found.model_copy(update={"state": "interrupted",
                                    "leftovers_removed": tuple(removed)})


def _rehearsal_figures(report: RehearsalReport) -> str:
    figures = report.figures
    if figures is None:
        return ""
    staged = figures.staged_window_seconds
    moved = (f"stage {figures.save_seconds:.1f} s" if report.path == "staged"
             else f"load {figures.load_seconds:.1f} s")
    return (f"engine start {figures.engine_start_seconds:.1f} s, {moved} "
            f"({figures.load_mbps:.0f} MB/s), verify "
            f"{figures.verify_seconds:.1f} s; a `run` window about "
            f"{human_duration(figures.window_seconds)}"
            + (f" (after a `stage` about {human_duration(staged)})" if staged is not None
               else ""))


def _rehearsal_now(rehearsal: RehearsalStatus) -> list[str]:
    """The one line on a rehearsal that did not finish (or left its directory)."""
    if rehearsal.state == "running":
        return [f"rehearsal: one is running now ({rehearsal.problem})"]
    if rehearsal.state == "kept":
        return [f"rehearsal directory kept: {rehearsal.kept_dir} (its engine stopped; the "
                "next rehearse or cleanup removes it)"]
    if rehearsal.state != "interrupted":
        return []
    if rehearsal.problem is not None:
        return [f"rehearsal: interrupted before it finished; what it left could not be "
                f"removed: {rehearsal.problem}"]
    did = "; ".join(line.removeprefix("rehearsal leftovers: ")
                    for line in rehearsal.leftovers_removed)
    return ["rehearsal: interrupted before it finished; removed what it left: "
            + (did or "nothing was left")]


def render_rehearsal_status(rehearsal: RehearsalStatus | None) -> list[str]:
    """The "last rehearsal" block of the text status; [] when there never was one."""
    if rehearsal is None:
        return []
    lines = _rehearsal_now(rehearsal)
    last = rehearsal.last
    if last is None:
        return lines
    result = "OK" if last.ok else f"FAILED (exit {last.exit_code})"
    lines.append(f"last rehearsal: {last.when()}, {result}: {last.images} image(s), "
                 f"{last.containers} container(s), {len(last.failures)} failure(s)")
    figures = _rehearsal_figures(last)
    if figures:
        lines.append(f"  measured: {figures}")
    lines.append(f"  report: {rehearsal.report_file} (JSON); again: {rehearsal.again}")
    return lines


def status_document(state: JournalState, host: HostNow | None = None,
                    command_line: CommandLine = default_command_line,
                    rehearsal: RehearsalStatus | None = None) -> dict[str, Any]:
    """The status as plain data (pure), for both the JSON and the text form."""
    host = host or HostNow()
    now = lifecycle_of(state, host.legacy_pruned)
    undo = [p.name for p in state.phases_to_undo()] \
        if state.outcome != "rolled_back" and now is not Lifecycle.PRUNED else []
    return {
        "migration_id": state.last_migration_id,
        "state": now.value,
        "containers_policy": containers_policy_of(state),
        "active": state.migration_id is not None,
        "outcome": state.outcome,
        "runs": len(state.runs),
        "torn_tail": state.torn_tail,
        "phases": [
            {
                "name": p.name,
                "status": p.status,
                "attempts": p.attempts,
                "started_at": _iso(p.started_at),
                "finished_at": _iso(p.finished_at),
                "seconds": _duration(p),
                "result": p.result or {},
                "error": p.error,
            }
            for p in state.phases
        ],
        "remaining": [] if state.half_rolled_back else list(state.remaining),
        "rollback_would_undo": undo,
        "volume_guard": _guard_active(state, host),
        "store_now": host.store,
        "daemon_unreachable": host.unreachable,
        "archive_bytes": host.archive_bytes,
        "tool_images_in_containerd_store": host.tool_images,
        "rehearsal": rehearsal.model_dump(mode="json") if rehearsal is not None else None,
        "next": next_step(state, host, command_line),
    }


# Result keys shown in the table: counts (a list counts its items) and sizes.
def render_status(doc: dict[str, Any], state: JournalState,
                  rehearsal: RehearsalStatus | None = None) -> str:
    apart = render_rehearsal_status(rehearsal)
    if doc["migration_id"] is None:
        return "\n".join(["no migration has been started with this state dir",
                          *(["", *apart, ""] if apart else []), doc["next"]])
    head = "in progress" if doc["active"] else f"finished: {doc['outcome']}"
    lines = [f"migration {doc['migration_id']} ({head}, {doc['runs']} run(s))", ""]
    lines.append(f"{'phase':<9} {'status':<12} {'started':<19} {'finished':<19} {'secs':>6}  "
                 "result")
    for phase in state.phases:
        secs = _duration(phase)
        lines.append(
            f"{phase.name:<9} {phase.status:<12} {_when(phase.started_at):<19} "
            f"{_when(phase.finished_at):<19} {secs if secs is not None else '-':>6}  "
            f"{result_summary(phase.name, phase.result) or (phase.error or '')}"
        )
    lines.append("")
    lines.append(f"state: {doc['state']}")
    if doc["store_now"]:
        lines.append(f"daemon now: {doc['store_now']} image store")
    if doc["daemon_unreachable"]:
        lines.append(f"daemon now: NOT ANSWERING ({doc['daemon_unreachable']})")
    if doc["tool_images_in_containerd_store"]:
        lines.append(f"containerd store: {doc['tool_images_in_containerd_store']} image "
                     "name(s) this tool put there are still in it")
    if doc["active"]:
        lines.append(f"remaining: {', '.join(doc['remaining']) or 'nothing (finishing)'}")
    if doc["rollback_would_undo"]:
        lines.append(f"rollback would undo: {', '.join(doc['rollback_would_undo'])}")
    if doc["volume_guard"]:
        lines.append(GUARD_NOTE)
    if doc["archive_bytes"]:
        lines.append(f"archives: {human_bytes(doc['archive_bytes'])} in the state dir")
    if doc["torn_tail"]:
        lines.append("note: the journal's last record was torn (a crash); it is ignored")
    if apart:
        lines += ["", *apart, ""]
    lines.append(doc["next"])
    return "\n".join(lines)


@dataclass(frozen=True)
class StatusArgs:
    fmt: str = "text"


def status(opts: GlobalOptions, args: StatusArgs) -> int:
    state = read_state(opts)  # refuses an unusable state dir (exit 7), creates nothing
    state_dir = StateDir(opts.state_dir)
    host = read_host(opts, state_dir, state) if state.last_migration_id else HostNow()
    rehearsal = read_rehearsal(opts, state_dir)
    doc = status_document(state, host, command_line(opts), rehearsal)
    opts.console.emit(json.dumps(doc, indent=2) if args.fmt == "json"
                      else render_status(doc, state, rehearsal))
    return int(ExitCode.OK)
