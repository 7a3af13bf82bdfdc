"""Frozen values that cross module boundaries: what the engine and the host look like.

`migrate.engine` produces these from the untyped docker SDK; everything else (planning,
checks, phases, reports) consumes them. They are also what the snapshot phase
stores on disk, so they must round-trip through JSON unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, JsonValue

CONTAINERD_DRIVER_TYPE = "io.containerd.snapshotter.v1"
# The containerd namespace dockerd keeps its images, containers and leases in, unless its
# `containerd-namespace` setting names another.
DOCKERD_CONTAINERD_NAMESPACE = "moby"
# diff_id of an empty tar: metadata-only build steps may produce it and it weighs nothing.
EMPTY_LAYER_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
# Container states in which a process runs (or is frozen): stopping the daemon ends them.
RUNNING_STATES = frozenset({"running", "restarting", "paused"})


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Store(StrEnum):
    LEGACY = "legacy"
    CONTAINERD = "containerd"


class EngineInfo(Frozen):
    version: str
    api_version: str
    store: Store
    # `Driver` lies in containerd mode when storage-driver is set (docs/engine-facts.md),
    # so `store` is derived from DriverStatus and `driver` is informational only.
    driver: str
    driver_status: tuple[tuple[str, str], ...] = ()
    data_root: str
    os_type: str = "linux"
    architecture: str = ""
    kernel_version: str = ""
    live_restore: bool = False
    security_options: tuple[str, ...] = ()
    # `docker info` OperatingSystem: "Debian GNU/Linux 13 (trixie)", "Docker Desktop", ...
    operating_system: str = ""
    # Set when dockerd runs against an external containerd (`--containerd=SOCK`).
    containerd_address: str | None = None
    pid: int | None = None
    # `docker info` ID, persisted in the data-root: the same daemon keeps it across restarts
    # and the store switch (docs/engine-facts.md).
    daemon_id: str = ""

    @property
    def legacy_driver(self) -> str | None:
        """The graph driver of a legacy-store daemon; None on the containerd store, where
        `driver` names a snapshotter (or repeats a stale storage-driver setting)."""
        return (self.driver or None) if self.store is Store.LEGACY else None


class ImageConfigSummary(Frozen):
    """The parts of an image config that must survive the move byte for byte."""

    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()


class ImageRecord(Frozen):
    id: str
    tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    created: str = ""
    os: str = ""
    architecture: str = ""
    variant: str = ""
    diff_ids: tuple[str, ...] = ()
    # Uncompressed size of each layer, aligned with diff_ids (from image history).
    layer_sizes: tuple[int, ...] = ()
    size: int = 0
    config: ImageConfigSummary = Field(default_factory=ImageConfigSummary)

    @property
    def dangling(self) -> bool:
        return not self.tags

    def layer_bytes(self) -> dict[str, int]:
        """diff_id -> uncompressed size.

        When the per-layer sizes are missing or misaligned (history was unreadable), the
        image size is spread evenly: an estimate is enough to plan batches and disk.
        """
        if not self.diff_ids:
            return {}
        if len(self.layer_sizes) == len(self.diff_ids):
            return dict(zip(self.diff_ids, self.layer_sizes, strict=True))
        share = self.size // len(self.diff_ids)
        return dict.fromkeys(self.diff_ids, share)


class ImageManifest(Frozen):
    """One platform's manifest in a multi-platform image (`docker image inspect` with its
    manifest list, API 1.48+)."""

    digest: str
    # os/architecture[/variant], as `--platform` takes it.
    platform: str
    # The daemon holds its content (a pull may fetch only the native platform).
    available: bool


def unique_layer_bytes(images: Iterable[ImageRecord]) -> int:
    """Bytes of distinct layers: shared base layers are counted once."""
    seen: dict[str, int] = {}
    for image in images:
        for diff_id, size in image.layer_bytes().items():
            seen.setdefault(diff_id, size)
    return sum(seen.values())


class MountRecord(Frozen):
    type: str
    name: str = ""
    source: str = ""
    destination: str
    rw: bool = True


class NetworkAttachment(Frozen):
    """One user-defined network a container is attached to, as recreate must rebuild it."""

    network: str
    aliases: tuple[str, ...] = ()
    # Static addresses (IPAMConfig): given by the user, so they must be given again.
    ipv4_address: str = ""
    ipv6_address: str = ""
    links: tuple[str, ...] = ()
    driver_opts: dict[str, str] = Field(default_factory=dict)
    # The address the engine assigned, static or not: what a check after recreate compares.
    ip_address: str = ""


class WritableLayer(Frozen):
    """What `docker diff` says changed in a container's writable layer."""

    added: int = 0
    changed: int = 0
    deleted: int = 0
    # SizeRw: bytes of the files in the layer (deleted paths weigh nothing there).
    size_bytes: int = 0

    @property
    def paths(self) -> int:
        return self.added + self.changed + self.deleted


class ContainerRecord(Frozen):
    id: str
    name: str
    image: str
    image_id: str
    state: str
    restart_policy: str = ""
    compose_project: str | None = None
    mounts: tuple[MountRecord, ...] = ()
    # None when the engine could not tell (e.g. the diff call failed).
    has_changes: bool | None = None
    # The rest is what `--containers recreate` needs to create the container again; empty
    # when the inventory was taken without the per-container inspect (`details=False`).
    # `config` and `host_config` are the inspect answer's Config and HostConfig as the
    # engine sent them (recreate posts them back); the typed fields below are the parts of
    # them the tool reads.
    config: dict[str, JsonValue] = Field(default_factory=dict)
    host_config: dict[str, JsonValue] = Field(default_factory=dict)
    networks: tuple[NetworkAttachment, ...] = ()
    network_mode: str = ""
    links: tuple[str, ...] = ()
    volumes_from: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    runtime: str = ""
    auto_remove: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    writable_layer: WritableLayer | None = None

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def detailed(self) -> bool:
        return bool(self.config)


class VolumeRecord(Frozen):
    name: str
    driver: str = "local"
    mountpoint: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    used_by: tuple[str, ...] = ()


class Inventory(Frozen):
    taken_at: datetime
    engine: EngineInfo
    images: tuple[ImageRecord, ...] = ()
    containers: tuple[ContainerRecord, ...] = ()
    volumes: tuple[VolumeRecord, ...] = ()

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(tag for image in self.images for tag in image.tags)

    @property
    def dangling_images(self) -> tuple[ImageRecord, ...]:
        return tuple(image for image in self.images if image.dangling)

    def unique_layer_bytes(self) -> int:
        return unique_layer_bytes(self.images)


# The name of the volume guard container the verify phase creates in the containerd store
# (phases/volume_guard.py); a container of the host's own with this name cannot be recreated.
VOLUME_GUARD_NAME = "containerd-migrate-volume-guard"

# The repository the commit phase commits a container's changed writable layer to (tagged
# with the container's ID): no user tag uses it. Import knows these images serve only the
# migration; recreate creates each such container from its own.
COMMIT_REPOSITORY = "containerd-migrate/commit"


def commit_ref(container_id: str) -> str:
    return f"{COMMIT_REPOSITORY}:{container_id}"


def is_commit_ref(ref: str) -> bool:
    return ref.startswith(commit_ref(""))
