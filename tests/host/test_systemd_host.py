"""The systemd host kind of the sandbox, driven as an operator would: its own CLI.

`python -m migrate.sandbox start --systemd` boots it, `exec` runs a command inside (stdin
and the exit status pass through), `stop` and `destroy` leave no process, mount or cgroup
of it on the machine, and a stopped host boots again with its state.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from migrate.sandbox import BASE_DIR
from migrate.sandbox.system import mounts_under, unix_ping
from migrate.sandbox.systemd_host import SystemdHost

from .conftest import OWNER_PREFIX, SKIP_ENV

pytestmark = pytest.mark.host


def sandbox(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "migrate.sandbox", *args], input=stdin,
                          capture_output=True, text=True, timeout=600, check=False)


def leftovers(host: SystemdHost, pids: list[int]) -> list[str]:
    found = [f"pid {pid}" for pid in pids if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"]
    found += [str(cgroup) for cgroup in host.cgroups() if cgroup.exists()]
    return found + mounts_under(host.dir)


def test_start_exec_stop_start_destroy() -> None:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1")
    directory = BASE_DIR / f"{OWNER_PREFIX}{os.getpid()}-kind"
    host = SystemdHost(directory, "26")
    try:
        started = sandbox("start", "--systemd", "--engine", "26", "--dir", str(directory))
        assert started.returncode == 0, started.stderr
        assert f"DOCKER_HOST=unix://{directory}/docker.sock" in started.stdout
        assert unix_ping(host.socket_path)  # the inner daemon, from outside

        done = sandbox("exec", "--dir", str(directory), "sh", "-c",
                       "cat > /root/kept; systemctl is-active docker; exit 7", stdin="state\n")
        assert (done.returncode, done.stdout) == (7, "active\n"), done.stderr
        # The machine's processes that make up the host: nspawn and everything below.
        pids = [int(p) for cgroup in host.cgroups() for p in
                subprocess.run(["find", str(cgroup), "-name", "cgroup.procs", "-exec", "cat",
                                "{}", "+"], capture_output=True, text=True,
                               check=False).stdout.split()]
        assert host.nspawn_pid() in pids and len(pids) > 5

        assert sandbox("stop", "--dir", str(directory)).returncode == 0
        assert leftovers(host, pids) == []
        assert not host.socket_path.exists() and not host.is_running()

        assert sandbox("start", "--dir", str(directory)).returncode == 0
        again = sandbox("exec", "--dir", str(directory), "cat", "/root/kept")
        assert again.stdout == "state\n"
        assert sandbox("destroy", "--dir", str(directory)).returncode == 0
        assert leftovers(host, pids) == [] and not directory.exists()
    finally:
        if directory.exists():
            host.destroy()
