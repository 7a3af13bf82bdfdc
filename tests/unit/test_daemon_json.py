from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from migrate.errors import DaemonConfigError, ExitCode, StateError
from migrate.host.daemon_json import (
    DaemonConfigState,
    feature_typos,
    load_for_edit,
    read_daemon_config,
    redact,
    render_config,
    target_config,
)
from migrate.phases.base import RunOptions
from migrate.phases.records import SwitchOriginal
from migrate.phases.switch import refuse_untrusted

pytestmark = pytest.mark.unit


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "daemon.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# --- read_daemon_config ------------------------------------------------------------------


def test_missing_file_is_described_not_raised(tmp_path: Path) -> None:
    state = read_daemon_config(tmp_path / "daemon.json")
    assert not state.exists
    assert state.parse_error is None
    assert state.data is None
    assert state.writable  # the directory is writable, so the file can be created


def test_missing_parent_dir_uses_nearest_existing_ancestor(tmp_path: Path) -> None:
    state = read_daemon_config(tmp_path / "etc" / "docker" / "daemon.json")
    assert not state.exists
    assert state.writable


def test_invalid_json_is_recorded(tmp_path: Path) -> None:
    state = read_daemon_config(write(tmp_path, '{"features": {'))
    assert state.exists and state.readable
    assert state.parse_error is not None and "not valid JSON" in state.parse_error
    assert state.data is None
    assert not state.valid


@pytest.mark.parametrize("content", ["[]", '"x"', "42", "null"])
def test_non_object_is_recorded(tmp_path: Path, content: str) -> None:
    state = read_daemon_config(write(tmp_path, content))
    assert state.parse_error is not None and "JSON object" in state.parse_error


def test_empty_file_reads_as_empty_object(tmp_path: Path) -> None:
    state = read_daemon_config(write(tmp_path, "  \n"))
    assert state.valid
    assert state.data == {}


def test_bom_is_stripped_like_dockerd(tmp_path: Path) -> None:
    state = read_daemon_config(write(tmp_path, b'\xef\xbb\xbf{"debug": true}'))
    assert state.data == {"debug": True}


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    state = read_daemon_config(write(tmp_path, '{"debug": true, "debug": false}'))
    assert state.parse_error is not None and "twice" in state.parse_error


def test_summary_fields(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({
        "storage-driver": "overlay2",
        "userns-remap": "default",
        "features": {"containerd-snapshotter": False, "buildkit": True},
        "log-driver": "json-file",
    }))
    os.chmod(path, 0o640)
    state = read_daemon_config(path)
    assert state.valid
    assert state.storage_driver == "overlay2"
    assert state.userns_remap == "default"
    assert state.containerd_snapshotter is False
    assert state.features == {"containerd-snapshotter": False, "buildkit": True}
    assert state.other_keys == ("userns-remap", "log-driver")
    assert state.mode == 0o640
    assert state.uid == os.getuid()
    assert state.sha256 is not None and len(state.sha256) == 64


def test_true_as_string_is_a_problem(tmp_path: Path) -> None:
    state = read_daemon_config(write(tmp_path, '{"features": {"containerd-snapshotter": "true"}}'))
    assert state.parse_error is None
    assert not state.valid
    assert state.containerd_snapshotter is None
    assert any('"true"' in problem for problem in state.problems)


def test_features_not_an_object_is_a_problem(tmp_path: Path) -> None:
    state = read_daemon_config(write(tmp_path, '{"features": ["containerd-snapshotter"]}'))
    assert not state.valid
    assert state.features == {}


def test_typo_in_feature_is_flagged(tmp_path: Path) -> None:
    state = read_daemon_config(write(tmp_path, '{"features": {"containerd-snapshoter": true}}'))
    assert state.feature_typos == ("containerd-snapshoter",)
    assert state.containerd_snapshotter is None


@pytest.mark.parametrize(
    ("key", "typo"),
    [
        ("containerd-snapshoter", True),
        ("containerd_snapshotter", True),
        ("Containerd-Snapshotter", True),
        ("snapshotter", True),
        ("containerd-snapshotters", True),
        ("containerd-snapshotter", False),
        ("containerd-migration", False),
        ("buildkit", False),
    ],
)
def test_feature_typo_detection(key: str, typo: bool) -> None:
    assert (feature_typos({key: True}) == (key,)) is typo


def test_symlink_is_recorded_and_followed_for_reading(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text('{"debug": true}')
    link = tmp_path / "daemon.json"
    link.symlink_to(real)
    state = read_daemon_config(link)
    assert state.is_symlink
    assert state.symlink_target == str(real)
    assert state.data == {"debug": True}


def test_state_json_has_no_raw_bytes(tmp_path: Path) -> None:
    state = read_daemon_config(write(tmp_path, '{"debug": true}'))
    dumped = json.loads(state.model_dump_json())
    assert "raw" not in dumped and "raw_bytes" not in dumped
    assert DaemonConfigState.model_validate_json(state.model_dump_json()) == state


# --- load_for_edit -----------------------------------------------------------------------


def test_load_for_edit_missing(tmp_path: Path) -> None:
    assert load_for_edit(tmp_path / "daemon.json") == (None, 0o644, 0, 0)


def test_load_for_edit_returns_bytes_and_owner(tmp_path: Path) -> None:
    path = write(tmp_path, '{"debug": true}\n')
    os.chmod(path, 0o600)
    raw, mode, uid, gid = load_for_edit(path)
    assert raw == b'{"debug": true}\n'
    assert (mode, uid, gid) == (0o600, os.getuid(), os.getgid())


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"features": {"containerd-snapshotter": "true"}}', '"true"'),
        ('{"features": {"containerd-snapshotter": 1}}', "boolean"),
        ('{"storage-driver": 3}', "storage-driver"),
    ],
)
def test_load_for_edit_refuses(tmp_path: Path, content: str, fragment: str) -> None:
    with pytest.raises(DaemonConfigError) as caught:
        load_for_edit(write(tmp_path, content))
    assert fragment in caught.value.message
    assert caught.value.hint
    assert caught.value.exit_code is ExitCode.CONFIG_INVALID


def test_load_for_edit_refuses_symlink_unless_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "daemon.json"
    link.symlink_to(real)
    with pytest.raises(DaemonConfigError, match="symlink"):
        load_for_edit(link)
    assert load_for_edit(link, follow_symlinks=True).raw == b"{}"


def test_load_for_edit_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "daemon.json"
    link.symlink_to(tmp_path / "nowhere.json")
    with pytest.raises(DaemonConfigError, match="dangling"):
        load_for_edit(link, follow_symlinks=True)


# --- target_config -----------------------------------------------------------------------


def test_target_for_missing_config() -> None:
    assert target_config(None) == {"features": {"containerd-snapshotter": True}}


def test_target_keeps_every_other_key_and_order() -> None:
    data: dict[str, Any] = {
        "log-driver": "journald",
        "features": {"buildkit": True, "containerd-snapshotter": False},
        "registry-mirrors": ["https://mirror.example"],
        "default-address-pools": [{"base": "10.10.0.0/16", "size": 24}],
    }
    result = target_config(data)
    assert list(result) == list(data)
    assert result["features"] == {"buildkit": True, "containerd-snapshotter": True}
    assert result["registry-mirrors"] == ["https://mirror.example"]
    assert result["default-address-pools"] == data["default-address-pools"]
    assert data["features"]["containerd-snapshotter"] is False  # input not mutated


@pytest.mark.parametrize(("legacy", "snapshotter"), [("overlay2", "overlayfs"), ("vfs", "native")])
def test_target_maps_storage_driver(legacy: str, snapshotter: str) -> None:
    result = target_config({"storage-driver": legacy, "debug": True})
    assert result["storage-driver"] == snapshotter
    assert list(result) == ["storage-driver", "debug", "features"]


@pytest.mark.parametrize("driver", ["btrfs", "zfs", "fuse-overlayfs", "devicemapper", "aufs"])
def test_target_refuses_other_graph_drivers(driver: str) -> None:
    with pytest.raises(DaemonConfigError, match=driver) as caught:
        target_config({"storage-driver": driver})
    assert "override" in caught.value.hint


@pytest.mark.parametrize(("driver", "override"), [("btrfs", "btrfs"), ("zfs", "overlayfs"),
                                                  ("devicemapper", "devmapper")])
def test_target_override_names_the_snapshotter(driver: str, override: str) -> None:
    assert target_config({"storage-driver": driver}, override)["storage-driver"] == override


def test_override_also_applies_without_a_key() -> None:
    assert target_config({}, "native")["storage-driver"] == "native"


@pytest.mark.parametrize("override", ["overlay2", "devicemapper", "nope", ""])
def test_override_must_be_a_snapshotter(override: str) -> None:
    with pytest.raises(DaemonConfigError, match="not a containerd snapshotter"):
        target_config({"storage-driver": "btrfs"}, override)


def test_engine_driver_matters_when_key_is_absent() -> None:
    assert "storage-driver" not in target_config({}, engine_driver="overlay2")
    assert target_config({}, engine_driver="vfs")["storage-driver"] == "native"
    with pytest.raises(DaemonConfigError, match="btrfs"):
        target_config({}, engine_driver="btrfs")
    # The key wins over what the engine reports.
    assert target_config({"storage-driver": "overlay2"}, engine_driver="vfs")[
        "storage-driver"] == "overlayfs"


def test_target_tolerates_null_features_and_empty_driver() -> None:
    result = target_config({"features": None, "storage-driver": ""}, engine_driver="overlay2")
    assert result == {"features": {"containerd-snapshotter": True}, "storage-driver": ""}


def test_target_refuses_string_true() -> None:
    with pytest.raises(DaemonConfigError, match='"true"'):
        target_config({"features": {"containerd-snapshotter": "true"}})
    with pytest.raises(DaemonConfigError, match="buildkit"):
        target_config({"features": {"buildkit": "false"}})


def test_target_keeps_typo_key_for_the_operator_to_fix() -> None:
    result = target_config({"features": {"containerd-snapshoter": True}})
    assert result["features"] == {"containerd-snapshoter": True, "containerd-snapshotter": True}


# --- render_config / redact --------------------------------------------------------------


def test_render_is_indented_with_trailing_newline() -> None:
    out = render_config({"b": 1, "a": {"x": True}, "name": "café"})
    assert out == b'{\n  "b": 1,\n  "a": {\n    "x": true\n  },\n  "name": "caf\xc3\xa9"\n}\n'


def test_render_round_trip_is_stable(tmp_path: Path) -> None:
    once = render_config(target_config({"storage-driver": "overlay2", "debug": True}))
    path = write(tmp_path, once)
    state = read_daemon_config(path)
    assert state.containerd_snapshotter is True
    assert render_config(target_config(state.data)) == once


def test_redact_masks_url_credentials() -> None:
    data = {"proxies": {"http-proxy": "http://user:secret@proxy:3128", "no-proxy": "localhost"},
            "hosts": ["tcp://0.0.0.0:2376"]}
    redacted = redact(data)
    assert redacted["proxies"]["http-proxy"] == "http://***@proxy:3128"
    assert redacted["proxies"]["no-proxy"] == "localhost"
    assert redacted["hosts"] == ["tcp://0.0.0.0:2376"]
    assert "secret" not in json.dumps(redacted)


def test_symlink_loop_is_described(tmp_path: Path) -> None:
    link = tmp_path / "daemon.json"
    link.symlink_to(link)
    state = read_daemon_config(link)
    assert state.is_symlink
    assert not state.writable
    assert state.parse_error is not None


def test_rollback_of_a_followed_symlink_names_follow_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "daemon.json"
    link.symlink_to(real)
    record = SwitchOriginal(path=str(real), mode=0o644)
    options = RunOptions(host="unix:///x.sock", daemon_config=link, state_dir=tmp_path / "s")
    with pytest.raises(StateError) as refused:
        refuse_untrusted(record, options)
    assert "--follow-symlinks" in refused.value.hint
    refuse_untrusted(record, replace(options, follow_symlinks=True))  # as the migration ran
    # A journal naming another file altogether: no --follow-symlinks would help.
    with pytest.raises(StateError) as other:
        refuse_untrusted(SwitchOriginal(path=str(tmp_path / "other.json"), mode=0o644), options)
    assert "--follow-symlinks" not in other.value.hint


def test_load_for_edit_of_a_symlink_names_the_option(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "daemon.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(DaemonConfigError) as refused:
        load_for_edit(tmp_path / "daemon.json")
    assert "--follow-symlinks" in refused.value.hint
