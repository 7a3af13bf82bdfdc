"""Process, mount and unix-socket helpers under the sandbox daemon (Linux /proc based)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

POLL = 0.05

# Daemons this process started: polling their Popen reaps them, so they never linger as
# zombies that /proc would still report as alive.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def track(child: subprocess.Popen[bytes]) -> None:
    _CHILDREN[child.pid] = child


def is_alive(pid: int) -> bool:
    # A daemon we started may have been stopped by another process (the restart CLI):
    # polling every child reaps it, so no zombie piles up in a long pytest session.
    for child_pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            del _CHILDREN[child_pid]
    if pid in _CHILDREN:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pid_from_file(pidfile: Path, marker: Path) -> int | None:
    """The pid in `pidfile` if that process is alive and `marker` is one of its arguments."""
    try:
        pid = int(pidfile.read_text().strip())
        alive = is_alive(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if alive else []
    except (OSError, ValueError):
        return None
    # A stale pidfile may name a recycled pid: trust it only if it is our daemon.
    return pid if str(marker).encode() in cmdline else None


def start_logged(argv: list[str], log_path: Path, env: Mapping[str, str], cwd: Path,
                 ) -> tuple[subprocess.Popen[bytes], int]:
    """Start a daemon appending to `log_path`; returns it and where its output begins."""
    with log_path.open("ab") as log:
        offset = log.tell()
        log.write(f"\n=== sandbox start {time.strftime('%F %T')}: {argv}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            # Own session: the daemon must outlive the CLI process that started it.
            start_new_session=True,
        )
    track(proc)
    return proc, offset


def log_tail(log_path: Path, lines: int = 30, since: int = 0) -> str:
    try:
        with log_path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
    except OSError:
        return f"(no {log_path.name})"
    return "\n".join(text.splitlines()[-lines:])


def wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def kill_matching(needle: bytes, programs: tuple[bytes, ...]) -> None:
    """SIGKILL every process whose cmdline holds `needle` and one of `programs`."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and any(program in cmdline for program in programs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def delete_links(names: Iterable[str]) -> list[str]:
    """Delete the network interfaces `names` that still exist; returns those it could not."""
    left = []
    for name in names:
        if not (Path("/sys/class/net") / name).exists():
            continue
        done = subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
        if done.returncode != 0:
            left.append(name)
    return left


def _unescape_mount(path: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()) + "/"
    lines = Path("/proc/mounts").read_text().splitlines()
    targets = {_unescape_mount(line.split()[1]) for line in lines}
    return sorted(t for t in targets if t.startswith(prefix))


def unmount_under(directory: Path) -> None:
    """Unmount everything below `directory`, deepest first (lazily if it is busy)."""
    for target in sorted(mounts_under(directory), key=lambda m: m.count("/"), reverse=True):
        done = subprocess.run(["umount", target], capture_output=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, sock_path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._sock_path = str(sock_path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._sock_path)
        self.sock = sock


def unix_request(sock_path: Path, method: str, path: str, timeout: float = 30.0,
                 ) -> tuple[int, bytes]:
    """One HTTP request over a unix socket: (status, body)."""
    conn = UnixHTTPConnection(sock_path, timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def unix_ping(sock_path: Path) -> bool:
    """Whether a Docker daemon answers `/_ping` on `sock_path`."""
    try:
        status, body = unix_request(sock_path, "GET", "/_ping", timeout=2.0)
    except OSError:
        return False
    return status == 200 and body.strip() == b"OK"
