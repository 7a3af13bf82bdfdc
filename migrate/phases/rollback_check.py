"""After a rollback: is everything the snapshot saw visible again on the legacy store?"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from migrate.engine.client import Engine
from migrate.models import ContainerRecord, Inventory, Store
from migrate.preflight.containers import is_swarm_task


def check_restored(engine: Engine, inventory: Inventory | None) -> tuple[list[str], list[str]]:
    """Returns (what was checked and is fine, problems)."""
    info = engine.info()
    ok: list[str] = []
    problems: list[str] = []
    if info.store is Store.LEGACY:
        ok.append(f"daemon answers on the legacy store (driver {info.driver})")
    else:
        problems.append(f"daemon runs on the {info.store} store, not legacy")
    if inventory is None:
        return ok, problems
    missing_images = []
    for image in inventory.images:
        found = engine.inspect_image(image.id, sizes=False)
        if found is None:
            missing_images.append(image.id)
            continue
        lost = set(image.tags) - set(found.tags)
        if lost:
            problems.append(f"image {image.id[:19]} lost tag(s) {', '.join(sorted(lost))}")
    if missing_images:
        problems.append(f"{len(missing_images)} image(s) missing: {', '.join(missing_images)}")
    else:
        ok.append(f"all {len(inventory.images)} image(s) present by ID, "
                  f"{len(inventory.tags)} tag(s) checked")
    fine, wrong = containers_restored(inventory.containers,
                                      engine.list_containers(details=False))
    ok += fine
    problems += wrong
    live_volumes = {v.name for v in engine.list_volumes()}
    missing_volumes = [v.name for v in inventory.volumes if v.name not in live_volumes]
    if missing_volumes:
        problems.append(f"volume(s) missing: {', '.join(missing_volumes)}")
    elif inventory.volumes:
        ok.append(f"all {len(inventory.volumes)} volume(s) present")
    return ok, problems


def containers_restored(expected: Sequence[ContainerRecord], now: Iterable[ContainerRecord],
                        ) -> tuple[list[str], list[str]]:
    """(fine, problems) of the containers the snapshot saw, against the live ones (pure).

    Swarm task containers are left out: swarm owns them and replaces a stopped task, so
    one gone or not running is swarm's doing, not a failed restore.
    """
    live = {c.id: c for c in now}
    tasks = [c.name for c in expected if is_swarm_task(c)]
    ours = [c for c in expected if not is_swarm_task(c)]
    ok: list[str] = []
    problems: list[str] = []
    missing = [c.name for c in ours if c.id not in live]
    not_running = [c.name for c in ours if c.running and c.id in live and not live[c.id].running]
    if missing:
        problems.append(f"container(s) missing: {', '.join(missing)}")
    elif ours:
        ok.append(f"all {len(ours)} container(s) present")
    if not_running:
        problems.append(f"container(s) running before but not now: {', '.join(not_running)}")
    if tasks:
        ok.append(f"swarm task(s) left to swarm, not checked: {', '.join(tasks)}")
    return ok, problems


def created_since_switch(engine: Engine, ours: Iterable[str]) -> list[ContainerRecord]:
    """Containers in the containerd store that no phase of the migration made (a label in
    `ours` marks those that one did): someone created them after the switch."""
    labels = tuple(ours)
    if engine.info().store is not Store.CONTAINERD:
        return []
    return [c for c in engine.list_containers(details=False)
            if not any(label in c.labels for label in labels)]
