"""daemon.json: what dockerd accepts in it, how the switch rewrites it, and reading it from disk.

The rules are pure functions on the file's content (bytes in, JSON object out, and back);
decoding and editing raise DaemonConfigError, because writing on top of a file we
misunderstood turns a refused plan into a daemon that will not start (docs/engine-facts.md,
"daemon.json traps"). Reading the file for a plan never raises: a plan must be able to
describe a broken file.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from pydantic import Field

from migrate.errors import DaemonConfigError
from migrate.models import Frozen

SNAPSHOTTER_FEATURE = "containerd-snapshotter"

# With the feature on, `storage-driver` names a snapshotter: keeping `overlay2` lets the
# daemon start and load images, then every container create fails.
LEGACY_STORAGE_DRIVER_MAPPING: Mapping[str, str] = MappingProxyType(
    {"overlay2": "overlayfs", "vfs": "native"}
)
UNMAPPABLE_DRIVERS = frozenset({"btrfs", "zfs", "fuse-overlayfs", "devicemapper", "aufs"})
# The snapshotter dockerd picks on the containerd store when daemon.json names none.
DEFAULT_SNAPSHOTTER = "overlayfs"
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
        data = json.loads(text, object_pairs_hook=_reject_duplicates,
                          parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise DaemonConfigError("daemon.json is nested too deeply to be a daemon config",
                                hint=_SYNTAX_HINT) from exc
    except ValueError as exc:  # JSONDecodeError, and ints longer than Python converts
        raise DaemonConfigError(f"daemon.json is not valid JSON: {exc}",
                                hint=_SYNTAX_HINT) from exc
    if not isinstance(data, dict):
        raise DaemonConfigError(
            f"daemon.json must hold a JSON object, found {type(data).__name__}",
            hint="replace the content with a JSON object, e.g. {}",
        )
    return data


_SYNTAX_HINT = "fix the syntax (dockerd --validate --config-file FILE checks it) and re-run"


def _reject_constant(name: str) -> Any:
    # Go's encoding/json, which dockerd uses, has no NaN or Infinity.
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def read_regular(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file; a FIFO, device or directory raises DaemonConfigError
    without blocking (opened non-blocking, checked before the first read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DaemonConfigError(f"{path} is not a regular file",
                                    hint="daemon.json must be a plain file; replace it")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks), info
    finally:
        os.close(fd)


def validate_with_dockerd(dockerd: str, raw: bytes, timeout: float = 30.0) -> str | None:
    """What `dockerd --validate --config-file` says against these bytes; None when OK.

    dockerd's own parser is the only reliable judge (Go JSON, typed fields, label
    syntax...). Its directory goes first on PATH: it looks for docker-proxy there.
    """
    with tempfile.TemporaryDirectory(prefix="cm-validate-") as folder:
        candidate = Path(folder) / "daemon.json"
        candidate.write_bytes(raw)
        env = {**os.environ,
               "PATH": f"{Path(dockerd).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        try:
            done = subprocess.run([dockerd, "--validate", "--config-file", str(candidate)],
                                  capture_output=True, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot run {dockerd} --validate: {exc}"
    if done.returncode == 0:
        return None
    text = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}")
    return text.replace(str(candidate), "daemon.json").splitlines()[-1][:500]


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
        raw, st = read_regular(p)
    except FileNotFoundError:
        return base
    except OSError as exc:
        return base.model_copy(update={"exists": True, "parse_error": f"cannot read: {exc}"})
    except DaemonConfigError as exc:
        return base.model_copy(update={"exists": True, "parse_error": exc.message})
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
            hint="pass --follow-symlinks to edit the target, or replace the link by a file",
        )
    try:
        raw, st = read_regular(p)
    except FileNotFoundError:
        if p.is_symlink():
            raise DaemonConfigError(f"{p} is a dangling symlink") from None
        return EditableConfig(None, DEFAULT_NEW_FILE_MODE, 0, 0)
    except PermissionError as exc:
        raise DaemonConfigError(f"cannot read {p}: {exc}", hint="run as root") from exc
    except OSError as exc:
        raise DaemonConfigError(f"cannot read {p}: {exc}") from exc
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
