"""A throwaway dockerd from the host's own binaries, for `containerd-migrate rehearse`.

Everything it owns lives in one directory (data root, exec root, socket, pidfile, config,
log), so it never touches the live daemon's data root, exec root, daemon.json or
containerd; its networking is off, so it creates no interface or firewall rule. Before it
is started, a record (`rehearsal.json`) is written in that directory, and completed with
its pid and the start time the kernel gives that pid: whatever kills the CLI, the next
rehearsal (or `cleanup`) kills that process only if it is still the same one, unmounts
what it left under the directory and removes it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.errors import MigrateError
from migrate.host.fs import write_private
from migrate.host.processes import alive_as, process_start_time, stop_process

RECORD_NAME = "rehearsal.json"
BINARIES = ("dockerd", "containerd", "containerd-shim-runc-v2", "runc")
# Unix socket paths are limited to 108 bytes (sun_path), NUL included.
MAX_SOCKET_PATH = 107
POLL = 0.1
# daemon.json keys that would clash with the flags that keep the engine private (dockerd
# refuses a directive given both ways), or that would reach outside its directory.
PRIVATE_KEYS = frozenset({
    "data-root", "graph", "exec-root", "hosts", "pidfile", "bridge", "bip", "fixed-cidr",
    "fixed-cidr-v6", "default-gateway", "default-gateway-v6", "iptables", "ip6tables",
    "ip-forward", "ip-masq", "userland-proxy", "containerd", "containerd-namespace",
    "metrics-addr", "tls", "tlsverify", "tlscacert", "tlscert", "tlskey",
    # Its containers must die with it: nothing of a rehearsal may outlive its engine.
    "live-restore",
})
# Variables that would make the throwaway engine speak as the live one (systemd's notify
# socket and socket activation) or aim it at another daemon.
_DROPPED_ENV_PREFIXES = ("DOCKER_", "NOTIFY_SOCKET", "LISTEN_", "INVOCATION_ID", "WATCHDOG_")


class ThrowawayError(MigrateError):
    """The throwaway engine could not be started or reached."""


def locate_binaries(dockerd: str | None, search_path: Sequence[str],
                    is_file: Any = os.path.isfile) -> tuple[dict[str, str], tuple[str, ...]]:
    """(name -> path, missing names) for the engine binaries (pure but for `is_file`).

    dockerd is the live daemon's own executable; the others are searched where that
    dockerd finds them (its PATH, given first in `search_path`), then next to it."""
    found: dict[str, str] = {}
    if dockerd:
        found["dockerd"] = dockerd
    dirs = [*search_path, *([os.path.dirname(dockerd)] if dockerd else [])]
    for name in BINARIES[1:]:
        for folder in dirs:
            candidate = os.path.join(folder, name)
            if folder and is_file(candidate):
                found[name] = candidate
                break
    return found, tuple(name for name in BINARIES if name not in found)


def private_config(target: Mapping[str, Any]) -> dict[str, Any]:
    """The daemon.json the switch would write, without the keys the private flags replace."""
    return {key: value for key, value in target.items() if key not in PRIVATE_KEYS}


def engine_env(live_env: Mapping[str, str], binaries: Mapping[str, str]) -> dict[str, str]:
    """The live dockerd's environment, minus what would tie it to the live daemon, with the
    binaries' directories first on PATH (dockerd and containerd look the rest up there)."""
    env = {k: v for k, v in live_env.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
    dirs = dict.fromkeys(os.path.dirname(path) for path in binaries.values())
    rest = env.get("PATH") or os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin"
    env["PATH"] = ":".join([*dirs, rest])
    return env


def mounts_under(directory: Path, mountinfo: str | None = None) -> list[str]:
    """Mount points below `directory`, deepest first (from /proc/self/mountinfo)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    targets = set()
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) > 4:
            target = _unescape(parts[4])
            if target.startswith(prefix):
                targets.add(target)
    return sorted(targets, key=lambda t: (t.count("/"), t), reverse=True)


def _unescape(path: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


@dataclass(frozen=True)
class ThrowawayEngine:
    dir: Path

    @property
    def record_path(self) -> Path:
        return self.dir / RECORD_NAME

    @property
    def socket_path(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def data_root(self) -> Path:
        return self.dir / "root"

    @property
    def exec_root(self) -> Path:
        return self.dir / "exec"

    @property
    def pidfile(self) -> Path:
        return self.dir / "docker.pid"

    @property
    def config_path(self) -> Path:
        return self.dir / "daemon.json"

    @property
    def log_path(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def containerd_socket(self) -> Path:
        """The socket of the containerd the throwaway dockerd starts (under its exec root)."""
        return self.exec_root / "containerd" / "containerd.sock"

    @property
    def archives_dir(self) -> Path:
        return self.dir / "archives"

    def socket_problem(self) -> str | None:
        """Why this directory cannot hold the engine's sockets (too long a path)."""
        longest = self.containerd_socket
        if len(str(longest.absolute())) > MAX_SOCKET_PATH:
            return (f"the rehearsal directory {self.dir} is too deep for unix sockets "
                    f"({longest} is longer than {MAX_SOCKET_PATH} bytes); give a shorter --dir")
        return None

    def argv(self, dockerd: str) -> list[str]:
        return [
            dockerd,
            "--config-file", str(self.config_path),
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root),
            "--host", self.host,
            "--pidfile", str(self.pidfile),
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
            "--userland-proxy=false",
        ]  # fmt: skip

    def read_record(self) -> dict[str, Any]:
        try:
            data = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_record(self, **fields: Any) -> None:
        record = {**self.read_record(), "dir": str(self.dir), **fields}
        write_private(self.record_path, json.dumps(record, indent=2).encode())

    def prepare(self, config: Mapping[str, Any]) -> None:
        """Create the directory, its record and the daemon.json; nothing runs yet."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write_record(state="preparing")
        write_private(self.config_path, (json.dumps(dict(config), indent=2) + "\n").encode())

    def start(self, binaries: Mapping[str, str], env: Mapping[str, str],
              timeout: float = 60.0) -> float:
        """Start dockerd (it starts its own containerd) and wait until it answers; returns
        the seconds that took. Its pid and start time are journaled before the wait."""
        self._write_record(state="starting")
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                self.argv(binaries["dockerd"]), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=dict(env), cwd=self.dir,
                # Its own session: a ^C at the terminal reaches the CLI, which stops it.
                start_new_session=True)
        self._write_record(state="started", pid=proc.pid,
                           start_time=process_start_time(proc.pid))
        deadline = began + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ThrowawayError(
                    f"the throwaway dockerd exited with {proc.returncode} at start: "
                    f"{self.log_tail()}", f"its whole log is {self.log_path} (with --keep)")
            if self.socket_path.exists() and _answers(self.socket_path):
                return time.monotonic() - began
            time.sleep(POLL)
        raise ThrowawayError(f"the throwaway dockerd did not answer within {timeout:.0f} s: "
                             f"{self.log_tail()}", "see its log (with --keep)")

    def record_child(self, pid: int) -> None:
        """Journal a process the CLI starts for this engine (`ctr import` of `--staged`)
        before it does anything: it can outlive a killed CLI, and is stopped with the
        engine."""
        children = [*self.read_record().get("children", []),
                    {"pid": pid, "start_time": process_start_time(pid)}]
        self._write_record(children=children)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def owned_pids(self) -> list[tuple[int, int | None]]:
        """(pid, start time) of the processes this directory's engine started: the
        children the CLI recorded (still the same processes), the one the record names,
        then those its pidfiles name whose command line names this directory (dockerd's,
        and that of the containerd it started)."""
        record = self.read_record()
        found: list[tuple[int, int | None]] = [
            (child["pid"], child["start_time"]) for child in record.get("children", [])
            if isinstance(child, dict) and isinstance(child.get("pid"), int)
            and isinstance(child.get("start_time"), int)
            and alive_as(child["pid"], child["start_time"])]
        pid, started = record.get("pid"), record.get("start_time")
        if isinstance(pid, int) and isinstance(started, int) and alive_as(pid, started):
            found.append((pid, started))
        for pidfile in (self.pidfile, self.exec_root / "containerd" / "containerd.pid"):
            other = _pid_naming(pidfile, self.dir)
            if other is not None and other not in {p for p, _ in found}:
                found.append((other, process_start_time(other)))
        return found

    def destroy(self, keep: bool = False, timeout: float = 30.0) -> list[str]:
        """Stop what it runs (by pid), unmount what it mounted, remove the directory
        (unless `keep`); returns what it did."""
        did: list[str] = []
        for pid, started in self.owned_pids():
            if stop_process(pid, started, timeout):
                did.append(f"stopped process {pid}")
        for target in mounts_under(self.dir):
            done = subprocess.run(["umount", target], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", target], capture_output=True, check=False)
            did.append(f"unmounted {target}")
        if not keep and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.dir.exists():
                raise ThrowawayError(f"could not remove the rehearsal directory {self.dir}",
                                     "remove it by hand once nothing uses it")
            did.append(f"removed {self.dir}")
        return did


def _pid_naming(pidfile: Path, directory: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if str(directory).encode() in cmdline else None


def _answers(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
            status = sock.recv(64).split(b" ")
            return len(status) > 1 and status[0].startswith(b"HTTP/1.") and status[1] == b"200"
    except OSError:
        return False


def live_search_path(live_env: Mapping[str, str]) -> list[str]:
    path = live_env.get("PATH") or os.environ.get("PATH") or ""
    return [p for p in path.split(":") if p]
