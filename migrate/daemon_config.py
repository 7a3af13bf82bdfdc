"""Read, analyse and rewrite daemon.json for the switch to the containerd image store.

Reading never raises: a plan must be able to describe a broken file. Editing raises
DaemonConfigError, because writing on top of a file we misunderstood turns a refused
plan into a daemon that will not start (engine-facts.md, "daemon.json traps").
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import Field

# The rules on daemon.json content live in daemon_config_rules; they are re-exported here
# so that callers keep importing everything from migrate.daemon_config.
from migrate.daemon_config_rules import (
    KNOWN_SNAPSHOTTERS,
    LEGACY_STORAGE_DRIVER_MAPPING,
    SNAPSHOTTER_FEATURE,
    UNMAPPABLE_DRIVERS,
    choose_snapshotter,
    config_problems,
    feature_typos,
    parse_config_bytes,
    redact,
    render_config,
    target_config,
    validate_for_edit,
)
from migrate.errors import DaemonConfigError
from migrate.models import Frozen

__all__ = [
    "DEFAULT_NEW_FILE_MODE", "DEFAULT_PATH", "KNOWN_SNAPSHOTTERS",
    "LEGACY_STORAGE_DRIVER_MAPPING", "SNAPSHOTTER_FEATURE", "UNMAPPABLE_DRIVERS",
    "DaemonConfigState", "EditableConfig", "choose_snapshotter", "config_problems",
    "feature_typos", "load_for_edit", "parse_config_bytes", "read_daemon_config", "redact",
    "render_config", "target_config", "validate_for_edit",
]

DEFAULT_PATH = "/etc/docker/daemon.json"
DEFAULT_NEW_FILE_MODE = 0o644


class DaemonConfigState(Frozen):
    """What daemon.json looks like now. Raw bytes stay out: the plan is pasted into tickets."""

    path: str
    exists: bool = False
    is_symlink: bool = False
    symlink_target: str | None = None
    readable: bool = False
    # Set when the file cannot be read or is not a JSON object; dockerd would exit 1.
    parse_error: str | None = None
    data: dict[str, Any] | None = None
    sha256: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    writable: bool = False
    features: dict[str, Any] = Field(default_factory=dict)
    storage_driver: str | None = None
    userns_remap: str | None = None
    containerd_snapshotter: bool | None = None
    # Values dockerd refuses at start (e.g. `"true"` as a string).
    problems: tuple[str, ...] = ()
    # Feature keys dockerd silently ignores but that look like a misspelt snapshotter flag.
    feature_typos: tuple[str, ...] = ()
    other_keys: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.parse_error is None and not self.problems


class EditableConfig(NamedTuple):
    raw: bytes | None
    mode: int
    uid: int
    gid: int



def read_daemon_config(path: str | os.PathLike[str] = DEFAULT_PATH) -> DaemonConfigState:
    """Describe daemon.json; missing, unreadable or invalid files are recorded, not raised."""
    p = Path(path)
    is_link = p.is_symlink()
    target = os.readlink(p) if is_link else None
    base = DaemonConfigState(
        path=str(p), is_symlink=is_link, symlink_target=target, writable=_writable(p)
    )
    try:
        st = p.stat()
        raw = p.read_bytes()
    except FileNotFoundError:
        return base
    except OSError as exc:
        return base.model_copy(update={"exists": True, "parse_error": f"cannot read: {exc}"})
    owner = {"exists": True, "readable": True, "mode": stat.S_IMODE(st.st_mode),
             "uid": st.st_uid, "gid": st.st_gid, "sha256": hashlib.sha256(raw).hexdigest()}
    try:
        data = parse_config_bytes(raw)
    except DaemonConfigError as exc:
        return base.model_copy(update={**owner, "parse_error": exc.message})
    return DaemonConfigState.model_validate(
        {**base.model_dump(), **owner, **_summary(data)}
    )


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    features = data.get("features")
    features = features if isinstance(features, dict) else {}
    snapshotter = features.get(SNAPSHOTTER_FEATURE)
    driver = data.get("storage-driver")
    userns = data.get("userns-remap")
    return {
        "data": data,
        "features": features,
        "storage_driver": driver if isinstance(driver, str) else None,
        "userns_remap": str(userns) if userns else None,
        "containerd_snapshotter": snapshotter if isinstance(snapshotter, bool) else None,
        "problems": config_problems(data),
        "feature_typos": feature_typos(features),
        "other_keys": tuple(k for k in data if k not in {"features", "storage-driver"}),
    }


def load_for_edit(
    path: str | os.PathLike[str] = DEFAULT_PATH, follow_symlinks: bool = False
) -> EditableConfig:
    """Current bytes and ownership for the rollback journal; raw is None when absent."""
    p = Path(path)
    if p.is_symlink() and not follow_symlinks:
        raise DaemonConfigError(
            f"{p} is a symlink to {os.readlink(p)}",
            hint="allow following symlinks to edit the target, or replace the link by a file",
        )
    try:
        st = p.stat()
        raw = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
    except FileNotFoundError:
        if p.is_symlink():
            raise DaemonConfigError(f"{p} is a dangling symlink") from None
        return EditableConfig(None, DEFAULT_NEW_FILE_MODE, 0, 0)
    except PermissionError as exc:
        raise DaemonConfigError(f"cannot read {p}: {exc}", hint="run as root") from exc
    if raw is None:
        raise DaemonConfigError(f"{p} is not a regular file")
    validate_for_edit(parse_config_bytes(raw))
    return EditableConfig(raw, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def _writable(p: Path) -> bool:
    # Replacing the file atomically needs a writable directory as well as a writable file.
    try:
        real = p.resolve()
    except (OSError, RuntimeError):  # symlink loop
        return False
    parent = real.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    dir_ok = os.access(parent, os.W_OK | os.X_OK)
    return dir_ok and (not real.exists() or os.access(real, os.W_OK))
