"""What `--containers recreate` will do with each container, and what it cannot carry (pure).

Shared by the plan (its listing and blockers) and the recreate phase (the order it creates
and starts containers in), so the plan predicts exactly what the run does.
"""

from __future__ import annotations

from collections.abc import Iterable

from migrate.models import ContainerRecord, Frozen, Inventory
from migrate.support.sizes import human_bytes

COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
COMPOSE_DEPENDS_LABEL = "com.docker.compose.depends_on"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
# Swarm manages its task containers itself; a recreated copy would be a stray.
SWARM_TASK_LABEL = "com.docker.swarm.task.id"


def _target(ref: str) -> str:
    """`name`, `/name`, `name:ro`, `/name:/me/alias` -> the container it names."""
    return ref.split(":", 1)[0].lstrip("/")


# HostConfig keys that can name another container as `container:<name or id>`: its network,
# IPC or PID namespace. The other container must exist (and run) first.
SHARED_NAMESPACE_KEYS = ("NetworkMode", "IpcMode", "PidMode")


def shared_namespaces(container: ContainerRecord) -> dict[str, str]:
    """HostConfig key -> the container whose namespace this one joins."""
    found = {}
    for key in SHARED_NAMESPACE_KEYS:
        mode = container.network_mode if key == "NetworkMode" else \
            str(container.host_config.get(key) or "")
        if mode.startswith("container:"):
            found[key] = mode.removeprefix("container:")
    return found


def peer_refs(container: ContainerRecord) -> list[str]:
    """The other containers this one names (by name or ID): links, volumes_from,
    `container:` network, IPC and PID namespaces."""
    refs = [_target(link) for link in container.links]
    refs += [_target(source) for source in container.volumes_from]
    refs += list(shared_namespaces(container).values())
    return refs


def volumes_from_sources(container: ContainerRecord, containers: Iterable[ContainerRecord],
                         ) -> frozenset[str]:
    """The volume names `container` has through `--volumes-from` (its sources' volumes)."""
    wanted = {_target(source) for source in container.volumes_from}
    return frozenset(mount.name for other in containers
                     if other.name in wanted or other.id in wanted or other.id[:12] in wanted
                     for mount in other.mounts if mount.type == "volume" and mount.name)


def dependencies(container: ContainerRecord, containers: Iterable[ContainerRecord],
                 ) -> set[str]:
    """IDs of the containers this one needs created (and started) before it."""
    by_ref: dict[str, str] = {}
    for other in containers:
        by_ref[other.name] = other.id
        by_ref[other.id] = other.id
        by_ref.setdefault(other.id[:12], other.id)
    needs = {by_ref[ref] for ref in peer_refs(container) if ref in by_ref}
    project = container.labels.get(COMPOSE_PROJECT_LABEL)
    wanted = {item.split(":", 1)[0] for item in
              container.labels.get(COMPOSE_DEPENDS_LABEL, "").split(",") if item}
    if project and wanted:
        needs |= {other.id for other in containers
                  if other.labels.get(COMPOSE_PROJECT_LABEL) == project
                  and other.labels.get(COMPOSE_SERVICE_LABEL) in wanted}
    needs.discard(container.id)
    return needs


def dependency_levels(containers: Iterable[ContainerRecord]) -> list[list[ContainerRecord]]:
    """Containers in levels: each one needs only containers of earlier levels, so a level
    can be created, started (or, in reverse, stopped) all at once. By name within a level;
    a cycle (the engine would not have allowed it) goes on one container at a time, in
    name order, rather than failing."""
    pending = sorted(containers, key=lambda c: c.name)
    needs = {c.id: dependencies(c, pending) for c in pending}
    done: set[str] = set()
    levels: list[list[ContainerRecord]] = []
    while pending:
        ready = [c for c in pending if needs[c.id] <= done] or pending[:1]
        levels.append(ready)
        done.update(c.id for c in ready)
        pending = [c for c in pending if c.id not in done]
    return levels


def creation_order(containers: Iterable[ContainerRecord]) -> list[ContainerRecord]:
    """Dependencies first, otherwise by name (the levels one after the other)."""
    return [c for level in dependency_levels(containers) for c in level]


# dockerd's stop timeout for a container that sets none (`docker stop` without -t).
DAEMON_STOP_TIMEOUT = 10


def stop_timeout(container: ContainerRecord, default: int = DAEMON_STOP_TIMEOUT) -> int:
    """Seconds a stop waits after SIGTERM before SIGKILL: the container's own StopTimeout
    (`docker run --stop-timeout`, compose `stop_grace_period`), else `default`. A negative
    one (wait forever) is not honoured: the window must end."""
    value = container.config.get("StopTimeout")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return default


def commits_layer(container: ContainerRecord) -> bool:
    """Committed unless the diff was read and empty: an unreadable diff may hide changes."""
    return container.has_changes is not False


def commit_bytes(inventory: Inventory, policy: str) -> int:
    """What `--containers recreate` commits of the writable layers (0 under other policies)."""
    if policy != "recreate":
        return 0
    return sum(c.writable_layer.size_bytes for c in inventory.containers
               if commits_layer(c) and c.writable_layer is not None)


class ContainerPlan(Frozen):
    """One container under `--containers recreate`: what happens to it, or why it cannot."""

    name: str
    state: str
    actions: tuple[str, ...] = ()
    # Why recreate cannot carry it faithfully; each one blocks the plan.
    blockers: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.name} ({self.state}): {'; '.join(self.blockers or self.actions)}"


def _names(containers: Iterable[ContainerRecord], ids: Iterable[str]) -> str:
    by_id = {c.id: c.name for c in containers}
    return ", ".join(sorted(by_id.get(i, i[:12]) for i in ids))


def _missing_peers(container: ContainerRecord, containers: tuple[ContainerRecord, ...],
                   ) -> list[str]:
    known = {c.name for c in containers} | {c.id for c in containers}
    known |= {c.id[:12] for c in containers}
    return [ref for ref in peer_refs(container) if ref not in known]


def removed_by_stop(container: ContainerRecord) -> str | None:
    """Why stopping this container for the switch loses it (any policy that stops it)."""
    if container.auto_remove and container.running:
        return ("it runs with --rm (auto-remove): stopping it for the switch would delete it "
                "and its anonymous volumes")
    return None


def is_swarm_task(container: ContainerRecord) -> bool:
    return SWARM_TASK_LABEL in container.labels


def _blockers(container: ContainerRecord, inventory: Inventory) -> list[str]:
    found: list[str] = []
    if not container.detailed:
        found.append("its configuration could not be read (inspect failed)")
        return found
    if container.image_id not in {image.id for image in inventory.images}:
        found.append(f"its image {container.image_id[:19]} is not among the images to move")
    missing = _missing_peers(container, inventory.containers)
    if missing:
        found.append(f"it needs container(s) {', '.join(missing)}, which do not exist")
    removed = removed_by_stop(container)
    if removed:
        found.append(removed)
    if is_swarm_task(container):
        found.append("it is a swarm task: swarm, not recreate, must place it")
    return found


def _actions(container: ContainerRecord, inventory: Inventory) -> list[str]:
    actions = [f"create from {container.image}"]
    layer = container.writable_layer
    if layer is not None and layer.paths:
        actions.append(f"commit its writable layer first ({layer.added} added, {layer.changed} "
                       f"changed, {layer.deleted} deleted, {human_bytes(layer.size_bytes)})")
    elif layer is None and commits_layer(container):
        actions.append("commit its writable layer first (docker diff was unreadable)")
    volumes = [m.name for m in container.mounts if m.type == "volume" and m.name]
    binds = [m.source for m in container.mounts if m.type == "bind"]
    if volumes:
        actions.append(f"mount the same volume(s) {', '.join(volumes)}")
    if binds:
        actions.append(f"bind {', '.join(binds)}")
    for net in container.networks:
        extra = [f"aliases {', '.join(a for a in net.aliases if a != container.id[:12])}"
                 if [a for a in net.aliases if a != container.id[:12]] else "",
                 f"IP {net.ipv4_address}" if net.ipv4_address else ""]
        actions.append(f"attach to {net.network}" + "".join(f", {e}" for e in extra if e))
    if container.network_mode.startswith("container:"):
        actions.append(f"share the network of {container.network_mode.removeprefix('container:')}")
    needs = dependencies(container, inventory.containers)
    if needs:
        actions.append(f"after {_names(inventory.containers, needs)}")
    actions.append(_fate(container))
    return actions


# Not carried by recreate, whatever the container: said before the window, not found after.
EMPTY_LOGS = "`docker logs` starts empty (the old log stays with the legacy container)"


def _fate(container: ContainerRecord) -> str:
    if container.running:
        return f"start it; {EMPTY_LOGS}"
    if container.state == "created":
        return "leave it created (not started)"
    # The engine has no way to create a container as exited: its exit code and finish time
    # stay with the legacy one.
    return (f"leave it created, not started: it comes back as created, not {container.state}"
            f" (its exit code is not carried); {EMPTY_LOGS}")


def recreate_plan(inventory: Inventory) -> tuple[ContainerPlan, ...]:
    """Every container in the order recreate creates them."""
    return tuple(
        ContainerPlan(name=c.name, state=c.state, actions=tuple(_actions(c, inventory)),
                      blockers=tuple(_blockers(c, inventory)))
        for c in creation_order(inventory.containers)
    )
