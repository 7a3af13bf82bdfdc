"""Phase "quiesce": stop running containers deliberately before the daemon restarts.

Without live-restore a restart kills them anyway; with live-restore they would survive
as invisible orphans in containerd mode (docs/engine-facts.md). Stopping them gracefully
first gives them their stop timeout, and the journal remembers whom to start again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from migrate.engine import Engine
from migrate.errors import BlockedError, EngineError, MigrateError
from migrate.models import RUNNING_STATES, ContainerRecord
from migrate.phases.base import JSONDict, Phase, PhaseContext, PhaseOutcome, UndoContext, UndoReport
from migrate.preflight.containers import creation_order


def _entry(container: ContainerRecord) -> JSONDict:
    return {"id": container.id, "name": container.name, "state": container.state}


def _to_stop(ctx: PhaseContext, live: tuple[ContainerRecord, ...]) -> list[JSONDict]:
    """Running containers by snapshot OR live view, so a resumed run still knows the ones
    it already stopped (the live engine shows them as exited by then)."""
    found: dict[str, JSONDict] = {}
    order: dict[str, int] = {}
    if ctx.inventory_path.exists():
        containers = ctx.load_inventory().containers
        order = {c.id: i for i, c in enumerate(creation_order(containers))}
        for container in containers:
            if container.state in RUNNING_STATES:
                found[container.id] = _entry(container)
    for container in live:
        if container.state in RUNNING_STATES:
            found.setdefault(container.id, _entry(container))
    for data in ctx.previous_progress:
        stopped = data.get("stopped")
        if isinstance(stopped, dict) and stopped.get("id"):
            # Keeps when it stopped (the live view shows it exited by now).
            found.setdefault(str(stopped["id"]), {}).update(stopped)
    # In creation order (what a container depends on first): the run stops them in reverse,
    # dependents before what they join or link to, and the undo starts them in this order.
    return sorted(found.values(), key=lambda c: (order.get(str(c["id"]), len(order)),
                                                 str(c["name"])))


def _names(entries: list[JSONDict]) -> str:
    return ", ".join(str(e["name"]) for e in entries)


def _entries(ctx: PhaseContext, live: tuple[ContainerRecord, ...]) -> list[JSONDict]:
    if ctx.options.containers == "refuse":
        # Planning blocks earlier; this guards a host that changed since the plan.
        running = [_entry(c) for c in live if c.state in RUNNING_STATES]
        if running:
            raise BlockedError(
                f"{len(running)} container(s) are running: {_names(running)}",
                "pass --containers recreate to have them recreated in the containerd store, "
                "or --containers leave to have them stopped now and started again on rollback "
                "(they stay hidden in containerd mode), or stop them yourself",
            )
        return []
    return _to_stop(ctx, live)


def _start_again(engine: Engine, entry: JSONDict) -> UndoReport:
    label = f"{entry.get('name')} ({str(entry.get('id'))[:12]})"
    try:
        engine.start_container(str(entry["id"]))
        if entry.get("state") == "paused":
            engine.pause_container(str(entry["id"]))
            return UndoReport.done(f"quiesce: started container {label} and paused it again")
    except EngineError as error:
        # One container that no longer starts must not stop the others from starting.
        return UndoReport.failure(f"quiesce: could not start container {label}: "
                                  f"{error.message}")
    return UndoReport.done(f"quiesce: started container {label}")


class QuiescePhase(Phase):
    name = "quiesce"

    def intent(self, ctx: PhaseContext) -> JSONDict:
        with ctx.connect() as engine:
            entries = _entries(ctx, engine.list_containers(details=False))
        return {"containers": entries, "stop_timeout": ctx.options.stop_timeout,
                "policy": ctx.options.containers}

    def run(self, ctx: PhaseContext) -> PhaseOutcome:
        stopped: list[str] = []
        with ctx.connect() as engine:
            live = engine.list_containers(details=False)
            entries = _entries(ctx, live)
            states = {c.id: c.state for c in live}
            for entry in reversed(entries):
                container_id = str(entry["id"])
                if states.get(container_id) not in RUNNING_STATES:
                    continue  # already stopped (resume) or removed by someone: nothing to do
                engine.stop_container(container_id, timeout=ctx.options.stop_timeout)
                entry["stopped_at"] = datetime.now(UTC).isoformat()
                ctx.checkpoint({"stopped": entry})
                stopped.append(str(entry["name"]))
        # When each one stopped: recreate measures every container's downtime from here.
        stopped_at = {str(e["id"]): e["stopped_at"] for e in entries if e.get("stopped_at")}
        return PhaseOutcome(
            undo={"containers": entries, "policy": ctx.options.containers},
            result={"stopped": stopped, "containers": len(entries), "stopped_at": stopped_at},
        )

    def undo(self, ctx: UndoContext, record: JSONDict) -> UndoReport:
        entries: list[dict[str, Any]] = list(record.get("containers") or [])
        if not entries:
            return UndoReport.done("quiesce: no containers were stopped, nothing to start")
        report = UndoReport()
        try:
            with ctx.connect() as engine:
                for entry in entries:  # creation order: what others join starts first
                    report += _start_again(engine, entry)
        except MigrateError as error:
            return report + UndoReport.failure(f"quiesce: could not start {_names(entries)}: "
                                               f"{error.message}")
        return report


PHASE = QuiescePhase()
