"""The sandbox itself: real daemons in legacy mode, the sample host, restarts, config knobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migrate.sandbox import (
    BASE_DIR,
    SampleHost,
    Sandbox,
    SandboxError,
    SandboxFactory,
    docker,
    sandbox_samples,
)
from migrate.sandbox.system import mounts_under

pytestmark = pytest.mark.engine

CD_DRIVER = ["driver-type", "io.containerd.snapshotter.v1"]
ENGINES = ["26", "28"]


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.05)


def cmdline(sandbox: Sandbox) -> list[str]:
    pid = sandbox.pid()
    assert pid is not None
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def sandbox_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "migrate.sandbox", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def images_by_id(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    return {image["Id"]: image for image in sandbox.api("/images/json", all="1")}


def test_daemon_is_the_requested_engine_in_legacy_mode(engine_sandbox: Sandbox) -> None:
    info = engine_sandbox.api("/info")
    assert info["ServerVersion"].startswith(engine_sandbox.engine + ".")
    assert info["Driver"] == "overlay2"
    assert CD_DRIVER not in info["DriverStatus"]
    assert not engine_sandbox.containerd_snapshotter()
    assert info["DockerRootDir"] == str(engine_sandbox.data_root)
    assert engine_sandbox.containerd_socket.is_socket()


def test_daemon_reads_only_the_sandbox_config(engine_sandbox: Sandbox) -> None:
    argv = cmdline(engine_sandbox)
    assert flag_value(argv, "--config-file") == str(engine_sandbox.daemon_json)
    assert json.loads(engine_sandbox.daemon_json.read_text()) == {}
    assert flag_value(argv, "--host") == engine_sandbox.host
    assert engine_sandbox.info()["Runtimes"]["runc"]


def test_state_is_reconstructible_from_the_dir(engine_sandbox: Sandbox) -> None:
    assert Sandbox.open(engine_sandbox.dir) == engine_sandbox
    lines = sandbox_cli("env", "--dir", str(engine_sandbox.dir)).stdout.splitlines()
    assert f"export DOCKER_HOST={engine_sandbox.host}" in lines
    assert f"export CONTAINERD_MIGRATE_HOST={engine_sandbox.host}" in lines
    assert f"export CONTAINERD_MIGRATE_STATE_DIR={engine_sandbox.dir / 'state'}" in lines


def test_sample_host_has_every_promised_tag(
    engine_sandbox: Sandbox, sample_host: SampleHost
) -> None:
    images = images_by_id(engine_sandbox)
    present = {tag: image_id for image_id, i in images.items() for tag in i["RepoTags"] or []}
    for tag in sample_host.tags:
        assert present.get(tag) == sample_host.image_ids[tag], tag
    multi = {present[tag] for tag in sample_host.multi_tags}
    assert len(multi) == 1
    assert set(sample_host.multi_tags) <= set(images[multi.pop()]["RepoTags"])
    assert "registry.example.com:5000/team/app:1.0" in sample_host.multi_tags


def test_app_images_share_the_base_layers(engine_sandbox: Sandbox, sample_host: SampleHost) -> None:
    def layers(ref: str) -> list[str]:
        rootfs: list[str] = engine_sandbox.api(f"/images/{ref}/json")["RootFS"]["Layers"]
        return rootfs

    base = layers(sample_host.base_image)
    for app in ("cm-sample/web:1", "cm-sample/worker:1", "cm-sample/app:latest"):
        app_layers = layers(app)
        assert app_layers[: len(base)] == base and len(app_layers) == len(base) + 1, app
    big = engine_sandbox.api(f"/images/{sample_host.big_image}/json")
    assert big["Size"] >= sample_host.big_layer_bytes


def test_configured_image_carries_every_config_field(
    engine_sandbox: Sandbox, sample_host: SampleHost
) -> None:
    config = engine_sandbox.api(f"/images/{sample_host.configured_image}/json")["Config"]
    assert "GREETING=hello world" in config["Env"]
    assert config["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["Cmd"] == ["echo configured; id"]
    assert config["Labels"]["com.example.team"] == "shop"
    assert config["WorkingDir"] == "/srv/app"
    assert config["User"] == "1000:1000"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "9090/udp"}
    assert set(config["Volumes"]) == {"/srv/data"}


def test_imported_image_is_a_single_layer(engine_sandbox: Sandbox, sample_host: SampleHost) -> None:
    image = engine_sandbox.api(f"/images/{sample_host.imported_image}/json")
    assert len(image["RootFS"]["Layers"]) == 1
    assert image["Comment"] == "cm-sample import"
    assert image["Config"]["Cmd"] == ["/hello.txt"]


def test_dangling_image_shows_as_none(engine_sandbox: Sandbox, sample_host: SampleHost) -> None:
    assert len(sample_host.dangling_ids) == 1
    filters = json.dumps({"dangling": ["true"]})
    dangling = {i["Id"]: i for i in engine_sandbox.api("/images/json", filters=filters)}
    for image_id in sample_host.dangling_ids:
        assert dangling[image_id]["RepoTags"] in (None, [], ["<none>:<none>"])
        assert image_id not in sample_host.image_ids.values()
    listed = docker(engine_sandbox.host, "images", "--no-trunc", "--format", "{{.ID}} {{.Tag}}")
    assert f"{sample_host.dangling_ids[0]} <none>" in listed.stdout.splitlines()


def test_containers_are_in_their_states(engine_sandbox: Sandbox, sample_host: SampleHost) -> None:
    containers = {
        c["Names"][0].lstrip("/"): c for c in engine_sandbox.api("/containers/json", all="1")
    }
    for name, state in sample_host.containers.items():
        assert containers[name]["State"] == state, name
    assert containers["cm-sample-job"]["Status"].startswith("Exited (3)")
    web = engine_sandbox.api("/containers/cm-sample-web/json")
    assert Path(f"/proc/{web['State']['Pid']}").exists()
    project = {
        name
        for name, c in containers.items()
        if c["Labels"].get("com.docker.compose.project") == sample_host.compose_project
    }
    assert project == set(sample_host.compose_containers)


def test_volume_holds_the_data_file(engine_sandbox: Sandbox, sample_host: SampleHost) -> None:
    assert sample_host.volumes == ("cm-sample-data",)
    mountpoint = Path(engine_sandbox.api("/volumes/cm-sample-data")["Mountpoint"])
    assert mountpoint.is_relative_to(engine_sandbox.data_root)
    for key, content in sample_host.volume_files.items():
        volume, relative = key.split("/", 1)
        assert volume in sample_host.volumes
        assert (mountpoint / relative).read_text() == content
    users = {
        c["Names"][0].lstrip("/")
        for c in engine_sandbox.api("/containers/json", all="1")
        if any(m.get("Name") == "cm-sample-data" for m in c["Mounts"])
    }
    assert users == {"cm-sample-web", "cm-sample-job"}


@pytest.mark.parametrize("engine", ENGINES)
def test_restart_command_brings_the_daemon_back(fresh_sandbox: SandboxFactory, engine: str) -> None:
    sandbox = fresh_sandbox(engine)
    before = sandbox.pid()
    done = sandbox_cli("restart", "--dir", str(sandbox.dir))
    assert done.returncode == 0, done.stderr
    after = sandbox.pid()
    assert after is not None and after != before
    assert sandbox.ping()


@pytest.mark.parametrize("engine", ENGINES)
def test_restart_command_fails_loudly_with_the_log_tail(
    fresh_sandbox: SandboxFactory, engine: str
) -> None:
    sandbox = fresh_sandbox(engine)
    sandbox.daemon_json.write_text('{"no-such-option": true}\n')
    done = sandbox_cli("restart", "--dir", str(sandbox.dir))
    assert done.returncode != 0
    assert "no-such-option" in done.stderr
    assert not sandbox.is_running()


@pytest.mark.parametrize("engine", ENGINES)
def test_containerd_snapshotter_switch_and_back(fresh_sandbox: SandboxFactory, engine: str) -> None:
    sandbox = fresh_sandbox(engine)
    sandbox.daemon_json.write_text(json.dumps({"features": {"containerd-snapshotter": True}}))
    sandbox.restart()
    assert CD_DRIVER in sandbox.info()["DriverStatus"]
    sandbox.daemon_json.write_text("{}\n")
    sandbox.restart()
    assert CD_DRIVER not in sandbox.info()["DriverStatus"]


@pytest.mark.parametrize("engine", ENGINES)
def test_extra_args_reach_dockerd(fresh_sandbox: SandboxFactory, engine: str) -> None:
    sandbox = fresh_sandbox(engine)
    sandbox.extra_args_file.write_text(json.dumps(["--storage-driver", "vfs"]))
    sandbox.restart()
    assert flag_value(cmdline(sandbox), "--storage-driver") == "vfs"
    assert sandbox.info()["Driver"] == "vfs"
    # The conflict the migration tool must detect: flag and daemon.json key together.
    sandbox.daemon_json.write_text(json.dumps({"storage-driver": "overlay2"}))
    with pytest.raises(SandboxError, match="storage-driver"):
        sandbox.restart()
    assert not sandbox.is_running()


@pytest.mark.parametrize("engine", ENGINES)
def test_absent_daemon_json_acts_as_empty(fresh_sandbox: SandboxFactory, engine: str) -> None:
    sandbox = fresh_sandbox(engine)
    sandbox.daemon_json.unlink()
    sandbox.restart()
    assert not sandbox.daemon_json.exists()
    assert flag_value(cmdline(sandbox), "--config-file") == "/dev/null"
    assert sandbox.info()["Driver"] == "overlay2"


@pytest.mark.parametrize("engine", ENGINES)
def test_cli_start_stop_outlive_the_cli_and_clean_up(engine: str) -> None:
    # The pt-<pid> prefix lets a later session reap this dir if the test crashes hard.
    sandbox = Sandbox(BASE_DIR / f"pt-{os.getpid()}-cli{engine}", engine)
    try:
        started = sandbox_cli("start", "--dir", str(sandbox.dir), "--engine", engine)
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"export DOCKER_HOST={sandbox.host}"
        assert Sandbox.open(sandbox.dir) == sandbox and sandbox.ping()
        populated = sandbox_cli("samples", "--dir", str(sandbox.dir), "--big-mib", "1")
        assert populated.returncode == 0, populated.stderr
        assert sandbox_samples(sandbox).big_layer_bytes == 1024 * 1024
        assert mounts_under(sandbox.dir), "the running sample container mounts its rootfs"
        stopped = sandbox_cli("stop", "--dir", str(sandbox.dir))
        assert stopped.returncode == 0, stopped.stderr
        wait_for(lambda: not sandbox.is_running(), what="dockerd to exit")
        assert mounts_under(sandbox.dir) == []
        assert sandbox_cli("destroy", "--dir", str(sandbox.dir)).returncode == 0
        assert not sandbox.dir.exists()
    finally:
        sandbox.destroy()


def test_fresh_sandbox_with_samples_is_private(
    fresh_sandbox: SandboxFactory, engine28: Sandbox
) -> None:
    sandbox = fresh_sandbox("28", samples=True)
    assert sandbox.dir != engine28.dir
    samples = sandbox_samples(sandbox)
    assert samples.host == sandbox.host
    tags = {tag for image in sandbox.api("/images/json") for tag in image["RepoTags"] or []}
    assert set(samples.tags) <= tags
    docker(sandbox.host, "rm", "-f", "cm-sample-web")
    assert "cm-sample-web" in sandbox_samples(engine28).containers
    assert engine28.api("/containers/cm-sample-web/json")["State"]["Running"]


def test_a_destroyed_sandbox_leaves_no_bridge_behind(fresh_sandbox: SandboxFactory) -> None:
    """dockerd keeps its networks' bridges when it stops; leaked, they used up every
    default address pool of this machine after a few suites ("could not find an
    available, non-overlapping IPv4 address pool")."""
    sandbox = fresh_sandbox("28")
    network = docker(sandbox.host, "network", "create", "leak-probe").stdout.strip()
    bridge = Path("/sys/class/net") / f"br-{network[:12]}"
    assert bridge.exists()
    sandbox.restart()  # the bridge outlives a restart: recorded, not deleted, at a stop
    assert bridge.exists()
    sandbox.destroy()
    assert not bridge.exists()
