"""How dockerd is started: flags and environment that daemon.json cannot override.

A `--storage-driver`/`-s` flag, DOCKER_DRIVER or any `--feature` flag makes the daemon
refuse to start (or start broken) once daemon.json enables the snapshotter, so the plan
must see them before editing anything (docs/engine-facts.md, "dockerd launch flags").
The parsing of command lines and of systemd's view of the unit is pure; the probes that
feed it read /proc and run `systemctl show`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from migrate.host.daemon_json import DEFAULT_PATH
from migrate.host.systemd import systemctl_show
from migrate.models import DOCKERD_CONTAINERD_NAMESPACE, Frozen

LaunchSource = Literal["systemd", "proc", "unknown"]
DEFAULT_SOCKET = "/var/run/docker.sock"

# Long flag -> DaemonLaunch field. Only flags whose value we read; others are skipped.
_VALUE_FLAGS: Mapping[str, str] = {
    "--config-file": "config_file", "--data-root": "data_root", "--graph": "data_root",
    "--exec-root": "exec_root", "--pidfile": "pidfile", "--host": "hosts",
    "--storage-driver": "storage_driver_flag", "--feature": "feature_flags",
    "--containerd": "containerd_flag", "--containerd-namespace": "containerd_namespace",
    "--userns-remap": "userns_remap_flag",
}
_BOOL_FLAGS: Mapping[str, str] = {"--live-restore": "live_restore"}
_REPEATED = frozenset({"hosts", "feature_flags"})
# dockerd shorthands (pflag): value-taking ones, and the boolean ones that can be clustered.
_SHORT_VALUE: Mapping[str, str] = {
    "s": "--storage-driver", "H": "--host", "p": "--pidfile", "g": "--graph",
    "G": "--group", "l": "--log-level", "b": "--bridge",
}
_SHORT_BOOL = frozenset("Dvh")
_EXEC_ARGV = re.compile(r"argv\[\]=(?P<argv>.*?) ; (?:ignore_errors|start_time)=")
_VAR = re.compile(r"\$\{(?P<braced>\w+)\}|\$(?P<bare>\w+)")


class DaemonLaunch(Frozen):
    source: LaunchSource = "unknown"
    pid: int | None = None
    argv: tuple[str, ...] = ()
    environment: dict[str, str] = Field(default_factory=dict)
    config_file: str | None = None
    data_root: str | None = None
    exec_root: str | None = None
    pidfile: str | None = None
    hosts: tuple[str, ...] = ()
    storage_driver_flag: str | None = None
    feature_flags: tuple[str, ...] = ()
    containerd_flag: str | None = None
    containerd_namespace: str | None = None
    docker_driver_env: str | None = None
    live_restore: bool | None = None
    userns_remap_flag: str | None = None
    # Where an operator edits ExecStart/Environment (unit file, then drop-ins).
    unit_files: tuple[str, ...] = ()
    # ExecStart variables systemd expands at start that we could not resolve (EnvironmentFile).
    unresolved_vars: tuple[str, ...] = ()
    # How long the unit's last start took (its main process started -> active, i.e. dockerd
    # ready), as systemd recorded it; None when not read. The plan's restart estimate.
    last_start_seconds: float | None = None


def parse_dockerd_argv(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    source: LaunchSource = "unknown",
    pid: int | None = None,
) -> DaemonLaunch:
    """Read the flags that matter out of a dockerd command line (pure)."""
    fields: dict[str, object] = {}
    repeated: dict[str, tuple[str, ...]] = {}
    for flag, value in _iter_flags(list(argv)):
        name = _BOOL_FLAGS.get(flag) or _VALUE_FLAGS.get(flag)
        if name is None:
            continue  # a shorthand we only parse to skip its value (-G, -l, -b)
        if name in _REPEATED:
            repeated[name] = (*repeated.get(name, ()), value)
        else:
            # pflag: for a single-valued flag the last occurrence wins.
            fields[name] = _parse_bool(value) if flag in _BOOL_FLAGS else value
    environment = dict(env or {})
    return DaemonLaunch.model_validate(
        {"source": source, "pid": pid, "argv": tuple(argv), "environment": environment,
         "docker_driver_env": environment.get("DOCKER_DRIVER") or None, **fields, **repeated}
    )


def _iter_flags(args: list[str]) -> Iterator[tuple[str, str]]:
    """Yield (long flag, value) pairs, following pflag's spellings."""
    i = 1 if args and not args[0].startswith("-") else 0  # skip the program name
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--":
            return
        if word.startswith("--"):
            name, eq, inline = word.partition("=")
            if name in _BOOL_FLAGS:
                yield name, inline if eq else "true"
            elif name in _VALUE_FLAGS:
                if not eq and i < len(args):
                    inline, i = args[i], i + 1
                yield name, inline
        elif word.startswith("-") and len(word) > 1:
            flag, value, consumed = _short_cluster(word[1:], args[i:])
            i += consumed
            if flag is not None:
                yield flag, value


def _short_cluster(cluster: str, rest: list[str]) -> tuple[str | None, str, int]:
    """`-sX`, `-s X`, `-s=X`, `-Ds X`: returns (long flag, value, extra args consumed)."""
    for pos, char in enumerate(cluster):
        if char in _SHORT_VALUE:
            inline = cluster[pos + 1 :].removeprefix("=")
            if inline:
                return _SHORT_VALUE[char], inline, 0
            return (_SHORT_VALUE[char], rest[0], 1) if rest else (None, "", 0)
        if char not in _SHORT_BOOL:
            return None, "", 0  # unknown shorthand: do not guess what follows
    return None, "", 0


def _parse_bool(value: str) -> bool | None:
    # Go's strconv.ParseBool, which pflag uses for `--live-restore=VALUE`.
    if value in {"1", "t", "T", "true", "TRUE", "True"}:
        return True
    if value in {"0", "f", "F", "false", "FALSE", "False"}:
        return False
    return None


def parse_exec_start(value: str) -> tuple[str, ...]:
    """argv of the dockerd entry in systemctl's `ExecStart={ path=... ; argv[]=... ; ... }`."""
    entries = [_split(m.group("argv")) for m in _EXEC_ARGV.finditer(value)]
    entries = [entry for entry in entries if entry]
    for entry in entries:
        if Path(entry[0]).name == "dockerd":
            return entry
    return entries[0] if entries else ()


def _split(text: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(text))
    except ValueError:
        return tuple(text.split())


def parse_environment(value: str) -> dict[str, str]:
    """systemd's `Environment=A=1 "B=two words"` property."""
    pairs = (item.partition("=") for item in _split(value))
    return {key: val for key, eq, val in pairs if key and eq}


def expand_systemd_vars(
    argv: Sequence[str], env: Mapping[str, str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """systemd expansion: `$VAR` alone splits on whitespace, `${VAR}` stays one word."""
    out: list[str] = []
    missing: list[str] = []
    for word in argv:
        bare = re.fullmatch(r"\$(\w+)", word)
        if bare:
            name = bare.group(1)
            out.extend(env.get(name, "").split())
            missing += [] if name in env else [name]
            continue
        missing += [m["braced"] or m["bare"] for m in _VAR.finditer(word)
                    if (m["braced"] or m["bare"]) not in env]
        out.append(_VAR.sub(lambda m: env.get(m["braced"] or m["bare"], ""), word))
    return tuple(out), tuple(dict.fromkeys(missing))


def parse_systemctl_show(text: str) -> DaemonLaunch | None:
    """Parse `systemctl show docker -p ...`; None when the unit is not loaded."""
    props = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    if props.get("LoadState", "loaded") != "loaded":
        return None
    raw_argv = parse_exec_start(props.get("ExecStart", ""))
    if not raw_argv:
        return None
    env = parse_environment(props.get("Environment", ""))
    argv, missing = expand_systemd_vars(raw_argv, env)
    main_pid = int(props.get("MainPID") or 0)
    launch = parse_dockerd_argv(argv, env, source="systemd", pid=main_pid or None)
    units = (props.get("FragmentPath", ""), *_split(props.get("DropInPaths", "")))
    return launch.model_copy(
        update={"unit_files": tuple(u for u in units if u), "unresolved_vars": missing,
                "last_start_seconds": last_start_seconds(props)}
    )


def last_start_seconds(props: Mapping[str, str]) -> float | None:
    """From `ExecMainStartTimestampMonotonic` to `ActiveEnterTimestampMonotonic` (µs), when
    both are set and in that order (0 or missing: the unit never started, or not yet)."""
    try:
        started = int(props.get("ExecMainStartTimestampMonotonic") or 0)
        active = int(props.get("ActiveEnterTimestampMonotonic") or 0)
    except ValueError:
        return None
    if started <= 0 or active < started:
        return None
    return (active - started) / 1_000_000


def merge_launches(primary: DaemonLaunch, secondary: DaemonLaunch) -> DaemonLaunch:
    """Systemd says what the next start runs; /proc shows what EnvironmentFile expanded to.

    A flag seen in either is kept, so a flag hidden in an EnvironmentFile is not missed.
    """
    merged = primary.model_dump()
    for name, value in secondary.model_dump().items():
        if name in {"source", "argv", "unit_files", "unresolved_vars"}:
            continue
        if name == "environment":
            merged[name] = {**value, **primary.environment}
        elif isinstance(value, tuple):
            merged[name] = tuple(dict.fromkeys((*merged[name], *value)))
        elif merged[name] is None:
            merged[name] = value
    return DaemonLaunch.model_validate(merged)


def socket_path(host: str | None) -> str | None:
    """Unix socket path of a DOCKER_HOST-style address; None for tcp:// and friends."""
    if host is None or host == "":
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        return host.removeprefix("unix://")
    return host if host.startswith("/") else None


def listens_on(launch: DaemonLaunch, path: str) -> bool:
    """Whether a dockerd with these flags serves the unix socket at `path`."""
    wanted = canonical_path(path)
    hosts = launch.hosts or (f"unix://{DEFAULT_SOCKET}",)
    for host in hosts:
        # fd:// is systemd socket activation, i.e. docker.socket on the default path.
        candidate = DEFAULT_SOCKET if host.startswith("fd://") else socket_path(host)
        if candidate is not None and canonical_path(candidate) == wanted:
            return True
    return False


def canonical_path(path: str) -> str:
    """`path` normalised, with /var/run spelt /run: a symlink on every systemd distribution."""
    path = os.path.normpath(path)
    return "/run/" + path.removeprefix("/var/run/") if path.startswith("/var/run/") else path


DEFAULT_PIDFILE = "/var/run/docker.pid"


def config_file_read(launch: DaemonLaunch) -> str | None:
    """The daemon.json this dockerd reads; None when its command line is unknown (pure)."""
    if launch.source == "unknown" or not launch.argv:
        return None
    return canonical_path(launch.config_file or DEFAULT_PATH)
SYSTEMD_UNIT = "docker.service"


# --- impure probes ---------------------------------------------------------------------


def from_proc(pid: int, proc_root: str = "/proc") -> DaemonLaunch | None:
    """The running process' argv and environment; None when the process is gone."""
    base = Path(proc_root) / str(pid)
    try:
        argv = _nul_split((base / "cmdline").read_bytes())
    except OSError:
        return None
    try:
        env_items = _nul_split((base / "environ").read_bytes())
    except OSError:
        env_items = ()  # environ is root-only for other users' processes
    env = {k: v for k, eq, v in (item.partition("=") for item in env_items) if eq}
    return parse_dockerd_argv(argv, env, source="proc", pid=pid)


def dockerd_binary(pid: int | None, proc_root: str = "/proc") -> str | None:
    """The running daemon's own executable (its version validates its config), else the
    dockerd on PATH; None when neither is found."""
    if pid is not None:
        try:
            exe = os.readlink(Path(proc_root) / str(pid) / "exe")
        except OSError:
            exe = ""
        if exe and Path(exe).is_file():
            return exe
    return shutil.which("dockerd")


def _nul_split(raw: bytes) -> tuple[str, ...]:
    return tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)


def systemd_booted() -> bool:
    # sd_booted(3): the canonical "systemd is PID 1" test.
    return Path("/run/systemd/system").is_dir()


def from_systemd(unit: str = SYSTEMD_UNIT) -> DaemonLaunch | None:
    props = ("LoadState", "ExecStart", "Environment", "MainPID", "FragmentPath", "DropInPaths",
             "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    text = systemctl_show(unit, props)
    return parse_systemctl_show(text) if text is not None else None


def find_dockerd_pid(
    host: str | None = None, *, proc_root: str = "/proc", pidfile: str = DEFAULT_PIDFILE
) -> int | None:
    """The dockerd serving `host`: by its -H flags, else the default pidfile."""
    path = socket_path(host)
    if path is None:
        return None
    matches = [launch.pid for launch in _dockerd_processes(proc_root) if listens_on(launch, path)]
    if len(matches) == 1:
        return matches[0]
    if canonical_path(path) != canonical_path(DEFAULT_SOCKET):
        return None
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _comm(Path(proc_root) / str(pid)) == "dockerd" else None


def _dockerd_processes(proc_root: str) -> Iterator[DaemonLaunch]:
    try:
        entries = [e for e in os.listdir(proc_root) if e.isdigit()]
    except OSError:
        return
    for entry in entries:
        if _comm(Path(proc_root) / entry) == "dockerd":
            launch = from_proc(int(entry), proc_root)
            if launch is not None:
                yield launch


def _comm(proc_dir: Path) -> str:
    try:
        return (proc_dir / "comm").read_text().strip()
    except OSError:
        return ""


def detect_launch(pid: int | None, host: str | None = None) -> DaemonLaunch:
    """Systemd when docker.service runs this daemon, else /proc, else unknown."""
    if pid is None:
        pid = find_dockerd_pid(host)
    proc = from_proc(pid) if pid is not None else None
    unit = from_systemd() if systemd_booted() else None
    # A throwaway engine on another socket is not docker.service, even if that unit exists.
    if unit is not None and (pid is None or unit.pid == pid):
        return merge_launches(unit, proc) if proc is not None else unit
    if proc is not None:
        return proc
    return DaemonLaunch(source="unknown", pid=pid)


DEFAULT_EXEC_ROOT = "/var/run/docker"


def managed_containerd_socket(exec_root: str | None) -> str:
    """The socket of the containerd that dockerd starts itself, under its exec-root."""
    return os.path.join(exec_root or DEFAULT_EXEC_ROOT, "containerd", "containerd.sock")


def containerd_endpoint(launch: DaemonLaunch, config: Mapping[str, object] | None = None,
                        ) -> tuple[str, str]:
    """(socket, namespace) of the containerd whose store dockerd uses in containerd mode.

    A flag wins over its daemon.json key, as in dockerd; without either, dockerd's own
    containerd under the exec-root, namespace `moby`.
    """
    config = config or {}
    exec_root = launch.exec_root or _str(config.get("exec-root"))
    socket = (launch.containerd_flag or _str(config.get("containerd"))
              or managed_containerd_socket(exec_root))
    namespace = (launch.containerd_namespace or _str(config.get("containerd-namespace"))
                 or DOCKERD_CONTAINERD_NAMESPACE)
    return socket, namespace


def names_containerd(launch: DaemonLaunch, config: Mapping[str, object] | None = None) -> bool:
    """Whether dockerd is told to use a containerd it does not start (flag or daemon.json)."""
    return bool(launch.containerd_flag or _str((config or {}).get("containerd")))


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
