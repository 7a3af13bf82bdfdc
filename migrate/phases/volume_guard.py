"""Protect volumes that only hidden legacy containers use.

In the containerd store those containers are invisible, so their volumes look unused and
`docker volume prune` would delete them, breaking the rollback. A stopped, labelled
container in the new store that mounts them keeps them "in use" until cleanup/rollback.
"""

from __future__ import annotations

from migrate.engine.client import Engine
from migrate.errors import EngineError
from migrate.models import Inventory

GUARD_LABEL = "io.containerd-migrate.volume-guard"
GUARD_NAME = "containerd-migrate-volume-guard"
GUARD_NOTE = (
    f"volume guard: container {GUARD_NAME} (stopped) keeps the volumes of hidden legacy "
    "containers in use so `docker volume prune` cannot delete them; `containerd-migrate "
    "cleanup` or `containerd-migrate rollback` removes it"
)


def guarded_volumes(inventory: Inventory, exclude: frozenset[str] = frozenset(),
                    ) -> tuple[str, ...]:
    """Named local volumes that some snapshotted container mounts, leaving out the
    containers in `exclude` (IDs): recreated ones keep their volumes in use themselves."""
    used = {m.name for c in inventory.containers if c.id not in exclude for m in c.mounts
            if m.type == "volume"}
    return tuple(sorted(v.name for v in inventory.volumes if v.name in used))


def create_guard(engine: Engine, inventory: Inventory, image: str) -> tuple[str, ...]:
    volumes = guarded_volumes(inventory)
    if not volumes or not image:
        return ()
    remove_guard(engine)
    engine.create_container(image, name=GUARD_NAME, labels={GUARD_LABEL: "1"}, volumes=volumes)
    return volumes


def remove_guard(engine: Engine) -> int:
    removed = 0
    for container in engine.containers_with_label(GUARD_LABEL):
        try:
            engine.remove_container(container, force=True)
            removed += 1
        except EngineError:
            pass
    return removed
