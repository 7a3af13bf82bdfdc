"""One throwaway dockerd whose whole state lives in a single directory.

Everything needed to drive the daemon (engine key, daemon.json, extra flags, pidfile, log)
is a file in that directory, so a separate process (`python -m migrate.sandbox restart`)
can stop and start the same daemon without any in-memory handle.

A sandbox made with `external_containerd=True` runs a containerd of its own (containerd.py)
and starts dockerd with `--containerd` on its socket, as on a host with a system
containerd: stop and restart touch dockerd only; destroy stops that containerd too. The
endpoint can name a namespace other than `moby` (`--containerd-namespace`), and can be
given as the daemon.json keys `containerd` / `containerd-namespace` instead of flags.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.sandbox.containerd import ContainerdStartError, ExternalContainerd
from migrate.sandbox.fetch import engine_bin_dirs, ensure_engine, spec
from migrate.sandbox.system import (
    POLL,
    delete_links,
    kill_matching,
    log_tail,
    pid_from_file,
    start_logged,
    unix_ping,
    unix_request,
    unmount_under,
    wait_exit,
)

# Short on purpose: unix socket paths are limited to 108 bytes.
BASE_DIR = Path("/tmp/cm-sandbox")  # noqa: S108
# Debian's packaged runc lives here; the engine packages' own runc needs a newer glibc.
SYSTEM_RUNC_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SandboxError(RuntimeError):
    """The sandbox daemon could not be started, stopped or reached."""


@dataclass(frozen=True)
class Sandbox:
    dir: Path
    engine: str
    # Only read when the sandbox is first created; afterwards its directory says it.
    external_containerd: bool = False
    # With external_containerd: the namespace dockerd uses there (None: dockerd's `moby`),
    # and whether daemon.json names the endpoint instead of dockerd's flags.
    containerd_namespace: str | None = None
    containerd_in_daemon_json: bool = False

    def __post_init__(self) -> None:
        if (self.containerd_namespace or self.containerd_in_daemon_json) and not (
                self.external_containerd):
            raise SandboxError("a containerd namespace or daemon.json endpoint needs "
                               "external_containerd=True")

    @classmethod
    def named(cls, name: str, engine: str) -> Sandbox:
        return cls(BASE_DIR / name, engine)

    @classmethod
    def open(cls, directory: Path) -> Sandbox:
        """Rebuild the handle of an existing sandbox from its directory alone."""
        marker = directory / "engine"
        if not marker.is_file():
            raise SandboxError(f"{directory} is not a sandbox (no {marker.name} file)")
        return cls(directory, marker.read_text().strip())

    @property
    def own_containerd(self) -> ExternalContainerd | None:
        """The containerd this sandbox runs beside dockerd, if it was made with one."""
        containerd = ExternalContainerd(self.dir / "containerd", self.engine)
        return containerd if containerd.config.exists() else None

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def socket_path(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def daemon_json(self) -> Path:
        return self.dir / "daemon.json"

    @property
    def restart_command(self) -> str:
        """The restart command containerd-migrate is given for this sandbox (shell-quoted)."""
        return shlex.join([sys.executable, "-m", "migrate.sandbox", "restart", "--dir",
                           str(self.dir)])

    def migrate_env(self, state_dir: Path) -> dict[str, str]:
        """The CONTAINERD_MIGRATE_* variables that aim containerd-migrate at this sandbox."""
        return {
            "CONTAINERD_MIGRATE_HOST": self.host,
            "CONTAINERD_MIGRATE_DAEMON_CONFIG": str(self.daemon_json),
            "CONTAINERD_MIGRATE_STATE_DIR": str(state_dir),
            "CONTAINERD_MIGRATE_RESTART_COMMAND": self.restart_command,
            "DOCKER_HOST": self.host,
        }

    @property
    def extra_args_file(self) -> Path:
        return self.dir / "extra-args.json"

    @property
    def containerd_args_file(self) -> Path:
        """dockerd's flags naming the sandbox's own containerd (absent: none, or daemon.json)."""
        return self.dir / "containerd-args.json"

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
    def log_path(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def containerd_socket(self) -> Path:
        """The socket of the containerd whose store dockerd uses (after a switch)."""
        containerd = self.own_containerd
        if containerd is not None:
            return containerd.socket_path
        return self.exec_root / "containerd" / "containerd.sock"

    def pid(self) -> int | None:
        """Pid of this sandbox's dockerd if it is alive (checked against its cmdline)."""
        return pid_from_file(self.pidfile, self.pidfile)

    def is_running(self) -> bool:
        return self.pid() is not None

    def env(self) -> dict[str, str]:
        """Environment for dockerd: Debian 12 runc strictly first, then the engine binaries."""
        runc_dir = self.dir / "bin"
        path = [str(runc_dir), *map(str, engine_bin_dirs(self.engine)), SYSTEM_PATH]
        # DOCKER_* variables (DOCKER_DRIVER, DOCKER_HOST...) would leak the caller's setup.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["PATH"] = ":".join(path)
        return env

    def argv(self) -> list[str]:
        # The machine's /etc/docker/daemon.json must never be read, so a config file is
        # always passed; /dev/null is what dockerd accepts as "no settings at all".
        config = self.daemon_json if self.daemon_json.exists() else Path("/dev/null")
        dockerd = engine_bin_dirs(self.engine)[1] / "dockerd"
        return [
            str(dockerd),
            "--config-file", str(config),
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root),
            "--host", self.host,
            "--pidfile", str(self.pidfile),
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            *_args_from(self.containerd_args_file),
            *self.extra_args(),
        ]  # fmt: skip

    def extra_args(self) -> list[str]:
        return _args_from(self.extra_args_file)

    def _point_at_own_containerd(self, containerd: ExternalContainerd) -> None:
        """Write where dockerd finds its containerd: flags file, or daemon.json keys."""
        endpoint = {"containerd": str(containerd.socket_path)}
        if self.containerd_namespace:
            endpoint["containerd-namespace"] = self.containerd_namespace
        if self.containerd_in_daemon_json:
            config = json.loads(self.daemon_json.read_text())
            self.daemon_json.write_text(json.dumps({**config, **endpoint}, indent=2) + "\n")
        else:
            flags = [word for key, value in endpoint.items() for word in (f"--{key}", value)]
            self.containerd_args_file.write_text(json.dumps(flags) + "\n")

    def _initialise(self) -> None:
        spec(self.engine)
        marker = self.dir / "engine"
        if marker.exists():
            recorded = marker.read_text().strip()
            if recorded != self.engine:
                raise SandboxError(f"{self.dir} belongs to engine {recorded}, not {self.engine}")
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        # Only the first start creates daemon.json: a test may delete it on purpose later.
        if not self.daemon_json.exists():
            self.daemon_json.write_text("{}\n")
        if self.external_containerd:
            containerd = ExternalContainerd(self.dir / "containerd", self.engine)
            containerd.configure()
            self._point_at_own_containerd(containerd)
        marker.write_text(self.engine + "\n")

    def _link_runc(self) -> None:
        found = [Path(d) / "runc" for d in SYSTEM_RUNC_DIRS if (Path(d) / "runc").exists()]
        if not found:
            raise SandboxError("no system runc found: apt-get install -y runc")
        runc, link = found[0], self.dir / "bin" / "runc"
        link.parent.mkdir(exist_ok=True)
        if not link.is_symlink() or Path(os.readlink(link)) != runc:
            link.unlink(missing_ok=True)
            link.symlink_to(runc)

    def start(self, timeout: float = 60.0) -> None:
        if self.is_running():
            return
        ensure_engine(self.engine)
        self._initialise()
        self._link_runc()
        containerd = self.own_containerd
        if containerd is not None:
            try:
                containerd.start(self.env(), timeout)
            except ContainerdStartError as error:
                raise SandboxError(str(error)) from error
        proc, offset = start_logged(self.argv(), self.log_path, self.env(), self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SandboxError(
                    f"dockerd ({self.engine}) in {self.dir} exited with {proc.returncode}:\n"
                    + self.log_tail(since=offset)
                )
            if self.ping():
                return
            time.sleep(POLL)
        proc.terminate()
        raise SandboxError(
            f"dockerd in {self.dir} not answering after {timeout}s:\n" + self.log_tail(since=offset)
        )

    @property
    def bridges_file(self) -> Path:
        """The bridge interfaces of this daemon's networks, as it named them while it ran."""
        return self.dir / "bridges.json"

    def _record_bridges(self) -> None:
        """dockerd leaves its networks' bridges in the host's network namespace when it stops
        (it finds them again at its next start); a removed data root forgets them, and
        leaked bridges hold the default address pools until no network can be created."""
        try:
            networks = self.api("/networks")
        except (SandboxError, OSError, ValueError):
            return
        names = {str((n.get("Options") or {}).get("com.docker.network.bridge.name")
                     or f"br-{n['Id'][:12]}")
                 for n in networks if n.get("Driver") == "bridge"}
        self.bridges_file.write_text(json.dumps(sorted(set(self._recorded_bridges()) | names)))

    def _recorded_bridges(self) -> list[str]:
        return list(json.loads(self.bridges_file.read_text())) \
            if self.bridges_file.exists() else []

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is not None and self.ping():
            self._record_bridges()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not wait_exit(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                wait_exit(pid, 10.0)
                self._kill_leftovers()
        if self.own_containerd is None:
            self.unmount()
        else:
            # What the running containerd mounted (its snapshots, its tasks) stays, as a
            # system containerd's does when docker restarts.
            unmount_under(self.data_root)
            unmount_under(self.exec_root)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)

    def _kill_leftovers(self) -> None:
        # After a hard kill, containerd and shims of this sandbox would keep mounts busy.
        kill_matching(str(self.exec_root).encode(), (b"containerd", b"dockerd"))

    def destroy(self) -> None:
        self.stop()
        self._kill_leftovers()
        containerd = self.own_containerd
        if containerd is not None:
            containerd.stop()
        self.unmount()
        left = delete_links(self._recorded_bridges())
        shutil.rmtree(self.dir, ignore_errors=True)
        if left:
            raise SandboxError(f"could not delete the bridge(s) {', '.join(left)} of {self.dir}")
        if self.dir.exists():
            raise SandboxError(f"could not remove {self.dir}")

    def unmount(self) -> None:
        unmount_under(self.dir)

    def request(self, method: str, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
        return unix_request(self.socket_path, method, path, timeout)

    def ping(self) -> bool:
        return unix_ping(self.socket_path)

    def api(self, path: str, **query: str) -> Any:
        """GET a Docker API path (query values URL-encoded) and decode the JSON answer."""
        url = f"{path}?{urllib.parse.urlencode(query)}" if query else path
        status, body = self.request("GET", url)
        if status != 200:
            raise SandboxError(f"GET {url} -> {status}: {body[:300]!r}")
        return json.loads(body)

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.api("/info")
        return info

    def containerd_snapshotter(self) -> bool:
        """True when the daemon uses the containerd image store (see docs/engine-facts.md)."""
        status = self.info().get("DriverStatus") or []
        return ["driver-type", "io.containerd.snapshotter.v1"] in status

    def log_tail(self, lines: int = 30, since: int = 0) -> str:
        return log_tail(self.log_path, lines, since)


def _args_from(path: Path) -> list[str]:
    """A JSON list of extra dockerd arguments; none when the file is absent."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if not isinstance(data, list) or not all(isinstance(a, str) for a in data):
        raise SandboxError(f"{path} must hold a JSON list of strings")
    return list(data)
