"""`containerd-migrate rehearse` on a real systemd-managed Debian host (issue 20).

Inside the host, with the tool's defaults only: the rehearsal passes on Debian's docker.io
(Engine 26 on trixie, Engine 28 on sid), its throwaway engine is made of the host's packaged
binaries (files of Debian packages under /usr), and the live engine is left exactly as it
was: docker.service and containerd.service keep their main processes, the running container
its process, daemon.json stays absent, and no process or mount of the rehearsal is left.
"""

from __future__ import annotations

import json

import pytest

from migrate.commands.rehearse import DEFAULT_DIR_NAME, PENDING_NAME
from migrate.errors import ExitCode
from migrate.host.throwaway import BINARIES
from migrate.sandbox.systemd_host import APP_TAGS, BASE_IMAGE, EXITED, RUNNING

from .conftest import DAEMON_JSON, STATE_DIR, Host

pytestmark = pytest.mark.host

UNITS = ("docker.service", "containerd.service")
REHEARSAL_DIR = f"{STATE_DIR}/{DEFAULT_DIR_NAME}"
# Inside the host: every process as "pid exe" and PID 1's mount points, one per line.
PROCESSES = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        print(pid, os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        pass
"""


def _main_pids(host: Host) -> dict[str, str]:
    return {unit: host.unit(unit, "MainPID")["MainPID"] for unit in UNITS}


def _engine_processes(host: Host) -> set[str]:
    """The host's engine processes (dockerd, containerd, shims, runc) as "pid exe"."""
    lines = host.sh("python3", "-c", PROCESSES).stdout.splitlines()
    return {line for line in lines if line.rsplit("/", 1)[-1] in BINARIES}


def _mount_points(host: Host) -> set[str]:
    return {line.split()[4] for line in
            host.sh("cat", "/proc/1/mountinfo").stdout.splitlines()}


def _container_pid(host: Host, name: str) -> str:
    return host.sh("docker", "inspect", "--format", "{{.State.Pid}}", name).stdout.strip()


def test_rehearse_with_the_defaults_uses_the_packaged_binaries_and_changes_nothing(
        systemd_host: Host) -> None:
    host = systemd_host
    pids = _main_pids(host)
    assert all(pid != "0" for pid in pids.values()), pids
    processes = _engine_processes(host)
    mounts = _mount_points(host)
    web_pid = _container_pid(host, RUNNING)
    tags = host.image_tags()

    done = host.cli("rehearse", "--format", "json", timeout=600)

    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["failures"] == [], report
    assert report["containers"] == report["containers_created"] == 2
    assert {BASE_IMAGE, *APP_TAGS} <= tags
    assert report["images"] == 2  # the base image, and the app image under its two tags
    # The host's own packaged binaries: docker.service's dockerd, Debian's containerd, shim
    # and runc, each a file of an installed package.
    binaries = report["binaries"]
    assert sorted(binaries) == sorted(BINARIES), binaries
    assert report["dockerd"] == binaries["dockerd"] == "/usr/sbin/dockerd"
    for name, path in binaries.items():
        assert path.startswith("/usr/") and path.endswith(f"/{name}"), binaries
        owner = host.sh("dpkg", "-S", path, check=False)
        assert owner.returncode == 0, f"{path} is in no package: {owner.stderr}"
    figures = report["figures"]
    assert figures["engine_start_seconds"] > 0 and figures["archive_bytes"] > 0
    assert figures["window_seconds"] >= figures["engine_start_seconds"]

    # The live engine as it was: same main processes, the container never restarted.
    assert _main_pids(host) == pids
    assert all(host.unit(unit, "ActiveState")["ActiveState"] == "active" for unit in UNITS)
    assert _container_pid(host, RUNNING) == web_pid
    assert host.containers() == {RUNNING: "running", EXITED: "exited"}
    assert host.store() == "legacy" and host.image_tags() == tags
    assert host.sh("test", "-e", DAEMON_JSON, check=False).returncode != 0
    # Nothing of the rehearsal left: no process, no mount, no directory.
    assert _engine_processes(host) == processes
    assert _mount_points(host) - mounts == set()
    assert not any(point.startswith(REHEARSAL_DIR) for point in _mount_points(host))
    assert host.sh("test", "-e", REHEARSAL_DIR, check=False).returncode != 0
    assert host.sh("test", "-e", f"{STATE_DIR}/{PENDING_NAME}", check=False).returncode != 0
