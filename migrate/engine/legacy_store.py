"""The legacy image store on disk: the layout of the data root that this tool reads.

One home for the paths of the data root's legacy store, read without the daemon where the
daemon is slow or cannot answer: `image/<driver>/imagedb` (image configs) and `layerdb`
(layer sizes) for a big inventory, `image/<driver>/repositories.json` (tags) and
`containers/*/config.v2.json` (which store a container belongs to) for cleanup's prune,
and an overlay2 container's upper dir. Every read here is an optimisation or a fail-closed
check: what is unusual is left to the daemon, or refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from migrate.engine.convert import JSON, chain_ids
from migrate.errors import BlockedError
from migrate.models import EngineInfo


def image_folder(info: EngineInfo, *parts: str) -> Path | None:
    """A folder of the legacy image store's metadata, when this process can see it."""
    if info.legacy_driver is None or not info.data_root:
        return None
    folder = Path(info.data_root, "image", info.legacy_driver, *parts)
    return folder if folder.is_dir() else None


class LayerSizes:
    """Each layer's size as the legacy store recorded it (`layerdb/<chain>/size`, the number
    `docker history` reports), read once per chain: images share their base layers."""

    def __init__(self, layerdb: Path):
        self._layerdb = str(layerdb)
        self._known: dict[str, int | None] = {}

    def _size(self, chain: str) -> int | None:
        if chain not in self._known:
            try:
                with open(f"{self._layerdb}/{chain.removeprefix('sha256:')}/size", "rb") as f:
                    size: int | None = int(f.read(32))
            except (OSError, ValueError):
                size = None
            self._known[chain] = size if size is not None and size >= 0 else None
        return self._known[chain]

    def of(self, diff_ids: Iterable[str]) -> tuple[int, ...] | None:
        """None as soon as one is missing or unreadable: then history is asked."""
        sizes = []
        for chain in chain_ids(diff_ids):
            size = self._size(chain)
            if size is None:
                return None
            sizes.append(size)
        return tuple(sizes)


# An image config bigger than this is not read from disk (the daemon is asked instead).
_MAX_CONFIG_BYTES = 8 * 1024 * 1024
_HEX_ID = re.compile(r"sha256:([0-9a-f]{64})")
# Go's time.Time in JSON, which the daemon re-formats as RFC 3339 with nanoseconds.
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")
# The config keys the inventory keeps, as Go's image structs spell them.
_CONFIG_KEYS = frozenset({"created", "os", "architecture", "variant", "rootfs", "config"})
_CONTAINER_CONFIG_KEYS = frozenset({"Env", "Cmd", "Entrypoint", "Labels", "WorkingDir", "User",
                                    "ExposedPorts", "Volumes"})


def _go_rfc3339_nano(value: object) -> str | None:
    """`created` as `docker image inspect` prints it (Go's time.RFC3339Nano: trailing zeros
    of the fraction dropped, a zero offset written Z); None for anything unusual."""
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    seconds, fraction, zone = match.groups()
    fraction = (fraction or "").rstrip("0")
    zone = "Z" if zone in ("+00:00", "-00:00") else zone
    return seconds + (f".{fraction}" if fraction else "") + zone


def _spelled_exactly(mapping: JSON, names: frozenset[str]) -> bool:
    """Go's JSON decoder also takes `ENV` for `Env`: a config spelled so is left to the daemon."""
    folded = {name.casefold() for name in names}
    return all(key in names or key.casefold() not in folded for key in mapping)


def inspect_from_disk(imagedb: Path, summary: JSON) -> JSON | None:
    """The part of `docker image inspect` the inventory keeps, from the image list's entry
    and the legacy store's own copy of the image config, which is only trusted when its
    sha256 is the image ID. None whenever anything is unusual: then the daemon is asked.

    Measured on 1,000 images: an inspect costs the daemon 0.4 ms of CPU and this process
    about as much again; reading the config costs ~30 us.
    """
    match = _HEX_ID.fullmatch(str(summary.get("Id", "")))
    if match is None:
        return None
    try:
        with open(imagedb / match.group(1), "rb") as f:
            raw = f.read(_MAX_CONFIG_BYTES + 1)
        config = json.loads(raw)
    except (OSError, ValueError):
        return None
    if (len(raw) > _MAX_CONFIG_BYTES or hashlib.sha256(raw).hexdigest() != match.group(1)
            or not isinstance(config, dict) or not _spelled_exactly(config, _CONFIG_KEYS)):
        return None
    created = _go_rfc3339_nano(config.get("created"))
    rootfs = config.get("rootfs")
    inner = config.get("config")
    platform = [config.get(key, "") for key in ("os", "architecture", "variant")]
    if (created is None or not platform[0] or not all(isinstance(v, str) for v in platform)
            or not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list)
            or not all(isinstance(d, str) for d in rootfs["diff_ids"])
            or not (inner is None or (isinstance(inner, dict)
                                      and _spelled_exactly(inner, _CONTAINER_CONFIG_KEYS)))):
        return None
    return {
        "Id": summary["Id"],
        "RepoTags": [t for t in summary.get("RepoTags") or () if t != "<none>:<none>"],
        "RepoDigests": [d for d in summary.get("RepoDigests") or () if d != "<none>@<none>"],
        "Created": created,
        "Os": platform[0], "Architecture": platform[1], "Variant": platform[2],
        "RootFS": {"Layers": rootfs["diff_ids"]},
        "Size": summary.get("Size"),
        "Config": inner,
    }


def upper_dir_empty(inspect: JSON) -> bool:
    """True when an overlay2 container's upper dir is empty: nothing added, changed or
    deleted (overlayfs records every change there, deletions as whiteouts).

    `docker diff` costs the daemon ~12 ms per container even then (measured on 300 never
    started containers: 3.7 s of a 4.5 s inventory), so an empty upper dir is read here;
    any other case (another driver, a remote daemon, an unreadable or non-empty dir) asks
    the daemon.
    """
    driver = inspect.get("GraphDriver") or {}
    upper = (driver.get("Data") or {}).get("UpperDir")
    if driver.get("Name") != "overlay2" or not isinstance(upper, str) or not upper:
        return False
    try:
        with os.scandir(upper) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def legacy_data(data_root: str, driver: str) -> list[Path]:
    """The legacy store's image metadata and the graph driver's layers: what a prune deletes
    (besides the legacy containers' own directories)."""
    return [Path(data_root) / "image" / driver, Path(data_root) / driver]


def legacy_containers(data_root: str, driver: str) -> dict[str, tuple[str, Path]]:
    """Containers on disk that live in the legacy store (ID -> name, directory).

    Read from the data root, not the snapshot: containers may have been created or
    removed since, and the daemon on the containerd store does not list them.
    """
    found: dict[str, tuple[str, Path]] = {}
    unreadable: list[str] = []
    root = Path(data_root, "containers")
    for folder in sorted(p for p in (root.iterdir() if root.is_dir() else ()) if p.is_dir()):
        config = folder / "config.v2.json"
        try:
            data = json.loads(config.read_bytes())
        except (OSError, ValueError) as error:
            unreadable.append(f"{folder.name[:12]} ({config}: "
                              f"{getattr(error, 'strerror', None) or error})")
            continue
        if not isinstance(data, dict):
            unreadable.append(f"{folder.name[:12]} ({config}: not a JSON object)")
        elif data.get("Driver") == driver:
            found[str(data.get("ID") or config.parent.name)] = (
                str(data.get("Name") or "").lstrip("/"), config.parent)
    if unreadable:
        # Fail closed: a container we cannot read may well need the layers a prune deletes.
        raise BlockedError(
            f"cannot tell which store {len(unreadable)} container(s) belong to: "
            + "; ".join(unreadable[:5]) + "; pruning could destroy their data; nothing was "
            "deleted",
            "repair or remove those container directories (`docker rm` on the store they "
            "belong to), then run cleanup again")
    return found


def legacy_tags(data_root: str, driver: str) -> dict[str, str]:
    """Tag -> image ID, as the legacy store keeps them (`repositories.json`); {} if none.
    Digest references (`repo@sha256:...`) are not tags: a re-pull brings them back."""
    path = Path(data_root, "image", driver, "repositories.json")
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise BlockedError(f"cannot read the legacy store's tags in {path}: {error}; "
                           "refusing to prune what may not have been carried over",
                           "nothing was deleted; check the file, then run cleanup again") \
            from error
    repositories = data.get("Repositories") if isinstance(data, dict) else None
    return {str(ref): str(image) for refs in (repositories or {}).values()
            if isinstance(refs, dict) for ref, image in refs.items() if "@" not in str(ref)}
