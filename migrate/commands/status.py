"""`containerd-migrate status`: where the migration stands, and what to do next.

The journal knows what the tool did; what happened since (a `cleanup`, the daemon's
store now, the volume guard removed by hand) only the host knows, so those facts are
read from the host when it answers, and the status always ends with the next step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from migrate.archives.manifest import MANIFEST_NAME
from migrate.commands.context import GlobalOptions, command_line, connect, read_state
from migrate.engine import Engine
from migrate.errors import ExitCode, MigrateError
from migrate.journal import JournalState, PhaseState
from migrate.journal.state_dir import StateDir
from migrate.models import Store
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
from migrate.phases.tool_images import tool_images_now
from migrate.phases.volume_guard import GUARD_LABEL, GUARD_NOTE
from migrate.support.sizes import human_bytes


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


def status_document(state: JournalState, host: HostNow | None = None,
                    command_line: CommandLine = default_command_line) -> dict[str, Any]:
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
        "next": next_step(state, host, command_line),
    }


# Result keys shown in the table: counts (a list counts its items) and sizes.
_COUNTS = {"images": "images", "tags": "tags", "dangling": "dangling", "containers":
           "containers", "volumes": "volumes", "archives": "archives", "written":
           "archives written", "reused": "archives reused", "loaded": "archives loaded",
           "skipped": "archives skipped", "stopped": "stopped", "imported": "images imported",
           "committed": "committed", "recreated": "recreated", "staged": "images staged",
           "staged_now": "staged now"}
_SIZES = {"unique_layer_bytes": "of layers", "bytes_written": "written",
          "bytes_loaded": "loaded", "bytes_streamed": "streamed into containerd",
          "disk_bytes": "added to the containerd store"}


def result_summary(result: dict[str, Any]) -> str:
    """A phase result for people: counts and sizes, never a Python repr."""
    parts: list[str] = []
    for key, value in result.items():
        count = len(value) if isinstance(value, list | tuple | dict) else value
        if key in _COUNTS and isinstance(count, int) and not isinstance(count, bool):
            parts.append(f"{count} {_COUNTS[key]}")
        elif key in _SIZES and isinstance(value, int):
            parts.append(f"{human_bytes(value)} {_SIZES[key]}")
        elif key == "store" and isinstance(value, str):
            parts.append(f"{value} store")
    return ", ".join(parts)


def render_status(doc: dict[str, Any], state: JournalState) -> str:
    if doc["migration_id"] is None:
        return f"no migration has been started with this state dir\n{doc['next']}"
    head = "in progress" if doc["active"] else f"finished: {doc['outcome']}"
    lines = [f"migration {doc['migration_id']} ({head}, {doc['runs']} run(s))", ""]
    lines.append(f"{'phase':<9} {'status':<12} {'started':<19} {'finished':<19} {'secs':>6}  "
                 "result")
    for phase in state.phases:
        secs = _duration(phase)
        lines.append(
            f"{phase.name:<9} {phase.status:<12} {_when(phase.started_at):<19} "
            f"{_when(phase.finished_at):<19} {secs if secs is not None else '-':>6}  "
            f"{result_summary(dict(phase.result or {})) or (phase.error or '')}"
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
    lines.append(doc["next"])
    return "\n".join(lines)


@dataclass(frozen=True)
class StatusArgs:
    fmt: str = "text"


def status(opts: GlobalOptions, args: StatusArgs) -> int:
    state = read_state(opts)  # refuses an unusable state dir (exit 7), creates nothing
    state_dir = StateDir(opts.state_dir)
    host = read_host(opts, state_dir, state) if state.last_migration_id else HostNow()
    doc = status_document(state, host, command_line(opts))
    opts.console.emit(json.dumps(doc, indent=2) if args.fmt == "json"
                      else render_status(doc, state))
    return int(ExitCode.OK)
