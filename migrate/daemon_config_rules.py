"""What dockerd accepts in daemon.json and how the switch rewrites it: pure functions on
the file's content (bytes in, JSON object out, and back).

Decoding and editing raise DaemonConfigError; reading the file from disk, which never
raises, lives in `migrate.daemon_config`, which re-exports everything public here.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from migrate.errors import DaemonConfigError

__all__ = [
    "KNOWN_SNAPSHOTTERS", "LEGACY_STORAGE_DRIVER_MAPPING", "SNAPSHOTTER_FEATURE",
    "UNMAPPABLE_DRIVERS", "choose_snapshotter", "config_problems", "feature_typos",
    "parse_config_bytes", "redact", "render_config", "target_config", "validate_for_edit",
]

SNAPSHOTTER_FEATURE = "containerd-snapshotter"

# With the feature on, `storage-driver` names a snapshotter: keeping `overlay2` lets the
# daemon start and load images, then every container create fails.
LEGACY_STORAGE_DRIVER_MAPPING: Mapping[str, str] = MappingProxyType(
    {"overlay2": "overlayfs", "vfs": "native"}
)
UNMAPPABLE_DRIVERS = frozenset({"btrfs", "zfs", "fuse-overlayfs", "devicemapper", "aufs"})
KNOWN_SNAPSHOTTERS = frozenset(
    {"overlayfs", "native", "btrfs", "zfs", "fuse-overlayfs", "devmapper", "stargz", "nydus",
     "erofs"}
)

_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def parse_config_bytes(raw: bytes) -> dict[str, Any]:
    """Decode daemon.json like dockerd does (BOM stripped, empty file = {})."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DaemonConfigError(f"daemon.json is not UTF-8: {exc}") from exc
    if not text.strip():
        return {}
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise DaemonConfigError(
            f"daemon.json is not valid JSON: {exc}",
            hint="fix the syntax (dockerd --validate --config-file FILE checks it) and re-run",
        ) from exc
    if not isinstance(data, dict):
        raise DaemonConfigError(
            f"daemon.json must hold a JSON object, found {type(data).__name__}",
            hint="replace the content with a JSON object, e.g. {}",
        )
    return data


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A rewrite through json.loads keeps only the last duplicate, silently dropping settings.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DaemonConfigError(
                f"daemon.json has the key {key!r} twice",
                hint="merge the duplicates by hand; a rewrite would keep only the last one",
            )
        result[key] = value
    return result


def config_problems(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Values that make dockerd refuse to start, or that we cannot edit safely."""
    problems: list[str] = []
    features = data.get("features") or {}  # JSON null unmarshals to an empty map in Go
    if not isinstance(features, dict):
        problems.append(f"'features' must be an object, found {type(features).__name__}")
        features = {}
    for key, value in features.items():
        if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
            problems.append(f'features.{key} is the string "{value}", dockerd needs a boolean')
        elif not isinstance(value, bool):
            problems.append(f"features.{key} must be a boolean, found {value!r}")
    driver = data.get("storage-driver")
    if driver is not None and not isinstance(driver, str):
        problems.append(f"'storage-driver' must be a string, found {driver!r}")
    return tuple(problems)


def validate_for_edit(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise DaemonConfigError("daemon.json must hold a JSON object")
    problems = config_problems(data)
    if problems:
        raise DaemonConfigError(
            "daemon.json has values dockerd refuses: " + "; ".join(problems),
            hint='use JSON booleans without quotes, e.g. "features": {"containerd-snapshotter": '
            "true}",
        )
    return data


def feature_typos(features: Mapping[str, Any]) -> tuple[str, ...]:
    """Keys dockerd would ignore silently while the operator meant the snapshotter feature."""
    wanted = _normalise(SNAPSHOTTER_FEATURE)
    typos = []
    for key in features:
        if key == SNAPSHOTTER_FEATURE:
            continue
        norm = _normalise(key)
        close = difflib.SequenceMatcher(None, norm, wanted).ratio() >= 0.8
        if close or "snapshot" in norm:
            typos.append(key)
    return tuple(typos)


def _normalise(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def choose_snapshotter(
    configured: str | None, override: str | None = None, engine_driver: str | None = None
) -> str | None:
    """The `storage-driver` value for the new store, or None to leave the key out.

    `engine_driver` is the graph driver the legacy daemon runs; it matters when the key is
    absent, because the new store would then default to overlayfs whatever the filesystem.
    """
    if override is not None:
        if override not in KNOWN_SNAPSHOTTERS:
            raise DaemonConfigError(
                f"{override!r} is not a containerd snapshotter",
                hint="choose one of " + ", ".join(sorted(KNOWN_SNAPSHOTTERS)),
            )
        return override
    configured = configured or None  # "" means "pick automatically" to dockerd
    legacy = configured if configured is not None else engine_driver
    if legacy is None or (configured is None and legacy == "overlay2"):
        return configured
    if legacy in LEGACY_STORAGE_DRIVER_MAPPING:
        return LEGACY_STORAGE_DRIVER_MAPPING[legacy]
    # Already a snapshotter-only name (someone prepared the file): nothing to translate.
    if configured is not None and configured in KNOWN_SNAPSHOTTERS - UNMAPPABLE_DRIVERS:
        return configured
    raise DaemonConfigError(
        f"storage driver {legacy!r} has no automatic snapshotter equivalent",
        hint=f"decide explicitly with a snapshotter override (e.g. {_suggest(legacy)}); "
        "existing containers stay on the legacy driver",
    )


def _suggest(driver: str) -> str:
    same_name = {"btrfs": "btrfs", "zfs": "zfs", "fuse-overlayfs": "fuse-overlayfs",
                 "devicemapper": "devmapper"}
    return f"{same_name[driver]} or overlayfs" if driver in same_name else "overlayfs"


def target_config(
    data: Mapping[str, Any] | None,
    snapshotter_override: str | None = None,
    *,
    engine_driver: str | None = None,
) -> dict[str, Any]:
    """daemon.json content for the containerd store; every other key and value is kept."""
    result = copy.deepcopy(validate_for_edit(dict(data or {})))
    features = dict(result.get("features") or {})
    features[SNAPSHOTTER_FEATURE] = True
    result["features"] = features
    snapshotter = choose_snapshotter(
        result.get("storage-driver"), snapshotter_override, engine_driver
    )
    if snapshotter is not None:
        result["storage-driver"] = snapshotter
    return result


def render_config(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def redact(value: Any) -> Any:
    """Mask URL credentials (e.g. `proxies`) so plans can be pasted into tickets."""
    if isinstance(value, str):
        return _URL_USERINFO.sub(r"\g<scheme>***@", value)
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value
