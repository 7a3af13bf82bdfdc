"""Phase "recreate": the snapshotted containers again, in the verified containerd store.

With `--containers recreate` every container of the snapshot is created again from its
recorded inspect (Config, HostConfig, network attachments) under its own name, from its
image's new ID (or from the commit of its writable layer), mounting the SAME volumes:
named ones by name, anonymous ones too, as a mount of the same volume (a fresh anonymous
volume would be empty). Networks are shared by both stores, so the container attaches to
the same user-defined networks with the same aliases and static addresses. Containers
that were running are started again, in an order that respects links,
`network_mode: container:`, `volumes_from` and compose `depends_on`; the others are left
created. A dependency level at a time, each level's containers are created and started
at once on a bounded pool (support/pool.py), the first stopped first: every container's
downtime is then about the restart, not the restart plus its place in a queue. Settings
that name another container by ID get the new ID, and compose's image label gets the new
image ID, so `docker compose up -d` finds nothing to change. Verify's multi-platform check
runs here, after the last start, when containers waited (base.PhaseContext.containers_wait).

Every create and start is journaled before it happens, and each recreated container
carries `io.containerd-migrate.recreated-from=<old id>`: a resumed run finds what it
already created by name and label and never creates a duplicate; rollback removes exactly
those containers and nothing a user created.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migrate.engine import Engine
from migrate.errors import BlockedError, MigrateError, StateError
from migrate.journal.state_dir import StateDir
from migrate.models import RUNNING_STATES, ContainerRecord, Inventory, Store, is_commit_ref
from migrate.phases.base import (
    JSONDict,
    Phase,
    PhaseContext,
    PhaseOutcome,
    UndoContext,
    UndoReport,
    moved_image_ids_of,
)
from migrate.phases.platform_check import (
    check_multi_platform,
    multi_platform_status,
    report_check,
)
from migrate.phases.records import RecordModel, RecreatedEntry, RecreateResult, RecreateUndo
from migrate.phases.volume_guard import guarded_volumes, remove_guard
from migrate.preflight.containers import (
    creation_order,
    dependency_levels,
    shared_namespaces,
    volumes_from_sources,
)
from migrate.support import failpoints
from migrate.support.logconfig import get_logger
from migrate.support.pool import Workers, serialised

log = get_logger(__name__)

RECREATED_LABEL = "io.containerd-migrate.recreated-from"
# The migration that created it: a resumed run adopts only its own migration's containers,
# never a stale one an earlier migration's rollback could not remove (older data).
MIGRATION_LABEL = "io.containerd-migrate.migration"
COMPOSE_IMAGE_LABEL = "com.docker.compose.image"
CONTAINER_MAP = "container-map.json"
# Config keys the engine refuses next to `network_mode: container:` (it fills them from the
# other container); inspect nevertheless reports them.
_SHARED_NETWORK_KEYS = ("Hostname", "Domainname", "ExposedPorts", "MacAddress")


class RecreateFailed(MigrateError):
    pass


# --- pure: the request bodies ----------------------------------------------------------------

def _rewrite_ref(ref: str, new_ids: Mapping[str, str]) -> str:
    """A reference to another container by old ID -> the same by new ID (names stay)."""
    target, _, rest = ref.partition(":")
    new = new_ids.get(target) or next(
        (new for old, new in new_ids.items() if len(target) >= 12 and old.startswith(target)),
        None)
    return ref if new is None else f"{new}{':' if rest else ''}{rest}"


def _extra_volume_mounts(container: ContainerRecord,
                         inherited: frozenset[str] = frozenset()) -> list[JSONDict]:
    """Volume mounts that neither Binds nor Mounts name: anonymous volumes (image VOLUME,
    `-v /path`). Given again by name, so the new container mounts the same data. Volumes it
    has through `--volumes-from` (`inherited`) are not: VolumesFrom brings them again, with
    the source's mode, and an explicit mount next to it would change that mode."""
    host: dict[str, Any] = dict(container.host_config)
    named = {str(b).split(":")[1] for b in host.get("Binds") or () if isinstance(b, str)
             and ":" in b}
    named |= {str(m.get("Target")) for m in host.get("Mounts") or () if isinstance(m, dict)}
    return [{"Type": "volume", "Source": m.name, "Target": m.destination,
             "ReadOnly": not m.rw}
            for m in container.mounts
            if m.type == "volume" and m.name and m.destination not in named
            and m.name not in inherited]


def create_body(container: ContainerRecord, image: str, new_ids: Mapping[str, str],
                image_ids: Mapping[str, str], migration_id: str = "",
                inherited: frozenset[str] = frozenset()) -> JSONDict:
    """The `POST /containers/create` body that makes `container` again (pure).

    `new_ids` maps old container IDs to recreated ones (those created so far), `image_ids`
    old image IDs to new ones; `inherited` names the volumes it has via `--volumes-from`.
    """
    config: dict[str, Any] = dict(container.config)
    config["Image"] = image
    labels = {str(k): str(v) for k, v in (config.get("Labels") or {}).items()}
    if labels.get(COMPOSE_IMAGE_LABEL) in image_ids:
        labels[COMPOSE_IMAGE_LABEL] = image_ids[labels[COMPOSE_IMAGE_LABEL]]
    labels[RECREATED_LABEL] = container.id
    if migration_id:
        labels[MIGRATION_LABEL] = migration_id
    config["Labels"] = labels
    host: dict[str, Any] = dict(container.host_config)
    mode = container.network_mode
    # The namespaces it joins (network, IPC, PID) are the recreated owners', by new ID.
    for key, owner in shared_namespaces(container).items():
        host[key] = "container:" + _rewrite_ref(owner, new_ids)
    if mode.startswith("container:") or mode == "host":
        for key in _SHARED_NETWORK_KEYS:
            config.pop(key, None)
    host["VolumesFrom"] = [_rewrite_ref(v, new_ids) for v in container.volumes_from] or None
    mounts = [*(host.get("Mounts") or ()), *_extra_volume_mounts(container, inherited)]
    host["Mounts"] = mounts or None
    endpoints: dict[str, Any] = {}
    if not mode.startswith("container:") and mode not in ("host", "none"):
        short_id = container.id[:12]
        for attachment in container.networks:
            ipam = {k: v for k, v in (("IPv4Address", attachment.ipv4_address),
                                      ("IPv6Address", attachment.ipv6_address)) if v}
            endpoints[attachment.network] = {
                "IPAMConfig": ipam or None,
                # The engine adds the container's own (new) short ID itself.
                "Aliases": [a for a in attachment.aliases if a != short_id] or None,
                "Links": list(attachment.links) or None,
                "DriverOpts": attachment.driver_opts or None,
            }
    return {**config, "HostConfig": host, "NetworkingConfig": {"EndpointsConfig": endpoints}}


def first_stopped_first(level: Iterable[ContainerRecord], stopped_at: Mapping[str, str],
                        ) -> list[ContainerRecord]:
    """A dependency level in the order its containers were stopped (pure; ISO times in
    UTC): within a level nothing needs anything else, so the first one stopped comes back
    first and no container's downtime also holds the others' stops. Containers that were
    not running (no downtime) come last, by name."""
    return sorted(level, key=lambda c: (c.id not in stopped_at, stopped_at.get(c.id, ""),
                                        c.name))


def image_for(container: ContainerRecord, committed: Mapping[str, str],
              image_ids: Mapping[str, str]) -> str | None:
    """What to create the container from: its commit, else its image's new ID."""
    return committed.get(container.id) or image_ids.get(container.image_id)


# --- engine side ---------------------------------------------------------------------------

def _committed(ctx: PhaseContext) -> dict[str, str]:
    return {entry.container: entry.ref for entry in ctx.records.commit_undo.commits}


def _image_ref(engine: Engine, reference: str, image: str) -> str:
    """The user's own reference (the container's Config.Image) when it still names that
    image: it stays as it was (a tag that moved on since the container was created would
    name another image)."""
    if is_commit_ref(image):
        return image
    live = engine.raw_image(reference) if reference else None
    return reference if live is not None and live.get("Id") == image else image


def _progress(ctx: PhaseContext, key: str) -> dict[str, JSONDict]:
    found: dict[str, JSONDict] = {}
    for data in ctx.previous_progress:
        item = data.get(key)
        if isinstance(item, dict) and item.get("id"):
            found[str(item["id"])] = dict(item)
    return found


def _seconds(start: str | None, end: str) -> float | None:
    if not start:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(),
                 2)


class _Recreation:
    """One attempt at the phase: what exists already, what gets created and started."""

    def __init__(self, ctx: PhaseContext, engine: Engine, inventory: Inventory):
        self.ctx = ctx
        # Called from every worker: the journal writer is not thread-safe.
        self.checkpoint = serialised(ctx.checkpoint)
        self.engine = engine
        self.inventory = inventory
        # Staged images are moved images too (the lifecycle issue: stage + recreate).
        self.image_ids = moved_image_ids_of(ctx)
        self.committed = _committed(ctx)
        live = engine.list_containers(details=False)
        self.live = {c.name: c for c in live}
        # Old ID -> new ID; written between levels only (create_body reads it in workers).
        self.new_ids: dict[str, str] = {}
        self.started = _progress(ctx, "started")
        # Once per (reference, image): containers mostly share a few images, and every
        # inspect saved is daemon time every waiting container would spend.
        self.image_ref = functools.cache(functools.partial(_image_ref, engine))

    def _is_ours(self, live: ContainerRecord, container: ContainerRecord) -> bool:
        return live.labels.get(RECREATED_LABEL) == container.id and \
            live.labels.get(MIGRATION_LABEL) == self.ctx.migration_id

    def _ours(self, container: ContainerRecord) -> str | None:
        """The ID of `container` as this migration recreated it, if it exists by now."""
        try:
            live = self.engine.inspect_container(container.name)
        except MigrateError:
            return None
        return live.id if live is not None and self._is_ours(live, container) else None

    def create(self, container: ContainerRecord) -> tuple[str, bool]:
        """Its new ID, and whether this attempt created it (known to be "created" then)."""
        existing = self.live.get(container.name)
        if existing is not None:
            if self._is_ours(existing, container):
                return existing.id, False  # created by an earlier attempt of this migration
            raise BlockedError(
                f"a container named {container.name} ({existing.id[:12]}) already exists in "
                "the containerd store and was not created by this migration",
                f"rename or remove it (`docker rename {container.name} "
                f"{container.name}-new`), then run `containerd-migrate run` again",
            )
        image = image_for(container, self.committed, self.image_ids)
        if image is None:
            raise RecreateFailed(
                f"no image for container {container.name}: its image {container.image_id} "
                "was neither exported nor staged", "roll back with `containerd-migrate "
                "rollback`")
        body = create_body(container, self.image_ref(container.image, image),
                           self.new_ids, self.image_ids, self.ctx.migration_id,
                           volumes_from_sources(container, self.inventory.containers))
        self.checkpoint({"creating": {"id": container.id, "name": container.name}})
        try:
            new_id = self.engine.create_container_from_spec(container.name, body)
        except MigrateError as error:
            adopted = self._ours(container)
            if adopted is not None:
                # A create still in flight when an earlier attempt was killed (workers
                # create a level at once) finished only after this attempt listed names.
                new_id, fresh = adopted, False
            else:
                raise RecreateFailed(
                    f"cannot recreate container {container.name}: {error.message}",
                    "fix the cause, then `containerd-migrate run` resumes with this "
                    "container; or `containerd-migrate rollback` brings the legacy "
                    "containers back",
                ) from error
        else:
            fresh = True
        self.checkpoint({"created": {"id": container.id, "name": container.name,
                                     "new_id": new_id}})
        failpoints.hit("recreate:container-created")
        return new_id, fresh

    def recreate(self, container: ContainerRecord) -> tuple[str, str | None]:
        """Create it, then start it if it ran: its new ID, and when it ran again."""
        new_id, fresh = self.create(container)
        return new_id, self.start(container, new_id, fresh) if container.running else None

    def start(self, container: ContainerRecord, new_id: str, fresh: bool) -> str:
        """Start it again if it ran; returns when it was running again (ISO time). A
        container this attempt just created (`fresh`) needs no inspect first."""
        done = self.started.get(container.id)
        live = None if fresh else self.engine.inspect_container(new_id)
        if done is not None and live is not None and live.running:
            return str(done["at"])
        self.checkpoint({"starting": {"id": container.id, "name": container.name}})
        try:
            if live is None or live.state not in RUNNING_STATES:
                self.engine.start_container(new_id)
            if container.state == "paused" and (live is None or live.state != "paused"):
                self.engine.pause_container(new_id)
        except MigrateError as error:
            raise RecreateFailed(
                f"container {container.name} was recreated but does not start: "
                f"{error.message}",
                "see `docker logs " + container.name + "`; fix the cause, then "
                "`containerd-migrate run` resumes, or `containerd-migrate rollback`",
            ) from error
        at = datetime.now(UTC).isoformat()
        self.checkpoint({"started": {"id": container.id, "name": container.name,
                                         "at": at}})
        failpoints.hit("recreate:container-started")
        return at


class ContainerToRecreate(RecordModel):
    id: str
    name: str = ""
    state: str = ""


class RecreateIntent(RecordModel):
    policy: str | None = None
    # Every container this attempt may create: the undo of a half-done attempt removes
    # those carrying their IDs in the recreated-from label.
    containers: tuple[ContainerToRecreate, ...] = ()


def _entries(inventory: Inventory) -> tuple[ContainerToRecreate, ...]:
    return tuple(ContainerToRecreate(id=c.id, name=c.name, state=c.state)
                 for c in creation_order(inventory.containers))


def write_container_map(state_dir: StateDir, rows: Mapping[str, JSONDict]) -> Path:
    path = state_dir.reports_dir / CONTAINER_MAP
    state_dir.write_file(path, (json.dumps(rows, indent=2) + "\n").encode())
    return path


class RecreatePhase(Phase[RecreateIntent, RecreateUndo, RecreateResult]):
    name = "recreate"
    undo_model = RecreateUndo
    result_model = RecreateResult

    def intent(self, ctx: PhaseContext) -> RecreateIntent:
        policy = ctx.containers_policy
        containers = _entries(ctx.load_inventory()) if policy == "recreate" else ()
        return RecreateIntent(policy=policy, containers=containers)

    def run(self, ctx: PhaseContext) -> PhaseOutcome[RecreateUndo, RecreateResult]:
        if ctx.containers_policy != "recreate":
            return PhaseOutcome(RecreateUndo(), RecreateResult())
        inventory = ctx.load_inventory()
        order = creation_order(inventory.containers)
        stopped_at = ctx.records.quiesce.stopped_at
        rows: dict[str, JSONDict] = {}
        with ctx.connect() as engine:
            info = engine.info()
            if info.store is not Store.CONTAINERD:
                raise StateError("recreate needs the daemon on the containerd store",
                                 "run `containerd-migrate run` so the switch happens first")
            work = _Recreation(ctx, engine, inventory)
            running_at: dict[str, str] = {}
            # One engine for every worker: each thread gets its own connection
            # (engine/client.py). A level is created and its running ones started before
            # the next level is created: what a container joins or links to runs by then.
            # Within a level each container is started right after its own create (all it
            # needs runs already), not after the whole level's creates.
            with Workers() as pool:
                for by_name in dependency_levels(inventory.containers):
                    level = first_stopped_first(by_name, stopped_at)
                    for container, (new_id, at) in zip(level, pool.all(work.recreate, level),
                                                       strict=True):
                        work.new_ids[container.id] = new_id
                        if at is not None:
                            running_at[container.id] = at
            for container in order:
                row: JSONDict = {"name": container.name, "new_id": work.new_ids[container.id],
                                 "state_before": container.state,
                                 "committed": container.id in work.committed}
                if container.id in running_at:
                    at = running_at[container.id]
                    row.update(running_again_at=at, downtime_seconds=_seconds(
                        stopped_at.get(container.id), at))
                rows[container.id] = row
            # Volumes are in use by their own containers again: the guard has done its job
            # for every volume a recreated container mounts.
            remaining = guarded_volumes(inventory, exclude=frozenset(work.new_ids))
            if not remaining:
                remove_guard(engine)
            # Verify left it for now, so that no container waited for it.
            capability = check_multi_platform(engine, info.architecture, {}) \
                if ctx.containers_wait else None
        report_check(capability, self.name, str(ctx.reports_dir))
        path = write_container_map(ctx.state_dir, rows)
        running = [r for r in rows.values() if "running_again_at" in r]
        downtimes = {str(r["name"]): r.get("downtime_seconds") for r in running}
        log.info("containers recreated", phase=self.name, containers=len(rows),
                 running=len(running))
        return PhaseOutcome(
            RecreateUndo(containers=tuple(
                RecreatedEntry(id=old, name=str(r["name"]), new_id=str(r["new_id"]))
                for old, r in rows.items())),
            RecreateResult(recreated=tuple(str(r["name"]) for r in rows.values()),
                           running=tuple(str(r["name"]) for r in running),
                           left_created=tuple(str(r["name"]) for r in rows.values()
                                              if "running_again_at" not in r),
                           downtime_seconds=downtimes, container_map=str(path),
                           volume_guard=tuple(remaining),
                           multi_platform=multi_platform_status(capability)
                           if capability else None))

    def undo(self, ctx: UndoContext, record: RecreateUndo) -> UndoReport:
        ours = {entry.id for entry in record.containers}
        if not ours:
            return UndoReport.done("recreate: no container was recreated")
        lines: list[str] = []
        try:
            with ctx.connect() as engine:
                if engine.info().store is not Store.CONTAINERD:
                    return UndoReport.failure(
                        "recreate: the daemon is not on the containerd store; the recreated "
                        "containers were not removed")
                # By label, not by the recorded new IDs: a create whose answer was lost to
                # a crash left a container the journal has no ID for.
                for container in engine.list_containers(details=False):
                    if container.labels.get(RECREATED_LABEL) in ours:
                        # Never with its volumes: they hold the legacy containers' data.
                        engine.remove_container(container.id, force=True)
                        lines.append(f"recreate: removed {container.name} "
                                     f"({container.id[:12]}) from the containerd store")
        except MigrateError as error:
            return UndoReport.failure(f"recreate: could not remove the recreated containers: "
                                      f"{error.message}", *lines)
        # A probe its capability check left when killed goes with verify's undo, next.
        return UndoReport.done(*(lines or ["recreate: no recreated container was left to "
                                           "remove"]))


PHASE = RecreatePhase()
