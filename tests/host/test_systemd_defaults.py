"""Every default on a real systemd-managed Debian host (issue 18).

Debian's docker.io under systemd: `-H fd://` through docker.socket, the separate
containerd.service, no daemon.json, and `systemctl restart docker` as the restart. The CLI
runs inside with no --host, --daemon-config or --restart-command. Both engines: Engine 26
on trixie, Engine 28 on sid.
"""

from __future__ import annotations

import json
import re

import pytest

from migrate.errors import ExitCode
from migrate.sandbox.systemd_host import (
    APP_TAGS,
    BASE_IMAGE,
    EXITED,
    INNER_VENV,
    RUNNING,
    VOLUME,
)
from migrate.support.failpoints import ENV as FAILPOINTS_ENV
from migrate.support.failpoints import PAUSE_TIMEOUT_ENV, RESUME_ENV

from ..engine.cli import wait_for_file
from ..engine.test_runbooks import ROOT, RUNBOOKS, shell_blocks
from .conftest import DAEMON_JSON, DROP_IN_DIR, STATE_DIR, Host

pytestmark = pytest.mark.host

RUN_LEAVE = ("run", "--yes", "--containers", "leave")


def expect(done: object, code: int) -> str:
    out = f"{done.stdout}\n{done.stderr}"  # type: ignore[attr-defined]
    assert done.returncode == code, out  # type: ignore[attr-defined]
    return out


def journal_records(host: Host) -> list[dict[str, object]]:
    text = host.sh("cat", f"{STATE_DIR}/journal.jsonl").stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def start_limit_resets(host: Host) -> list[dict[str, object]]:
    return [r for r in journal_records(host) if r.get("event") == "progress"
            and isinstance(r.get("data"), dict) and "start_limit_reset" in r["data"]]  # type: ignore[operator]


def assert_back_on_legacy(host: Host, web: str = "running") -> None:
    assert host.store() == "legacy"
    # The original had no daemon.json: the rollback removes the one the switch wrote.
    assert host.sh("test", "-e", DAEMON_JSON, check=False).returncode != 0
    assert {BASE_IMAGE, *APP_TAGS} <= host.image_tags()
    assert host.containers() == {RUNNING: web, EXITED: "exited"}
    if web == "running":
        assert host.sh("docker", "exec", RUNNING, "cat", "/data/file").stdout.strip() == "kept"
    assert host.unit("docker.service", "ActiveState")["ActiveState"] == "active"


def test_plan_is_ready_with_the_systemd_defaults(systemd_host: Host) -> None:
    # Only the containers policy is chosen: containers exist, and the default asks for it.
    out = expect(systemd_host.cli("plan", "--containers", "recreate"), ExitCode.OK)
    assert "READY" in out
    assert "`systemctl restart docker`" in out
    assert re.search(r"launched by\s+systemd", out)
    assert "/run/containerd/containerd.sock (namespace moby)" in out
    assert f"{DAEMON_JSON} (absent, will be created)" in out
    doc = json.loads(expect(systemd_host.cli("plan", "--containers", "recreate", "--format",
                                             "json"), ExitCode.OK))
    assert doc["restart_command"] == ["systemctl", "restart", "docker"]
    assert doc["launch"]["source"] == "systemd"
    assert doc["launch"]["hosts"] == ["fd://"]
    limit = next(c for c in doc["checks"] if c["id"] == "start-limit")
    assert "StartLimitBurst=3, StartLimitIntervalSec=60s" in limit["details"]


def test_run_leave_then_rollback(systemd_host: Host) -> None:
    host = systemd_host
    out = expect(host.cli(*RUN_LEAVE), ExitCode.OK)
    assert "completed" in out
    assert host.store() == "containerd"
    assert json.loads(host.sh("cat", DAEMON_JSON).stdout) == {
        "features": {"containerd-snapshotter": True}}
    assert {BASE_IMAGE, *APP_TAGS} <= host.image_tags()
    expect(host.cli("rollback", "--yes"), ExitCode.OK)
    assert_back_on_legacy(host)


def test_run_recreate_then_rollback(systemd_host: Host) -> None:
    host = systemd_host
    expect(host.cli("run", "--yes", "--containers", "recreate"), ExitCode.OK)
    assert host.store() == "containerd"
    # Recreated on the new store, running again, with the same named volume.
    assert host.containers()[RUNNING] == "running"
    assert host.sh("docker", "exec", RUNNING, "cat", "/data/file").stdout.strip() == "kept"
    expect(host.cli("rollback", "--yes"), ExitCode.OK)
    assert_back_on_legacy(host)


def test_failed_verification_rolls_back_automatically(systemd_host: Host) -> None:
    """An image lost between import and verify (untagged while the run is held at
    `after:import`) fails the verification: the run rolls back by itself."""
    host = systemd_host
    resume = "/run/cm-resume"
    process = host.spawn(*RUN_LEAVE, env={FAILPOINTS_ENV: "after:import=pause",
                                          RESUME_ENV: resume, PAUSE_TIMEOUT_ENV: "120"})
    try:
        wait_for_file(host.inside(resume + ".reached"), process)
        host.sh("docker", "rmi", APP_TAGS[0])
        host.inside(resume).write_text("")
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    out = f"{stdout}\n{stderr}"
    assert process.returncode == ExitCode.ROLLED_BACK, out
    assert "verification found" in out and "rolled back automatically" in out
    assert_back_on_legacy(host)


def test_stage_then_run(systemd_host: Host) -> None:
    """Staging goes to containerd.service's store (its socket, namespace moby) while the
    legacy store serves; the run then only restarts and verifies."""
    host = systemd_host
    expect(host.cli("stage", "--containers", "leave"), ExitCode.OK)
    staged = host.sh("ctr", "--address", "/run/containerd/containerd.sock",
                     "--namespace", "moby", "images", "ls", "-q").stdout.split()
    assert {f"docker.io/{tag}" for tag in APP_TAGS} <= set(staged)
    assert host.store() == "legacy"
    expect(host.cli("run", "--yes"), ExitCode.OK)
    assert host.store() == "containerd"
    assert {BASE_IMAGE, *APP_TAGS} <= host.image_tags()
    expect(host.cli("rollback", "--yes"), ExitCode.OK)
    assert_back_on_legacy(host)


def test_restart_through_socket_activation(systemd_host: Host) -> None:
    """docker.service stopped while docker.socket listens: the first API call starts it.
    (Stopping dockerd stopped the container too: it has no restart policy.)"""
    host = systemd_host
    host.sh("systemctl", "stop", "docker.service")
    assert host.unit("docker.service", "ActiveState")["ActiveState"] == "inactive"
    assert host.unit("docker.socket", "ActiveState")["ActiveState"] == "active"
    expect(host.cli(*RUN_LEAVE), ExitCode.OK)
    assert host.store() == "containerd"
    host.sh("systemctl", "stop", "docker.service")
    expect(host.cli("rollback", "--yes"), ExitCode.OK)
    assert_back_on_legacy(host, web="exited")


def _drop_in(host: Host, flags: str) -> None:
    host.sh("mkdir", "-p", DROP_IN_DIR)
    host.box.exec(["sh", "-c", f"cat > {DROP_IN_DIR}/cm-test.conf"], input_text=(
        "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// "
        f"--containerd=/run/containerd/containerd.sock {flags} $DOCKER_OPTS\n"))
    host.sh("systemctl", "daemon-reload")
    host.restart_docker()


def _remove_drop_in(host: Host) -> None:
    host.sh("rm", "-rf", DROP_IN_DIR)
    host.sh("systemctl", "daemon-reload")
    host.restart_docker()


def test_drop_in_data_root_is_read_by_plan(systemd_host: Host) -> None:
    """A drop-in that moves the data root: plan reads the unit's ExecStart as systemd
    runs it, and the migration and its rollback work there."""
    host = systemd_host
    _drop_in(host, "--data-root /srv/docker")
    try:
        assert host.info()["DockerRootDir"] == "/srv/docker"
        out = expect(host.cli("plan", "--containers", "leave"), ExitCode.OK)
        assert "READY" in out
        assert re.search(r"data root\s+/srv/docker", out)
        assert "--data-root /srv/docker" in out
        launch = json.loads(host.cli("plan", "--containers", "leave", "--format",
                                     "json").stdout)["launch"]
        assert launch["data_root"] == "/srv/docker"
        assert f"{DROP_IN_DIR}/cm-test.conf" in launch["unit_files"]
    finally:
        _remove_drop_in(host)


def test_drop_in_storage_driver_flag_blocks(systemd_host: Host) -> None:
    """`--storage-driver` on the command line would make the switched daemon refuse to
    start: plan blocks, naming the drop-in."""
    host = systemd_host
    _drop_in(host, "--storage-driver overlay2")
    try:
        out = expect(host.cli("plan", "--containers", "leave"), ExitCode.BLOCKED)
        assert "storage-driver-flag" in out
        assert "BLOCKED" in out
        assert f"{DROP_IN_DIR}/cm-test.conf" in out
        # The run refuses the same way before touching anything.
        expect(host.cli(*RUN_LEAVE), ExitCode.BLOCKED)
        assert host.sh("test", "-e", DAEMON_JSON, check=False).returncode != 0
    finally:
        _remove_drop_in(host)
    assert host.sh("docker", "volume", "ls", "-q").stdout.split().count(VOLUME) == 1


def test_start_limit_is_survived(systemd_host: Host) -> None:
    """Debian's docker.service allows 3 starts in 60 s. A run, its rollback, an operator's
    restart, then a second run: its restart is the 4th start. Then two more restarts and a
    rollback: the rollback's restart is refused too. Both reset the limit once, journal it,
    and succeed."""
    host = systemd_host
    host.sh("systemctl", "reset-failed", "docker.service", "docker.socket")
    expect(host.cli(*RUN_LEAVE), ExitCode.OK)
    expect(host.cli("rollback", "--yes"), ExitCode.OK)
    host.sh("systemctl", "restart", "docker")
    out = expect(host.cli("plan", "--containers", "leave"), ExitCode.OK)
    assert "[start-limit]" in out and "the restart and a rollback may exceed it" in out

    expect(host.cli(*RUN_LEAVE), ExitCode.OK)
    assert host.unit("docker.service", "ActiveState")["ActiveState"] == "active"
    assert host.store() == "containerd"
    resets = start_limit_resets(host)
    assert [r["phase"] for r in resets] == ["restart"]
    assert resets[0]["data"] == {"start_limit_reset": ["docker.service", "docker.socket"],
                                 "start_limit": "3 starts in 1min"}

    host.sh("systemctl", "restart", "docker")
    host.sh("systemctl", "restart", "docker")
    out = expect(host.cli("rollback", "--yes"), ExitCode.OK)
    assert "start limit (3 starts in 1min) was hit" in out
    assert [r["phase"] for r in start_limit_resets(host)] == ["restart", "switch"]
    # The operator's restarts stopped the container (no restart policy) before the run.
    assert_back_on_legacy(host, web="exited")


def test_runbooks_work_as_printed_on_the_host(systemd_host: Host) -> None:
    """Every shell block of the runbooks, inside the host with no CONTAINERD_MIGRATE_*
    variable at all: the defaults an operator has on a systemd host."""
    host = systemd_host
    blocks = [block for name in RUNBOOKS
              for block in shell_blocks((ROOT / "runbooks" / name).read_text())]
    assert len(blocks) >= 5
    host.sh("mkdir", "-p", "/root/runbook")
    for block in blocks:
        done = host.sh("sh", "-c", 'cd /root/runbook && exec bash -euo pipefail -c "$0"', block,
                       check=False)
        assert done.returncode == 0, f"$ {block}\n{done.stdout}\n{done.stderr}"
    assert host.sh("cat", "/root/runbook/plan.md").stdout.count("## ") >= 4
    assert_back_on_legacy(host)


def test_daemon_refusing_the_switch_is_rolled_back_under_systemd(systemd_host: Host) -> None:
    """dockerd refuses the switched daemon.json (a `--feature` flag, added by a drop-in
    while the run is held before its restart, conflicts with the `features` key): the
    restart fails, systemd's Restart=always keeps retrying (every 2 s, using up the start
    limit), and the automatic rollback's restart still brings the legacy daemon back.
    Engine 28 only (26 has no `--feature` flag)."""
    host = systemd_host
    if host.box.engine == "26":
        pytest.skip("Engine 26 has no --feature flag")
    resume = "/run/cm-resume-restart"
    process = host.spawn(*RUN_LEAVE, env={FAILPOINTS_ENV: "before:restart=pause",
                                          RESUME_ENV: resume, PAUSE_TIMEOUT_ENV: "120"})
    try:
        wait_for_file(host.inside(resume + ".reached"), process)
        host.sh("mkdir", "-p", DROP_IN_DIR)
        host.box.exec(["sh", "-c", f"cat > {DROP_IN_DIR}/cm-feature.conf"], input_text=(
            "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// "
            "--containerd=/run/containerd/containerd.sock "
            "--feature containerd-snapshotter=false\n"))
        host.sh("systemctl", "daemon-reload")
        host.inside(resume).write_text("")
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    try:
        out = f"{stdout}\n{stderr}"
        assert process.returncode == ExitCode.ROLLED_BACK, out
        assert "rolled back automatically" in out
        # Whether Restart=always used up the start limit before the rollback's restart
        # depends on timing (a retry every 2 s); if it did, the reset is journaled.
        assert {r["phase"] for r in start_limit_resets(host)} <= {"switch"}
        assert host.store() == "legacy"
        assert host.unit("docker.service", "ActiveState")["ActiveState"] == "active"
    finally:
        _remove_drop_in(host)


def test_debian_packages_fit_the_pins(systemd_host: Host) -> None:
    """The tool runs on the suite's own python3-docker, -click, -pydantic, -structlog and
    -tqdm: `pip check` holds them against pyproject.toml's requirements."""
    done = systemd_host.sh(f"{INNER_VENV}/bin/pip", "check", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = systemd_host.sh(f"{INNER_VENV}/bin/pip", "show", "containerd-migrate").stdout
    assert "Requires: click, docker, pydantic, structlog, tqdm" in shown
