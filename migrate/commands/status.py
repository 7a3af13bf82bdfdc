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
from migrate.commands.context import GlobalOptions, connect
from migrate.errors import ExitCode, MigrateError, StateError
from migrate.journal import OPT_IN_PHASES, PHASE_ORDER, JournalState, PhaseState, replay
from migrate.journal.state_dir import StateDir
from migrate.models import Store
from migrate.phases.runner import PREPARE_PHASES, STAGE_PHASES, refuse_if_rolling_back
from migrate.phases.volume_guard import GUARD_LABEL, GUARD_NOTE
from migrate.support.sizes import human_bytes


@dataclass(frozen=True)
class HostNow:
    """What the host says now; None where it could not tell (daemon down)."""

    store: str | None = None
    volume_guard: bool | None = None
    archive_bytes: int = 0
    legacy_pruned: bool = False


def read_host(opts: GlobalOptions, state_dir: StateDir) -> HostNow:
    archives = state_dir.archives_dir
    size = sum(p.stat().st_size for p in archives.iterdir()
               if p.is_file() and p.name != MANIFEST_NAME) if archives.is_dir() else 0
    pruned = state_dir.legacy_pruned_path.exists()
    try:
        with connect(opts) as engine:
            store = engine.info().store
            guard = bool(engine.containers_with_label(GUARD_LABEL))
    except MigrateError:
        return HostNow(archive_bytes=size, legacy_pruned=pruned)
    return HostNow(store.value, guard, size, pruned)


def _duration(phase: PhaseState) -> float | None:
    if phase.started_at is None or phase.finished_at is None:
        return None
    return round((phase.finished_at - phase.started_at).total_seconds(), 1)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _iso(moment: datetime | None) -> str | None:
    return moment.replace(microsecond=0).isoformat() if moment else None


def _remaining(state: JournalState) -> list[str]:
    """Phases not done yet; a done snapshot/export that `run` refreshes is not listed."""
    if state.migration_id is None:
        return []
    try:
        refuse_if_rolling_back(state)
    except StateError:  # half rolled back: nothing runs forward until rollback ends
        return []
    # An opt-in phase (stage) never started is not part of this migration.
    return [name for name in PHASE_ORDER if state.phase(name).status != "done"
            and not (name in OPT_IN_PHASES and state.phase(name).status == "pending")]


def _half_rolled_back(state: JournalState) -> bool:
    return any(p.status == "undone" or p.undo_error for p in state.phases)


def next_step(state: JournalState, host: HostNow) -> str:
    """The operator's next command, as it can be typed (pure)."""
    if state.last_migration_id is None:
        return "next: `containerd-migrate plan` (dry run), then `containerd-migrate run`"
    if host.legacy_pruned:
        return "nothing left to do: the legacy data was pruned (no rollback any more)"
    if state.migration_id is not None:
        if _half_rolled_back(state):
            return "next: finish the rollback with `containerd-migrate rollback`"
        staged_only = all(state.phase(p).status == "done" for p in STAGE_PHASES) and \
            state.phase("quiesce").status == "pending"
        if staged_only:
            return ("next, in the maintenance window: `containerd-migrate run` (it stages "
                    "only what changed, then switches)")
        prepared_only = all(state.phase(p).status == "done" for p in PREPARE_PHASES) and \
            state.phase("quiesce").status == "pending"
        if prepared_only:
            return ("next, in the maintenance window: `containerd-migrate run` (it refreshes "
                    "the snapshot and exports only what changed)")
        return ("next: resume with `containerd-migrate run`, or undo with "
                "`containerd-migrate rollback`")
    if state.outcome == "rolled_back":
        if state.phase("stage").status in ("done", "undone") and not host.archive_bytes:
            return ("next: `containerd-migrate cleanup` removes the staged images from the "
                    "containerd store, or `containerd-migrate run` migrates again")
        if host.archive_bytes:
            return (f"next: `containerd-migrate cleanup` deletes the archives "
                    f"({human_bytes(host.archive_bytes)}), or `containerd-migrate run` "
                    "migrates again and reuses them")
        return "next: `containerd-migrate plan` when you want to migrate again"
    if host.store == Store.LEGACY.value:
        return ("the daemon is on the legacy store now although the migration completed: "
                "`containerd-migrate rollback` restores the journaled daemon.json, or "
                "`containerd-migrate run` after fixing daemon.json by hand")
    hidden_count = (state.phase("quiesce").result or {}).get("containers")
    hidden = hidden_count if isinstance(hidden_count, int) else 0
    containers = (f"recreate the {hidden} container(s) left hidden in the legacy store on "
                  "the new store (e.g. `docker compose up -d`); " if hidden else "")
    if host.archive_bytes or host.volume_guard:
        return (f"next: {containers}once you are happy, `containerd-migrate cleanup` "
                "(or undo with `containerd-migrate rollback`)")
    return (f"next: {containers}nothing else to do; `containerd-migrate cleanup "
            "--prune-legacy --yes` reclaims the legacy data (no rollback after it)")


def _guard_active(state: JournalState, host: HostNow) -> bool:
    if host.volume_guard is not None:
        return host.volume_guard
    verify = state.phase("verify")
    recreate = state.phase("recreate")
    if recreate.status == "done" and not (recreate.result or {}).get("volume_guard", True):
        return False  # the recreated containers use their volumes again: guard removed
    return state.outcome != "rolled_back" and verify.status == "done" and bool(
        (verify.result or {}).get("volume_guard"))


def status_document(state: JournalState, host: HostNow | None = None) -> dict[str, Any]:
    """The status as plain data (pure), for both the JSON and the text form."""
    host = host or HostNow()
    undo = [p.name for p in state.phases_to_undo()] \
        if state.outcome != "rolled_back" and not host.legacy_pruned else []
    return {
        "migration_id": state.last_migration_id,
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
        "remaining": _remaining(state),
        "rollback_would_undo": undo,
        "volume_guard": _guard_active(state, host),
        "store_now": host.store,
        "archive_bytes": host.archive_bytes,
        "next": next_step(state, host),
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
    if doc["store_now"]:
        lines.append(f"daemon now: {doc['store_now']} image store")
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


def status(opts: GlobalOptions, fmt: str = "text") -> int:
    state_dir = StateDir(opts.state_dir).check_usable()
    state = replay(state_dir.journal_path)
    host = read_host(opts, state_dir) if state.last_migration_id else HostNow()
    doc = status_document(state, host)
    opts.console.emit(json.dumps(doc, indent=2) if fmt == "json" else render_status(doc, state))
    return int(ExitCode.OK)
