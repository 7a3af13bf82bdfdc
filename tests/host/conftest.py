"""The `host` tier: one systemd-managed Debian host per engine, booted once per session.

Debian's docker.io runs under systemd there (docker.service, docker.socket, the separate
containerd.service) and the CLI runs INSIDE with its defaults only: no --host, no
--daemon-config, no --restart-command. Each test starts from a host on the legacy store with
no migration state, and leaves it so (the `systemd_host` fixture checks and repairs).
Host dirs are BASE_DIR/ph-<pytest pid>-..., reaped by a later session once that pid is gone.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from migrate.sandbox import BASE_DIR, SandboxError
from migrate.sandbox.systemd_host import (
    RUNNING,
    SystemdHost,
    populate_host,
)

from ..conftest import reap_stale

ENGINE_KEYS = ("26", "28")
SKIP_ENV = "CONTAINERD_MIGRATE_SKIP_ENGINE"
OWNER_PREFIX = "ph-"
STATE_DIR = "/var/lib/containerd-migrate"
DAEMON_JSON = "/etc/docker/daemon.json"
DROP_IN_DIR = "/etc/systemd/system/docker.service.d"
_names = itertools.count()


@dataclass
class Host:
    """A booted host and the ways a test drives it from inside."""

    box: SystemdHost

    def sh(self, *argv: str, env: Mapping[str, str] | None = None,
           check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = self.box.exec(argv, env=env, timeout=timeout)
        if check:
            assert done.returncode == 0, (
                f"{argv} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def cli(self, *args: str, env: Mapping[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`containerd-migrate ARGS` inside the host, with its defaults."""
        return self.sh("containerd-migrate", *args, env=env, check=False, timeout=timeout)

    def spawn(self, *args: str, env: Mapping[str, str] | None = None,
              ) -> subprocess.Popen[str]:
        return subprocess.Popen(self.box.exec_argv(["containerd-migrate", *args], env),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def inside(self, path: str) -> Path:
        """A path inside the host as seen from the machine (through its mounts)."""
        pid = self.box.init_pid()
        assert pid is not None, "the host is not running"
        return Path(f"/proc/{pid}/root") / path.lstrip("/")

    def unit(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh("systemctl", "show", unit, *(f"-p{p}" for p in props)).stdout
        return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)

    def restart_docker(self) -> None:
        """Set-up restarts, not the tool's: cleared of the start limit first."""
        self.sh("systemctl", "reset-failed", "docker.service", "docker.socket")
        self.sh("systemctl", "restart", "docker")

    def info(self) -> dict[str, object]:
        info: dict[str, object] = json.loads(
            self.sh("docker", "info", "--format", "{{json .}}").stdout)
        return info

    def store(self) -> str:
        status = self.info().get("DriverStatus") or []
        snapshotter = ["driver-type", "io.containerd.snapshotter.v1"] in status  # type: ignore[operator]
        return "containerd" if snapshotter else "legacy"

    def containers(self) -> dict[str, str]:
        out = self.sh("docker", "ps", "-a", "--format", "{{.Names}} {{.State}}").stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def image_tags(self) -> set[str]:
        out = self.sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        return {line for line in out.splitlines() if line}

    def reset_to_legacy(self) -> None:
        """Back to the start state if a failed test left the host elsewhere, with the
        start-limit counter cleared: each test counts its own starts (a run and its
        rollback make two), as on a host nobody restarted within the last minute."""
        self.sh("rm", "-rf", f"{DROP_IN_DIR}", STATE_DIR)
        self.sh("systemctl", "daemon-reload")
        self.sh("systemctl", "reset-failed", "docker.service", "docker.socket")
        active = self.unit("docker.service", "ActiveState")["ActiveState"] == "active"
        if self.sh("test", "-e", DAEMON_JSON, check=False).returncode == 0 or not active:
            self.sh("rm", "-f", DAEMON_JSON)
            self.restart_docker()
        if self.containers().get(RUNNING) != "running":
            self.sh("docker", "start", RUNNING)


@pytest.fixture(scope="session")
def _booted_hosts() -> Iterator[dict[str, Host]]:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1")
    reap_stale(OWNER_PREFIX, lambda directory: SystemdHost.open(directory).destroy())
    booted: dict[str, Host] = {}
    yield booted
    errors = []
    for host in booted.values():
        try:
            host.box.destroy()
        except SandboxError as error:
            errors.append(str(error))
    assert not errors, errors


@pytest.fixture(scope="session", params=ENGINE_KEYS, ids=[f"host{k}" for k in ENGINE_KEYS])
def _session_host(request: pytest.FixtureRequest, _booted_hosts: dict[str, Host]) -> Host:
    engine: str = request.param
    if engine not in _booted_hosts:
        directory = BASE_DIR / f"{OWNER_PREFIX}{os.getpid()}-{engine}-{next(_names)}"
        host = Host(SystemdHost(directory, engine))
        _booted_hosts[engine] = host
        host.box.start()
        populate_host(host.box)
    return _booted_hosts[engine]


@pytest.fixture
def systemd_host(_session_host: Host) -> Host:
    """The session's host of the current engine, on the legacy store with no migration
    state (Engine 26 on trixie, Engine 28 on sid, in turn)."""
    _session_host.reset_to_legacy()
    return _session_host
