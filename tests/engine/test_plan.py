"""`containerd-migrate plan` through the real CLI against real dockerd sandboxes.

The shared sample host (read-only) is planned on both engines in every format. Situations a
plan must refuse are set up for real on private sandboxes: daemon.json keys and flags that
really reach dockerd, a really invalid daemon.json, a really small filesystem for the state
dir, a socket nobody answers on.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from migrate.models import Store
from migrate.preflight.checks import Check, Severity
from migrate.preflight.render import short_id
from migrate.preflight.report import PlanReport
from migrate.sandbox import SampleHost, Sandbox, SandboxFactory, docker, sandbox_samples

from .cli import cli

pytestmark = pytest.mark.engine

MIB = 1024 * 1024
# The plan of the sample host, Python start-up included, must stay far below this.
PLAN_BUDGET_SECONDS = 10.0
SNAPSHOTTER_ONLY = {"features": {"containerd-snapshotter": True}}

Mount = Callable[[str], Path]


def _plan(sandbox: Sandbox, state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = cli(sandbox, state_dir, "plan", *args, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 3), f"plan {args} -> {result.returncode}: {result.stderr}"
    return result


def _json_plan(sandbox: Sandbox, state_dir: Path, *args: str) -> tuple[int, PlanReport]:
    result = _plan(sandbox, state_dir, "--format", "json", *args)
    return result.returncode, PlanReport.model_validate_json(result.stdout)


def _checks(report: PlanReport) -> dict[str, Check]:
    return {check.id: check for check in report.checks}


def _blockers(report: PlanReport) -> set[str]:
    return {check.id for check in report.checks
            if check.severity is Severity.BLOCKER}


def _last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """mount(size) -> a fresh tmpfs of that size (a filesystem of its own); unmounted after."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        target = tmp_path / f"tmpfs-{len(mounted)}"
        target.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(target)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs on {target} (needs root): {done.stderr}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        if subprocess.run(["umount", str(target)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="cm-plan-", dir="/tmp") as tmp:
        yield Path(tmp)


# --- the shared sample host, both engines -------------------------------------------------


def test_text_plan_lists_the_host_and_blocks_on_containers(
    engine_sandbox: Sandbox, sample_host: SampleHost, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    start = time.monotonic()
    result = _plan(engine_sandbox, state_dir)
    elapsed = time.monotonic() - start
    print(f"plan (text) of the sample host on engine {engine_sandbox.engine}: {elapsed:.2f} s")

    assert elapsed < PLAN_BUDGET_SECONDS
    assert result.returncode == 3
    out = result.stdout
    for tag in sample_host.tags:
        assert tag in out
    lines = out.splitlines()
    for dangling in sample_host.dangling_ids:
        rows = [line for line in lines if line.strip().startswith(short_id(dangling))]
        assert len(rows) == 1, out
        assert "<none>" in rows[0] and rows[0].rstrip().endswith("yes")
    for name, state in sample_host.containers.items():
        assert any(name in line and state in line for line in lines), (name, out)
    for volume in sample_host.volumes:
        assert volume in out
    verdict = _last_line(out)
    assert verdict.startswith("BLOCKED: 1 blocker(s): containers-present")
    assert "[containers-present]" in out
    assert not state_dir.exists(), "plan must not create the state dir"


def test_json_plan_is_a_complete_valid_report(
    engine_sandbox: Sandbox, sample_host: SampleHost, tmp_path: Path
) -> None:
    code, report = _json_plan(engine_sandbox, tmp_path / "state")

    assert code == 3 and not report.ready
    assert report.engine.version.startswith(f"{engine_sandbox.engine}.")
    assert report.engine.store is Store.LEGACY
    assert report.data_root.path == str(engine_sandbox.data_root)
    assert report.launch.source == "proc"
    assert report.launch.pid == engine_sandbox.pid()
    assert report.launch.config_file == str(engine_sandbox.daemon_json)
    assert report.daemon_config.valid and report.daemon_config.exists
    assert report.target_config == SNAPSHOTTER_ONLY

    by_id = {image.id: image for image in report.images}
    assert set(by_id) == set(sample_host.image_ids.values()) | set(sample_host.dangling_ids)
    for tag, image_id in sample_host.image_ids.items():
        assert tag in by_id[image_id].tags
    assert {t for image in report.images for t in image.tags} == set(sample_host.tags)
    for dangling in sample_host.dangling_ids:
        assert by_id[dangling].dangling
    big = by_id[sample_host.image_ids[sample_host.big_image]]
    assert len(big.layer_sizes) == len(big.diff_ids)
    assert max(big.layer_sizes) >= sample_host.big_layer_bytes
    configured = by_id[sample_host.image_ids[sample_host.configured_image]].config
    assert configured.user == "1000:1000" and configured.working_dir == "/srv/app"

    containers = {ct.name: ct for ct in report.containers}
    assert {name: ct.state for name, ct in containers.items()} == sample_host.containers
    for name in sample_host.compose_containers:
        assert containers[name].compose_project == sample_host.compose_project
    volumes = {v.name: v for v in report.volumes}
    assert volumes["cm-sample-data"].used_by == ("cm-sample-job", "cm-sample-web")

    checks = _checks(report)
    assert _blockers(report) == {"containers-present"}
    assert len(checks["containers-present"].details) == len(sample_host.containers)
    assert checks["dangling-images"].details == tuple(sorted(sample_host.dangling_ids))
    assert "cm-sample-data (used by cm-sample-job, cm-sample-web)" in (
        checks["volumes-only-used-by-containers"].details)
    # The sandbox's containerd is the one dockerd manages (Engine 28 still reports its address).
    assert "external-containerd" not in checks
    assert report.estimate.image_count == len(report.images)
    assert report.estimate.unique_layer_bytes >= sample_host.big_layer_bytes


def test_leave_containers_is_ready_and_output_goes_to_the_file(
    engine_sandbox: Sandbox, sample_host: SampleHost, tmp_path: Path
) -> None:
    output = tmp_path / "plan.json"
    result = _plan(engine_sandbox, tmp_path / "state", "--containers", "leave",
                   "--format", "json", "--output", str(output))

    assert result.returncode == 0, result.stdout
    report = PlanReport.model_validate_json(output.read_text())
    assert report.ready and report.options.containers == "leave"
    assert result.stdout.strip() == report.verdict
    assert report.verdict.startswith(f"READY: {len(report.images)} image(s) to move")
    assert not _blockers(report)
    assert _checks(report)["containers-present"].severity is Severity.WARNING


def test_markdown_plan_has_tables(
    engine_sandbox: Sandbox, sample_host: SampleHost, tmp_path: Path
) -> None:
    output = tmp_path / "plan.md"
    result = _plan(engine_sandbox, tmp_path / "state", "--format", "markdown",
                   "--output", str(output))

    assert result.returncode == 3
    text = output.read_text()
    lines = text.splitlines()
    assert "| ID | TAGS | SIZE | DANGLING |" in lines
    assert "| NAME | STATE | IMAGE | COMPOSE | MOUNTS |" in lines
    assert lines[lines.index("| ID | TAGS | SIZE | DANGLING |") + 1] == "|---|---|---|---|"
    table_rows = [line for line in lines if line.startswith("| ")]
    for tag in sample_host.tags:
        assert any(tag in row for row in table_rows), tag
    for dangling in sample_host.dangling_ids:
        assert f"| {short_id(dangling)} | &lt;none&gt; |" in text
    for name, state in sample_host.containers.items():
        assert any(row.startswith(f"| {name} | {state} |") for row in table_rows), name
    assert "- **containers-present**:" in text
    assert _last_line(text) == f"**{result.stdout.strip()}**"


# --- situations set up for real on private sandboxes --------------------------------------


def test_engine28_config_rewrite_feature_flag_disk_and_invalid_config(
    fresh_sandbox: SandboxFactory, tmpfs: Mount
) -> None:
    """Engine 28 only (`--feature` does not exist on 26); one sandbox for four situations."""
    sandbox = fresh_sandbox(engine="28", samples=True)
    sandbox.daemon_json.write_text('{"storage-driver": "overlay2"}\n')
    sandbox.extra_args_file.write_text(json.dumps(["--feature", "containerd-snapshotter=false"]))
    sandbox.restart()
    config_bytes = sandbox.daemon_json.read_bytes()

    # storage-driver rewrite + --feature flag, with the state dir on a 1 MiB filesystem.
    small = tmpfs("1m")
    code, report = _json_plan(sandbox, small / "state", "--containers", "leave")
    checks = _checks(report)
    assert code == 3
    assert report.launch.pid == sandbox.pid()
    assert report.launch.feature_flags == ("containerd-snapshotter=false",)
    assert report.daemon_config.storage_driver == "overlay2"
    assert report.target_config == {"storage-driver": "overlayfs", **SNAPSHOTTER_ONLY}
    rewrite = checks["storage-driver-rewrite"]
    assert rewrite.severity is Severity.INFO
    assert "overlay2" in rewrite.message and "overlayfs" in rewrite.message
    assert checks["feature-flag-conflict"].details == ("--feature containerd-snapshotter=false",)
    assert report.state_dir.mount_point == str(small)
    assert report.estimate.state_dir_need_bytes > MIB
    assert str(small / "state") in checks["disk-state-dir"].message
    assert _blockers(report) == {"feature-flag-conflict", "disk-state-dir"}

    # The same host with enough room for the archives: no disk check at all.
    roomy = tmpfs("512m")  # the need includes the 256 MiB reserve (preflight.estimate)
    code, report = _json_plan(sandbox, roomy / "state", "--containers", "leave")
    assert code == 3
    assert report.state_dir.mount_point == str(roomy)
    free = report.state_dir.free_bytes
    assert free is not None and free > report.estimate.state_dir_need_bytes * 1.2
    assert "disk-state-dir" not in _checks(report)
    assert _blockers(report) == {"feature-flag-conflict"}

    # daemon.json broken while the daemon runs (dockerd would refuse to start with it).
    sandbox.daemon_json.write_text('{"storage-driver": "overlay2",\n')
    broken_bytes = sandbox.daemon_json.read_bytes()
    code, report = _json_plan(sandbox, roomy / "state", "--containers", "leave")
    assert code == 3
    assert not report.daemon_config.valid and report.daemon_config.parse_error
    assert report.target_config is None
    assert _blockers(report) == {"daemon-config-invalid", "feature-flag-conflict"}
    text = _plan(sandbox, roomy / "state", "--containers", "leave")
    assert "[daemon-config-invalid]" in text.stdout and "INVALID" in text.stdout
    assert _last_line(text.stdout) == report.verdict

    # The plan changed nothing: the daemon still runs, daemon.json is as written.
    assert sandbox.is_running()
    assert sandbox.daemon_json.read_bytes() == broken_bytes != config_bytes
    assert not (roomy / "state").exists() and not (small / "state").exists()


def test_engine26_storage_driver_flag(fresh_sandbox: SandboxFactory, tmp_path: Path) -> None:
    """Engine 26: an empty host is ready until dockerd gets --storage-driver on its command line."""
    sandbox = fresh_sandbox(engine="26")
    code, report = _json_plan(sandbox, tmp_path / "state")
    assert code == 0 and report.ready
    assert report.launch.storage_driver_flag is None
    assert "storage-driver-flag" not in _checks(report)
    assert "no-images" in _checks(report)

    sandbox.extra_args_file.write_text(json.dumps(["--storage-driver", "overlay2"]))
    sandbox.restart()
    code, report = _json_plan(sandbox, tmp_path / "state")
    assert code == 3 and not report.ready
    assert report.launch.pid == sandbox.pid()
    assert report.launch.storage_driver_flag == "overlay2"
    assert _blockers(report) == {"storage-driver-flag"}
    flag_check = _checks(report)["storage-driver-flag"]
    assert "dockerd flag --storage-driver overlay2" in flag_check.details
    assert report.verdict == "BLOCKED: 1 blocker(s): storage-driver-flag"


def test_engine26_rm_container_restart_command_and_volatile_state_dir(
    fresh_sandbox: SandboxFactory, tmpfs: Mount
) -> None:
    """A running `--rm` container blocks `leave` (the stop would delete it), a restart command
    whose program is missing is a warning, a state dir on a tmpfs too (issues 21, 23)."""
    sandbox = fresh_sandbox(engine="26", samples=True)
    base = sandbox_samples(sandbox).base_image
    docker(sandbox.host, "run", "-d", "--rm", "--name", "oneshot", base, "sleep", "3600")
    state_dir = tmpfs("512m") / "state"

    code, report = _json_plan(sandbox, state_dir, "--containers", "leave",
                              "--restart-command", "/nonexistent/restart-docker now")
    checks = _checks(report)
    assert code == 3
    assert _blockers(report) == {"containers-removed-by-stop"}
    assert checks["containers-removed-by-stop"].details[0].startswith("oneshot: it runs with --rm")
    assert checks["restart-command-fails"].severity is Severity.WARNING
    assert "`/nonexistent/restart-docker` is not found" in checks["restart-command-fails"].message
    assert report.state_dir.fs_type == "tmpfs"
    assert checks["state-dir-volatile"].severity is Severity.WARNING
    # systemctl where systemd is not PID 1 (as on this test machine, unless it booted systemd).
    code, report = _json_plan(sandbox, state_dir, "--containers", "leave",
                              "--restart-command", "systemctl restart docker")
    fails = _checks(report).get("restart-command-fails")
    if Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        assert fails is None or "not found" in fails.message
    else:
        assert fails is not None and "systemd is not running this host" in fails.message
    # The plan stopped nothing: the container is still there, running.
    assert docker(sandbox.host, "inspect", "-f", "{{.State.Running}}", "oneshot"
                  ).stdout.strip() == "true"


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["no-socket", "refused"])
def test_unreachable_daemon_is_exit_5_with_one_paragraph(short_dir: Path, kind: str) -> None:
    nowhere = Sandbox(short_dir, "28")  # never started: only its paths are used
    listener = None
    if kind == "refused":  # a socket file nobody accepts on, as after a daemon crash
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(nowhere.socket_path))
    try:
        result = cli(nowhere, short_dir / "state", "plan", timeout=60)
    finally:
        if listener is not None:
            listener.close()

    assert result.returncode == 5, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    paragraph = result.stderr.strip().splitlines()
    assert paragraph[0].startswith(f"error: cannot reach the Docker daemon at {nowhere.host}")
    assert paragraph[-1].startswith("hint: check that dockerd is running")
    assert len(paragraph) == 2, result.stderr


def test_unknown_format_is_a_usage_error(short_dir: Path) -> None:
    result = cli(Sandbox(short_dir, "28"), short_dir / "state", "plan", "--format", "bogus",
                 timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "'bogus' is not one of" in result.stderr and "Traceback" not in result.stderr
