"""The pure parts of `rehearse` and of its throwaway engine (issue 20)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.commands.rehearse import (
    PENDING_NAME,
    _usable_dir,
    blockers,
    outcome,
    rehearsal_body,
    rehearsal_dir,
    remove_leftovers,
    window_seconds,
)
from migrate.errors import ExitCode, UsageError
from migrate.host.throwaway import (
    RECORD_NAME,
    ThrowawayEngine,
    engine_env,
    locate_binaries,
    mounts_under,
    private_config,
)
from migrate.models import ContainerRecord, NetworkAttachment, Store
from tests.unit.fake_api import empty_daemon, fake_api

pytestmark = pytest.mark.unit


def test_binaries_are_found_on_dockerds_path_first_then_next_to_it() -> None:
    files = {"/engine/bin/containerd", "/engine/bin/containerd-shim-runc-v2",
             "/engine/bin/runc", "/sys-runc/runc"}
    found, missing = locate_binaries("/engine/bin/dockerd", ["/sys-runc", "/nowhere"],
                                     is_file=files.__contains__)
    assert missing == ()
    assert found == {"dockerd": "/engine/bin/dockerd", "containerd": "/engine/bin/containerd",
                     "containerd-shim-runc-v2": "/engine/bin/containerd-shim-runc-v2",
                     "runc": "/sys-runc/runc"}


def test_missing_binaries_are_named() -> None:
    found, missing = locate_binaries(None, ["/usr/bin"], is_file=lambda _path: False)
    assert found == {}
    assert missing == ("dockerd", "containerd", "containerd-shim-runc-v2", "runc")


def test_the_private_config_keeps_the_switchs_keys_and_drops_what_the_flags_own() -> None:
    target = {"features": {"containerd-snapshotter": True}, "storage-driver": "overlayfs",
              "log-driver": "local", "data-root": "/srv/docker", "hosts": ["fd://"],
              "bip": "10.1.0.1/24", "iptables": True, "containerd": "/run/c.sock",
              "metrics-addr": "0.0.0.0:9323", "live-restore": True}
    assert private_config(target) == {"features": {"containerd-snapshotter": True},
                                      "storage-driver": "overlayfs", "log-driver": "local"}


def test_the_engine_env_is_the_live_one_without_what_ties_it_to_the_live_daemon() -> None:
    live = {"PATH": "/usr/sbin:/usr/bin", "NOTIFY_SOCKET": "/run/systemd/notify",
            "LISTEN_FDS": "1", "DOCKER_HOST": "tcp://x", "HTTPS_PROXY": "http://proxy"}
    env = engine_env(live, {"dockerd": "/opt/e/dockerd", "runc": "/usr/sbin/runc"})
    assert env == {"PATH": "/opt/e:/usr/sbin:/usr/sbin:/usr/bin",
                   "HTTPS_PROXY": "http://proxy"}


def test_mounts_under_a_directory_deepest_first() -> None:
    mountinfo = "\n".join([
        "22 1 0:21 / / rw - ext4 /dev/sda rw",
        "30 22 0:40 / /r/dir\\040x/root/overlay rw - overlay overlay rw",
        "31 30 0:41 / /r/dir\\040x/root/overlay/a/merged rw - overlay overlay rw",
        "32 22 0:42 / /r/dir\\040xy rw - tmpfs tmpfs rw",
    ])
    assert mounts_under(Path("/r/dir x"), mountinfo) == [
        "/r/dir x/root/overlay/a/merged", "/r/dir x/root/overlay"]


def test_blockers_one_line_each() -> None:
    lines = blockers(Store.CONTAINERD, ("runc",), 10, 2000, Path("/r"), "too deep", None)
    assert len(lines) == 4
    assert lines[0].startswith("the daemon already runs on the containerd image store")
    assert "runc" in lines[1] and "/r has 10 B free" in lines[2] and lines[3] == "too deep"
    assert blockers(Store.LEGACY, (), None, 2000, Path("/r"), None, None) == []


def _container(**fields: object) -> ContainerRecord:
    base: dict[str, object] = {
        "id": "c" * 64, "name": "web", "image": "app:1", "image_id": "sha256:old",
        "state": "running", "config": {"Image": "app:1", "MacAddress": "02:42:ac:11:00:02"},
        "host_config": {"NetworkMode": "shop", "PortBindings": {"80/tcp": [{"HostPort": "8080"}]},
                        "Links": ["/db:/web/db"], "Binds": ["data:/data"]},
        "network_mode": "shop",
        "networks": (NetworkAttachment(network="shop", aliases=("www",)),)}
    return ContainerRecord.model_validate({**base, **fields})


def test_a_container_on_a_network_is_rehearsed_on_none_with_its_other_settings() -> None:
    body = rehearsal_body(_container(), "sha256:new", {}, {"sha256:old": "sha256:new"},
                          frozenset())
    host = body["HostConfig"]
    assert host["NetworkMode"] == "none" and host["Binds"] == ["data:/data"]
    assert "PortBindings" not in host and "Links" not in host
    assert body["NetworkingConfig"] is None and "MacAddress" not in body
    assert body["Image"] == "sha256:new"


def test_a_container_in_another_containers_namespace_keeps_it() -> None:
    body = rehearsal_body(_container(network_mode="host", networks=(),
                                     host_config={"NetworkMode": "host"}),
                          "sha256:new", {}, {}, frozenset())
    assert body["HostConfig"]["NetworkMode"] == "host"


def test_the_window_adds_the_stop_bound() -> None:
    assert window_seconds(2, 3, 4, 1, stop=0.0) == 10
    assert window_seconds(2, 3, 4, 1, stop=10.5) == 20.5


def test_the_rehearsal_dir_defaults_under_the_state_dir(tmp_path: Path) -> None:
    assert rehearsal_dir(tmp_path, None) == tmp_path / "rehearsal"
    assert rehearsal_dir(tmp_path, Path("rel")) == Path(os.path.abspath("rel"))


def test_a_dir_holding_something_else_is_refused(tmp_path: Path) -> None:
    _usable_dir(tmp_path / "new")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious").write_text("x")
    with pytest.raises(UsageError, match="not a rehearsal's directory"):
        _usable_dir(tmp_path / "other")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / RECORD_NAME).write_text("{}")
    _usable_dir(tmp_path / "old")


def test_leftovers_are_found_from_the_state_dir_and_removed(tmp_path: Path) -> None:
    assert remove_leftovers(tmp_path) == []
    left = ThrowawayEngine(tmp_path / "r")
    left.prepare({"features": {}})
    (tmp_path / PENDING_NAME).write_text(json.dumps({"dir": str(left.dir)}))
    did = remove_leftovers(tmp_path)
    assert did == [f"rehearsal leftovers: removed {left.dir}"]
    assert not left.dir.exists() and not (tmp_path / PENDING_NAME).exists()


def test_exit_codes_are_runs() -> None:
    assert outcome([], []) is ExitCode.OK
    assert outcome([], ["cannot recreate container web: refused"]) is ExitCode.ERROR
    assert outcome(["app:1 is missing"], ["cannot recreate container web: refused"]) \
        is ExitCode.VERIFY_FAILED


def test_blockers_as_json_are_one_document_and_exit_3(tmp_path: Path) -> None:
    with fake_api(tmp_path, empty_daemon(tmp_path / "data-root")) as api:
        result = CliRunner().invoke(main, [
            "-q", "--host", api.host, "--daemon-config", str(tmp_path / "daemon.json"),
            "--state-dir", str(tmp_path / "state"), "rehearse", "--format", "json"])
    assert result.exit_code == ExitCode.BLOCKED, result.output
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and answer["exit_code"] == ExitCode.BLOCKED
    # The fake daemon has no process: its dockerd cannot be found.
    assert any("engine binaries were not found: dockerd" in b for b in answer["blockers"])
    assert not (tmp_path / "state" / PENDING_NAME).exists()


def test_staged_without_ctr_is_a_blocker_not_a_failure_half_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no `ctr` anywhere
    with fake_api(tmp_path, empty_daemon(tmp_path / "data-root")) as api:
        result = CliRunner().invoke(main, [
            "-q", "--host", api.host, "--daemon-config", str(tmp_path / "daemon.json"),
            "--state-dir", str(tmp_path / "state"), "rehearse", "--staged", "--format", "json"])
    assert result.exit_code == ExitCode.BLOCKED, result.output
    blockers = json.loads(result.stdout)["blockers"]
    assert any(b.startswith("--staged needs `ctr` next to dockerd or on PATH") for b in blockers)
    assert not (tmp_path / "state" / PENDING_NAME).exists()
