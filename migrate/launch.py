"""How dockerd is started: flags and environment that daemon.json cannot override.

A `--storage-driver`/`-s` flag, DOCKER_DRIVER or any `--feature` flag makes the daemon
refuse to start (or start broken) once daemon.json enables the snapshotter, so the plan
must see them before editing anything (engine-facts.md, "daemon.json traps").
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

# The model and the pure parsing live in launch_parse; they are re-exported here so that
# callers keep importing everything from migrate.launch.
from migrate.launch_parse import (
    DEFAULT_SOCKET,
    DaemonLaunch,
    LaunchSource,
    _canonical,
    expand_systemd_vars,
    listens_on,
    merge_launches,
    parse_dockerd_argv,
    parse_environment,
    parse_exec_start,
    parse_systemctl_show,
    socket_path,
)

__all__ = [
    "DEFAULT_PIDFILE", "DEFAULT_SOCKET", "SYSTEMD_UNIT", "DaemonLaunch", "LaunchSource",
    "detect_launch", "expand_systemd_vars", "find_dockerd_pid", "from_proc", "from_systemd",
    "listens_on", "merge_launches", "parse_dockerd_argv", "parse_environment",
    "parse_exec_start", "parse_systemctl_show", "socket_path", "systemd_booted",
]

DEFAULT_PIDFILE = "/var/run/docker.pid"
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


def _nul_split(raw: bytes) -> tuple[str, ...]:
    return tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)


def systemd_booted() -> bool:
    # sd_booted(3): the canonical "systemd is PID 1" test.
    return Path("/run/systemd/system").is_dir()


def from_systemd(unit: str = SYSTEMD_UNIT) -> DaemonLaunch | None:
    props = ("LoadState", "ExecStart", "Environment", "MainPID", "FragmentPath", "DropInPaths")
    command = ["systemctl", "show", unit, "--no-pager"]
    for prop in props:
        command += ["-p", prop]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_systemctl_show(done.stdout) if done.returncode == 0 else None


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
    if _canonical(path) != _canonical(DEFAULT_SOCKET):
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
