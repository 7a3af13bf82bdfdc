"""Raw Docker API answers (untyped dicts) -> the frozen models of `migrate.models`.

Pure functions, kept apart from `engine.py` (the only module that talks to the daemon) so
the conversion rules can be unit tested without one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from migrate.models import (
    CONTAINERD_DRIVER_TYPE,
    EMPTY_LAYER_DIFF_ID,
    ContainerRecord,
    EngineInfo,
    ImageConfigSummary,
    ImageRecord,
    MountRecord,
    NetworkAttachment,
    Store,
    WritableLayer,
)

JSON = dict[str, Any]
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
# Networks every engine has on its own: recreate never attaches to them by name.
BUILTIN_NETWORKS = frozenset({"bridge", "host", "none", "default"})
# `docker diff` kinds.
_DIFF_KINDS = {0: "changed", 1: "added", 2: "deleted"}


def _tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (value or ()))


def _optional_tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else _tuple(value)


def _config_summary(config: JSON | None) -> ImageConfigSummary:
    config = config or {}
    return ImageConfigSummary(
        env=_tuple(config.get("Env")),
        cmd=_optional_tuple(config.get("Cmd")),
        entrypoint=_optional_tuple(config.get("Entrypoint")),
        labels=dict(config.get("Labels") or {}),
        working_dir=config.get("WorkingDir") or "",
        user=config.get("User") or "",
        exposed_ports=tuple(sorted(config.get("ExposedPorts") or {})),
        volumes=tuple(sorted(config.get("Volumes") or {})),
    )


def _real_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(sorted(t for t in (tags or ()) if t and t != "<none>:<none>"))


def _layer_sizes(diff_ids: tuple[str, ...], history: list[JSON]) -> tuple[int, ...]:
    """Align history sizes with diff_ids.

    The history API does not say which steps made a layer, but steps with a size do,
    in order (history is newest first). Empty tar layers weigh nothing.
    """
    sized = [int(h.get("Size") or 0) for h in reversed(history) if int(h.get("Size") or 0) > 0]
    sizes: list[int] = []
    for diff_id in diff_ids:
        if diff_id == EMPTY_LAYER_DIFF_ID or not sized:
            sizes.append(0)
        else:
            sizes.append(sized.pop(0))
    return tuple(sizes)


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The legacy layer store's ChainIDs: the first layer's diff_id, then
    sha256(parent ChainID + " " + diff_id), as in the image-spec."""
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            digest = hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest()
            chains.append(f"sha256:{digest}")
    return chains


def image_record(inspect: JSON, history: list[JSON],
                 layer_sizes: tuple[int, ...] | None = None) -> ImageRecord:
    """`layer_sizes` (aligned with the diff_ids) replaces the sizes read from `history`."""
    diff_ids = _tuple((inspect.get("RootFS") or {}).get("Layers"))
    if layer_sizes is None or len(layer_sizes) != len(diff_ids):
        layer_sizes = _layer_sizes(diff_ids, history)
    return ImageRecord(
        id=inspect["Id"],
        tags=_real_tags(inspect.get("RepoTags")),
        repo_digests=tuple(sorted(d for d in inspect.get("RepoDigests") or () if "@" in d)),
        created=inspect.get("Created") or "",
        os=inspect.get("Os") or "",
        architecture=inspect.get("Architecture") or "",
        variant=inspect.get("Variant") or "",
        diff_ids=diff_ids,
        layer_sizes=layer_sizes,
        size=int(inspect.get("Size") or 0),
        config=_config_summary(inspect.get("Config")),
    )


def engine_info(info: JSON, version: JSON) -> EngineInfo:
    status = tuple((str(k), str(v)) for k, v in info.get("DriverStatus") or ())
    store = (
        Store.CONTAINERD
        if ("driver-type", CONTAINERD_DRIVER_TYPE) in status
        else Store.LEGACY
    )
    containerd = info.get("Containerd") or {}
    return EngineInfo(
        version=str(version.get("Version", "")),
        api_version=str(version.get("ApiVersion", "")),
        store=store,
        driver=str(info.get("Driver", "")),
        driver_status=status,
        data_root=str(info.get("DockerRootDir", "")),
        os_type=str(info.get("OSType", "linux")),
        architecture=str(info.get("Architecture", "")),
        kernel_version=str(info.get("KernelVersion", "")),
        live_restore=bool(info.get("LiveRestoreEnabled", False)),
        security_options=_tuple(info.get("SecurityOptions")),
        operating_system=str(info.get("OperatingSystem", "")),
        containerd_address=containerd.get("Address") if isinstance(containerd, dict) else None,
        daemon_id=str(info.get("ID", "")),
    )


def _mount(mount: JSON) -> MountRecord:
    return MountRecord(
        type=mount.get("Type", ""),
        name=mount.get("Name", "") or "",
        source=mount.get("Source", "") or "",
        destination=mount.get("Destination", ""),
        rw=bool(mount.get("RW", True)),
    )


def _attachment(name: str, endpoint: JSON) -> NetworkAttachment:
    ipam = endpoint.get("IPAMConfig") or {}
    return NetworkAttachment(
        network=name,
        aliases=_tuple(endpoint.get("Aliases")),
        ipv4_address=ipam.get("IPv4Address") or "",
        ipv6_address=ipam.get("IPv6Address") or "",
        links=_tuple(endpoint.get("Links")),
        driver_opts={str(k): str(v) for k, v in (endpoint.get("DriverOpts") or {}).items()},
        ip_address=endpoint.get("IPAddress") or "",
    )


def _mount_point_dirs(mount_points: Iterable[str]) -> set[str]:
    dirs: set[str] = set()
    for point in mount_points:
        parts = point.strip("/").split("/")
        dirs |= {"/" + "/".join(parts[:n]) for n in range(1, len(parts) + 1)}
    return dirs


def writable_layer(diff: list[JSON] | None, size_rw: int | None,
                   mount_points: Iterable[str] = ()) -> WritableLayer | None:
    """`docker diff` (None: the call failed) -> counts per kind, with the layer's size.

    The directories the engine creates to mount volumes and binds on (and their parents)
    show up as added or changed; they are not the container's own changes.
    """
    if diff is None:
        return None
    engine_made = _mount_point_dirs(mount_points)
    counts = dict.fromkeys(_DIFF_KINDS.values(), 0)
    for change in diff:
        if change.get("Path") in engine_made and int(change.get("Kind", 0)) != 2:
            continue
        kind = _DIFF_KINDS.get(int(change.get("Kind", 0)), "changed")
        counts[kind] += 1
    return WritableLayer(**counts, size_bytes=int(size_rw or 0))


def container_record(summary: JSON, inspect: JSON | None = None,
                     layer: WritableLayer | None = None) -> ContainerRecord:
    """One container from its `docker ps` summary, with the full inspect when read."""
    labels = {str(k): str(v) for k, v in (summary.get("Labels") or {}).items()}
    record = ContainerRecord(
        id=summary["Id"],
        name=(summary.get("Names") or ["/" + summary["Id"][:12]])[0].lstrip("/"),
        image=summary.get("Image", ""),
        image_id=summary.get("ImageID", ""),
        state=summary.get("State", ""),
        compose_project=labels.get(COMPOSE_PROJECT_LABEL),
        mounts=tuple(_mount(m) for m in summary.get("Mounts") or ()),
        labels=labels,
        has_changes=None if layer is None else layer.paths > 0,
        writable_layer=layer,
    )
    if inspect is None:
        return record
    config: JSON = dict(inspect.get("Config") or {})
    host: JSON = dict(inspect.get("HostConfig") or {})
    networks = (inspect.get("NetworkSettings") or {}).get("Networks") or {}
    return record.model_copy(update={
        "name": str(inspect.get("Name") or record.name).lstrip("/"),
        "image": str(config.get("Image") or record.image),
        "image_id": str(inspect.get("Image") or record.image_id),
        "state": str((inspect.get("State") or {}).get("Status") or record.state),
        "restart_policy": str((host.get("RestartPolicy") or {}).get("Name", "")),
        # Inspect lists every mount, summaries may abbreviate; the inspect is the truth.
        "mounts": tuple(_mount(m) for m in inspect.get("Mounts") or ()) or record.mounts,
        "config": config,
        "host_config": host,
        "networks": tuple(sorted((_attachment(str(n), e or {}) for n, e in networks.items()
                                  if n not in BUILTIN_NETWORKS), key=lambda a: a.network)),
        "network_mode": str(host.get("NetworkMode") or ""),
        "links": _tuple(host.get("Links")),
        "volumes_from": _tuple(host.get("VolumesFrom")),
        "devices": tuple(str(d.get("PathOnHost", "")) for d in host.get("Devices") or ()),
        "runtime": str(host.get("Runtime") or ""),
        "auto_remove": bool(host.get("AutoRemove")),
        "labels": {str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
    })
