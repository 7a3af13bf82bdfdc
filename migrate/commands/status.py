"""`containerd-migrate status`: where the migration stands, and what rollback would undo."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from migrate.commands.context import GlobalOptions
from migrate.errors import ExitCode, StateError
from migrate.journal import JournalState, PhaseState, replay
from migrate.journal.state_dir import StateDir
from migrate.phases.runner import steps_to_run
from migrate.phases.volume_guard import GUARD_NOTE


def _duration(phase: PhaseState) -> float | None:
    if phase.started_at is None or phase.finished_at is None:
        return None
    return round((phase.finished_at - phase.started_at).total_seconds(), 1)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def status_document(state: JournalState) -> dict[str, Any]:
    """The status as plain data (pure), for both the JSON and the text form."""
    remaining: list[str] = []
    if state.migration_id is not None:
        try:
            remaining = list(steps_to_run(state))
        except StateError:  # half rolled back: nothing runs forward until rollback ends
            remaining = []
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
                "started_at": p.started_at.isoformat() if p.started_at else None,
                "finished_at": p.finished_at.isoformat() if p.finished_at else None,
                "seconds": _duration(p),
                "result": p.result or {},
                "error": p.error,
            }
            for p in state.phases
        ],
        "remaining": remaining,
        "rollback_would_undo": [p.name for p in state.phases_to_undo()]
        if state.outcome != "rolled_back" else [],
        "volume_guard": _guard_active(state),
    }


def _guard_active(state: JournalState) -> bool:
    verify = state.phase("verify")
    return state.outcome != "rolled_back" and verify.status == "done" and bool(
        (verify.result or {}).get("volume_guard"))


def _result_summary(result: dict[str, Any]) -> str:
    keys = ("images", "tags", "written", "reused", "bytes_written", "loaded", "skipped",
            "bytes_loaded", "stopped", "restarted", "store", "rewritten", "staged", "staged_now",
            "bytes_streamed", "disk_bytes")
    return ", ".join(f"{k}={result[k]}" for k in keys if k in result)


def render_status(doc: dict[str, Any], state: JournalState) -> str:
    if doc["migration_id"] is None:
        return "no migration has been started with this state dir"
    head = "in progress" if doc["active"] else f"finished: {doc['outcome']}"
    lines = [f"migration {doc['migration_id']} ({head}, {doc['runs']} run(s))", ""]
    lines.append(f"{'phase':<9} {'status':<12} {'started':<19} {'finished':<19} {'secs':>6}  "
                 "result")
    for phase in state.phases:
        secs = _duration(phase)
        lines.append(
            f"{phase.name:<9} {phase.status:<12} {_when(phase.started_at):<19} "
            f"{_when(phase.finished_at):<19} {secs if secs is not None else '-':>6}  "
            f"{_result_summary(phase.result or {}) or (phase.error or '')}"
        )
    lines.append("")
    if doc["active"]:
        lines.append(f"remaining: {', '.join(doc['remaining']) or 'nothing (finishing)'}")
    if doc["rollback_would_undo"]:
        lines.append(f"rollback would undo: {', '.join(doc['rollback_would_undo'])}")
    if doc["volume_guard"]:
        lines.append(GUARD_NOTE)
    if doc["torn_tail"]:
        lines.append("note: the journal's last record was torn (a crash); it is ignored")
    return "\n".join(lines)


def status(opts: GlobalOptions, fmt: str = "text") -> int:
    state_dir = StateDir(opts.state_dir)
    state = replay(state_dir.journal_path)
    doc = status_document(state)
    opts.console.emit(json.dumps(doc, indent=2) if fmt == "json" else render_status(doc, state))
    return int(ExitCode.OK)
