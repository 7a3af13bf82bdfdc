"""Raw Docker API answers (untyped dicts) -> the frozen models of `migrate.models`.

Pure functions, kept apart from `client.py` (the module that talks to the daemon) so
the conversion rules can be unit tested without one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from migrate.errors import EngineError
from migrate.models import (
    CONTAINERD_DRIVER_TYPE,
    EMPTY_LAYER_DIFF_ID,
    ContainerRecord,
    EngineInfo,
    ImageConfigSummary,
    ImageManifest,
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


# --- the shape of every answer read, checked before anything reads it -------------------
# Only the fields this package reads are declared, with the types the conversions below
# rely on; anything else passes as it is (extra="allow": a newer daemon adds fields).
# A daemon, proxy or impostor answering another shape (a string where the API has a list)
# is then one EngineError naming the field, not a ValueError deep in a conversion.


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)


class VersionAnswer(_Shape):
    Version: str | None = None
    ApiVersion: str | None = None


class _ContainerdInfo(_Shape):
    Address: str | None = None


class InfoAnswer(_Shape):
    ID: str | None = None
    Driver: str | None = None
    DriverStatus: list[tuple[str, str]] | None = None
    DockerRootDir: str | None = None
    OSType: str | None = None
    Architecture: str | None = None
    KernelVersion: str | None = None
    LiveRestoreEnabled: bool | None = None
    SecurityOptions: list[str] | None = None
    Containerd: _ContainerdInfo | None = None


class _ImageConfig(_Shape):
    Env: list[str] | None = None
    Cmd: list[str] | None = None
    Entrypoint: list[str] | None = None
    Labels: dict[str, str] | None = None
    WorkingDir: str | None = None
    User: str | None = None
    ExposedPorts: dict[str, Any] | None = None
    Volumes: dict[str, Any] | None = None


class _RootFS(_Shape):
    Layers: list[str] | None = None


class ImageSummary(_Shape):
    Id: str
    RepoTags: list[str] | None = None
    RepoDigests: list[str] | None = None
    Size: int | None = None


class ImageInspect(ImageSummary):
    Created: str | None = None
    Os: str | None = None
    Architecture: str | None = None
    Variant: str | None = None
    RootFS: _RootFS | None = None
    Config: _ImageConfig | None = None


class HistoryEntry(_Shape):
    Size: int | None = None


class _Mount(_Shape):
    Type: str | None = None
    Name: str | None = None
    Source: str | None = None
    Destination: str | None = None
    RW: bool | None = None


class ContainerSummary(_Shape):
    Id: str
    Names: list[str] | None = None
    Image: str | None = None
    ImageID: str | None = None
    State: str | None = None
    Labels: dict[str, str] | None = None
    Mounts: list[_Mount] | None = None


class _ContainerConfig(_Shape):
    Image: str | None = None
    Labels: dict[str, str] | None = None
    Env: list[str] | None = None
    Cmd: list[str] | None = None
    Entrypoint: list[str] | None = None


class _RestartPolicy(_Shape):
    Name: str | None = None


class _Device(_Shape):
    PathOnHost: str | None = None


class _HostConfig(_Shape):
    RestartPolicy: _RestartPolicy | None = None
    NetworkMode: str | None = None
    Links: list[str] | None = None
    VolumesFrom: list[str] | None = None
    Devices: list[_Device] | None = None
    Runtime: str | None = None
    AutoRemove: bool | None = None


class _IPAMConfig(_Shape):
    IPv4Address: str | None = None
    IPv6Address: str | None = None


class _Endpoint(_Shape):
    Aliases: list[str] | None = None
    IPAMConfig: _IPAMConfig | None = None
    Links: list[str] | None = None
    DriverOpts: dict[str, str] | None = None
    IPAddress: str | None = None


class _NetworkSettings(_Shape):
    Networks: dict[str, _Endpoint | None] | None = None


class _State(_Shape):
    Status: str | None = None
    Running: bool | None = None


class _GraphDriver(_Shape):
    Name: str | None = None
    Data: dict[str, Any] | None = None


class ContainerInspect(_Shape):
    Id: str
    Name: str | None = None
    Image: str | None = None
    Config: _ContainerConfig | None = None
    HostConfig: _HostConfig | None = None
    NetworkSettings: _NetworkSettings | None = None
    State: _State | None = None
    Mounts: list[_Mount] | None = None
    GraphDriver: _GraphDriver | None = None
    SizeRw: int | None = None


class Change(_Shape):
    Path: str | None = None
    Kind: int | None = None


class _Volume(_Shape):
    Name: str
    Driver: str | None = None
    Mountpoint: str | None = None
    Labels: dict[str, str] | None = None


class VolumesAnswer(_Shape):
    Volumes: list[_Volume] | None = None


class IdAnswer(_Shape):
    Id: str


def fits(shape: type[_Shape], value: Any) -> bool:
    try:
        shape.model_validate(value)
    except ValidationError:
        return False
    return True


def _where(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "the answer"


def checked(shape: type[_Shape], answer: Any, what: str, *, many: bool = False) -> Any:
    """`answer` itself once it has `shape` (each item of a list with `many`); else an
    EngineError saying which field of which answer was wrong."""
    problem = None
    if many and not isinstance(answer, list):
        problem = f"a list was expected, not {type(answer).__name__}"
    else:
        for index, item in enumerate(answer if many else [answer]):
            try:
                shape.model_validate(item)
            except ValidationError as error:
                first = error.errors()[0]
                location = (index, *first["loc"]) if many else first["loc"]
                problem = f"{_where(location)}: {first['msg']}"
                break
    if problem is not None:
        raise EngineError(
            f"the Docker daemon's answer to {what} does not have the shape of the Docker "
            f"API: {problem}",
            "check that --host is a Docker daemon of a supported version (`docker version`) "
            "and that nothing between us and it rewrites its answers")
    return answer


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


def platform_name(platform: JSON) -> str:
    """An OCI platform object as `--platform` spells it: os/architecture[/variant]."""
    parts = (platform.get("os"), platform.get("architecture"), platform.get("variant"))
    return "/".join(str(part) for part in parts if part)


def image_manifests(inspect: JSON) -> tuple[ImageManifest, ...]:
    """The image manifests of an inspect answer asked with `manifests=1`, in its order;
    attestations and other kinds of manifest are left out."""
    found = []
    for entry in inspect.get("Manifests") or ():
        if not isinstance(entry, dict) or entry.get("Kind") != "image":
            continue
        descriptor = entry.get("Descriptor") or {}
        platform = (entry.get("ImageData") or {}).get("Platform") or descriptor.get(
            "platform") or {}
        found.append(ImageManifest(digest=str(entry.get("ID") or descriptor.get("digest", "")),
                                   platform=platform_name(platform),
                                   available=bool(entry.get("Available"))))
    return tuple(found)


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
