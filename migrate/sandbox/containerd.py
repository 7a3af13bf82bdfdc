"""A containerd of the sandbox's own, for a dockerd started with `--containerd=SOCK`.

On hosts with a system containerd (the containerd.io package, a distribution's
containerd unit) dockerd does not manage containerd: it connects to that socket, and a
restart of docker leaves containerd (and its image store) running. This reproduces that:
the engine cache's `containerd` binary, its root, state, socket and config all under the
sandbox directory, its pid in a file so another process (the restart CLI) finds it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from migrate.sandbox.fetch import engine_bin_dirs
from migrate.sandbox.system import (
    POLL,
    kill_matching,
    log_tail,
    pid_from_file,
    start_logged,
    wait_exit,
)

# The same settings dockerd writes for the containerd it manages (CRI off), plus the `opt`
# plugin off: its default directory is the machine's /opt/containerd.
CONFIG = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]

[grpc]
  address = "{socket}"
"""


class ContainerdStartError(RuntimeError):
    """The sandbox's own containerd exited or did not open its socket in time."""


@dataclass(frozen=True)
class ExternalContainerd:
    dir: Path
    engine: str

    @property
    def config(self) -> Path:
        return self.dir / "config.toml"

    @property
    def socket_path(self) -> Path:
        return self.dir / "containerd.sock"

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def pidfile(self) -> Path:
        return self.dir / "containerd.pid"

    @property
    def log_path(self) -> Path:
        return self.dir / "containerd.log"

    def configure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.config.exists():
            self.config.write_text(CONFIG.format(root=self.root, state=self.dir / "state",
                                                 socket=self.socket_path))

    def pid(self) -> int | None:
        """Pid of this containerd if it is alive (checked against its cmdline)."""
        return pid_from_file(self.pidfile, self.config)

    def answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def start(self, env: dict[str, str], timeout: float = 60.0) -> None:
        """Start it unless it runs (a running one still opening its socket is waited for)."""
        proc, offset = None, 0
        if self.pid() is None:
            self.configure()
            argv = [str(engine_bin_dirs(self.engine)[0] / "containerd"),
                    "--config", str(self.config)]
            # Like a system service, it outlives every dockerd restart; the shims it
            # starts find runc on this PATH.
            proc, offset = start_logged(argv, self.log_path, env, self.dir)
            self.pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while not self.answers():
            exited = proc is not None and proc.poll() is not None
            if exited or time.monotonic() >= deadline:
                if proc is not None:
                    proc.kill()
                raise ContainerdStartError(
                    f"containerd ({self.engine}) in {self.dir} did not open "
                    f"{self.socket_path} in {timeout:.0f} s:\n"
                    + log_tail(self.log_path, since=offset))
            time.sleep(POLL)

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not wait_exit(pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_exit(pid, 10.0)
        # Shims of containers it ran are started with its socket as their address.
        kill_matching((str(self.dir) + "/").encode(), (b"containerd",))
        self.pidfile.unlink(missing_ok=True)
