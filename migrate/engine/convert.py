"""Raw Docker API answers (untyped dicts) -> the frozen models of `migrate.models`.

Pure functions, kept apart from `engine.py` (the only module that talks to the daemon) so
the conversion rules can be unit tested without one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from migrate.models import (
    CONTAINERD_DRIVER_TYPE,
    EMPTY_LAYER_DIFF_ID,
    EngineInfo,
    ImageConfigSummary,
    ImageRecord,
    Store,
)

JSON = dict[str, Any]


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


def image_record(inspect: JSON, history: list[JSON]) -> ImageRecord:
    diff_ids = _tuple((inspect.get("RootFS") or {}).get("Layers"))
    return ImageRecord(
        id=inspect["Id"],
        tags=_real_tags(inspect.get("RepoTags")),
        repo_digests=tuple(sorted(d for d in inspect.get("RepoDigests") or () if "@" in d)),
        created=inspect.get("Created") or "",
        os=inspect.get("Os") or "",
        architecture=inspect.get("Architecture") or "",
        variant=inspect.get("Variant") or "",
        diff_ids=diff_ids,
        layer_sizes=_layer_sizes(diff_ids, history),
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
        containerd_address=containerd.get("Address") if isinstance(containerd, dict) else None,
        daemon_id=str(info.get("ID", "")),
    )
