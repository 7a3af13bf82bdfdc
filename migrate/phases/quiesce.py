"""Phase "quiesce": stop running containers deliberately before the daemon restarts.

Without live-restore a restart kills them anyway; with live-restore they would survive
as invisible orphans in containerd mode (docs/engine-facts.md). Stopping them gracefully
first gives them their stop timeout, and the journal remembers whom to start again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from migrate.engine import Engine
from migrate.errors import BlockedError, EngineError, MigrateError
from migrate.models import RUNNING_STATES, ContainerRecord, Inventory
from migrate.phases.base import Phase, PhaseContext, PhaseOutcome, UndoContext, UndoReport
from migrate.phases.records import QuiescedContainer, QuiesceResult, QuiesceUndo, RecordModel
from migrate.preflight.containers import dependency_levels, stop_timeout
from migrate.support.pool import Workers, serialised


class QuiesceIntent(RecordModel):
    containers: tuple[QuiescedContainer, ...] = ()
    stop_timeout: int = 10
    policy: str | None = None


def _entry(container: ContainerRecord, levels: dict[str, int], default_timeout: int,
           ) -> QuiescedContainer:
    return QuiescedContainer(id=container.id, name=container.name, state=container.state,
                             level=levels.get(container.id, 0),
                             stop_timeout=stop_timeout(container, default_timeout))


def _levels(containers: tuple[ContainerRecord, ...], live: tuple[ContainerRecord, ...],
            ) -> dict[str, int]:
    """Container ID -> its dependency level (0: needs no other container), from the
    snapshot and whatever the live view adds."""
    known = {c.id for c in containers}
    every = [*containers, *(c for c in live if c.id not in known)]
    return {c.id: n for n, level in enumerate(dependency_levels(every)) for c in level}


def _to_stop(ctx: PhaseContext, live: tuple[ContainerRecord, ...]) -> list[QuiescedContainer]:
    """Running containers by snapshot OR live view, so a resumed run still knows the ones
    it already stopped (the live engine shows them as exited by then)."""
    found: dict[str, QuiescedContainer] = {}
    containers = ctx.load_inventory().containers if ctx.inventory_path.exists() else ()
    levels = _levels(containers, live)
    if containers:
        for container in containers:
            if container.state in RUNNING_STATES:
                found[container.id] = _entry(container, levels, ctx.options.stop_timeout)
    for container in live:
        if container.state in RUNNING_STATES:
            found.setdefault(container.id,
                             _entry(container, levels, ctx.options.stop_timeout))
    for data in ctx.previous_progress:
        stopped = data.get("stopped")
        if isinstance(stopped, dict) and stopped.get("id"):
            # Keeps when it stopped (the live view shows it exited by now).
            known = found.get(str(stopped["id"]))
            found[str(stopped["id"])] = QuiescedContainer.model_validate(
                {**(known.model_dump() if known else {}), **stopped})
    # In creation order (what a container depends on first): the run stops them level by
    # level in reverse, dependents before what they join or link to, and the undo starts
    # them level by level in this order.
    return sorted(found.values(), key=lambda c: (levels.get(c.id, 0), c.name))


def in_levels(entries: Iterable[QuiescedContainer]) -> list[list[QuiescedContainer]]:
    """Entries (in creation order) grouped by their level; an entry without one (journaled
    by 0.1.0) is a level of its own, so it keeps the order it was recorded in."""
    grouped: list[list[QuiescedContainer]] = []
    for entry in entries:
        if grouped and entry.level is not None and grouped[-1][-1].level == entry.level:
            grouped[-1].append(entry)
        else:
            grouped.append([entry])
    return grouped


def _names(entries: Iterable[QuiescedContainer]) -> str:
    return ", ".join(e.name for e in entries)


def _entries(ctx: PhaseContext, live: tuple[ContainerRecord, ...]) -> list[QuiescedContainer]:
    if ctx.options.containers == "refuse":
        # Planning blocks earlier; this guards a host that changed since the plan.
        running = [_entry(c, {}, ctx.options.stop_timeout) for c in live
                   if c.state in RUNNING_STATES]
        if running:
            raise BlockedError(
                f"{len(running)} container(s) are running: {_names(running)}",
                "pass --containers recreate to have them recreated in the containerd store, "
                "or --containers leave to have them stopped now and started again on rollback "
                "(they stay hidden in containerd mode), or stop them yourself",
            )
        return []
    return _to_stop(ctx, live)


class HostChanged(BlockedError):
    """Images, tags or containers appeared after the snapshot, while the migration was
    preparing: switching now would leave them behind in the hidden legacy store."""


def changed_since_snapshot(inventory: Inventory, images: dict[str, tuple[str, ...]],
                           containers: Iterable[ContainerRecord]) -> list[str]:
    """What the live legacy store holds that the snapshot does not (pure): images built or
    pulled, tags added or moved, containers created. Removals lose nothing: not listed."""
    known_images = {image.id for image in inventory.images}
    known_tags = {(tag, image.id) for image in inventory.images for tag in image.tags}
    known_containers = {container.id for container in inventory.containers}
    changes = [f"image {tags[0] if tags else image_id[:19]} (new since the snapshot)"
               for image_id, tags in sorted(images.items()) if image_id not in known_images]
    changes += [f"tag {tag} (added or moved)" for image_id, tags in sorted(images.items())
                if image_id in known_images for tag in tags if (tag, image_id) not in known_tags]
    changes += [f"container {c.name} (created since the snapshot)" for c in containers
                if c.id not in known_containers]
    return changes


def _refuse_if_changed(ctx: PhaseContext, engine: Engine) -> None:
    if not ctx.inventory_path.exists():
        return
    changes = changed_since_snapshot(ctx.load_inventory(), engine.image_tags(),
                                     engine.list_containers(details=False))
    if changes:
        raise HostChanged(
            f"the host changed while the migration was preparing: {'; '.join(changes[:8])}"
            + (f" and {len(changes) - 8} more" if len(changes) > 8 else "")
            + "; switching now would leave them behind",
            "run the same command again: a new snapshot takes them in (archives and staged "
            "images already done are reused)")


def _start_again(engine: Engine, entry: QuiescedContainer) -> UndoReport:
    label = f"{entry.name} ({entry.id[:12]})"
    try:
        engine.start_container(entry.id)
        if entry.state == "paused":
            engine.pause_container(entry.id)
            return UndoReport.done(f"quiesce: started container {label} and paused it again")
    except EngineError as error:
        # One container that no longer starts must not stop the others from starting.
        return UndoReport.failure(f"quiesce: could not start container {label}: "
                                  f"{error.message}")
    return UndoReport.done(f"quiesce: started container {label}")


class QuiescePhase(Phase[QuiesceIntent, QuiesceUndo, QuiesceResult]):
    name = "quiesce"
    undo_model = QuiesceUndo
    result_model = QuiesceResult

    def intent(self, ctx: PhaseContext) -> QuiesceIntent:
        with ctx.connect() as engine:
            entries = _entries(ctx, engine.list_containers(details=False))
        return QuiesceIntent(containers=tuple(entries), stop_timeout=ctx.options.stop_timeout,
                             policy=ctx.options.containers)

    def run(self, ctx: PhaseContext) -> PhaseOutcome[QuiesceUndo, QuiesceResult]:
        stopped: list[QuiescedContainer] = []
        checkpoint = serialised(ctx.checkpoint)
        # One engine for every worker: each thread gets its own connection (engine/client.py).
        with ctx.connect() as engine, Workers() as pool:
            live = engine.list_containers(details=False)
            entries = _entries(ctx, live)
            states = {c.id: c.state for c in live}

            def stop(entry: QuiescedContainer) -> QuiescedContainer | None:
                if states.get(entry.id) not in RUNNING_STATES:
                    return None  # already stopped (resume) or removed by someone
                # Its own stop timeout, as `docker stop` gives it: what it needs to shut
                # down cleanly (the plan's estimate bounds the stop with the same figures).
                engine.stop_container(entry.id, timeout=ctx.options.stop_timeout
                                      if entry.stop_timeout is None else entry.stop_timeout)
                done = entry.model_copy(update={"stopped_at": datetime.now(UTC).isoformat()})
                checkpoint({"stopped": done.to_json()})
                return done

            # A level at once (each one waits out its own stop timeout, not the sum of
            # all), dependents before what they depend on.
            for level in reversed(in_levels(entries)):
                stopped += [done for done in pool.all(stop, level) if done]
            # Nothing changes any more once the containers are stopped: what appeared while
            # the migration prepared (a build, a tag, a container) is caught before the switch.
            # The runner then rolls back, which starts the stopped containers again.
            _refuse_if_changed(ctx, engine)
        now = {e.id: e for e in stopped}
        entries = [now.get(e.id, e) for e in entries]
        # When each one stopped: recreate measures every container's downtime from here.
        stopped_at = {e.id: e.stopped_at for e in entries if e.stopped_at}
        return PhaseOutcome(
            QuiesceUndo(containers=tuple(entries), policy=ctx.options.containers),
            QuiesceResult(stopped=tuple(e.name for e in stopped), containers=len(entries),
                          stopped_at=stopped_at))

    def undo(self, ctx: UndoContext, record: QuiesceUndo) -> UndoReport:
        entries = record.containers
        if not entries:
            return UndoReport.done("quiesce: no containers were stopped, nothing to start")
        report = UndoReport()
        try:
            with ctx.connect() as engine, Workers() as pool:
                # Level by level in creation order: what others join starts first.
                for level in in_levels(entries):
                    for done in pool.all(lambda entry: _start_again(engine, entry), level):
                        report += done
        except MigrateError as error:
            return report + UndoReport.failure(f"quiesce: could not start {_names(entries)}: "
                                               f"{error.message}")
        return report


PHASE = QuiescePhase()
