"""Raw API answers -> models: the store detection and identity fields the phases rely on."""

from __future__ import annotations

import pytest

from migrate.engine.convert import engine_info, image_record
from migrate.models import EMPTY_LAYER_DIFF_ID, Store

pytestmark = pytest.mark.unit

VERSION = {"Version": "28.5.2", "ApiVersion": "1.51"}


def test_store_comes_from_driver_status_not_driver() -> None:
    # With `storage-driver: overlay2` set, cd mode still reports Driver=overlay2.
    info = {"Driver": "overlay2", "DockerRootDir": "/var/lib/docker",
            "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
    assert engine_info(info, VERSION).store is Store.CONTAINERD
    legacy = {"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}
    assert engine_info(legacy, VERSION).store is Store.LEGACY
    assert engine_info(legacy, VERSION).version == "28.5.2"


def test_image_record_aligns_history_sizes_with_layers() -> None:
    inspect = {
        "Id": "sha256:" + "a" * 64,
        "RepoTags": ["b:1", "a:1", "<none>:<none>"],
        "RepoDigests": ["a@sha256:" + "d" * 64],
        "RootFS": {"Layers": ["sha256:" + "1" * 64, EMPTY_LAYER_DIFF_ID, "sha256:" + "2" * 64]},
        "Config": {"Env": ["A=1"], "Cmd": ["sh"], "Entrypoint": None,
                   "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}, "User": "nobody",
                   "Labels": {"x": "y"}, "WorkingDir": "/srv"},
        "Os": "linux", "Architecture": "amd64", "Created": "2026-01-01T00:00:00Z",
    }
    # Newest first, as the API answers; metadata steps weigh 0.
    history = [{"Size": 0}, {"Size": 200}, {"Size": 0}, {"Size": 100}]
    record = image_record(inspect, history)
    assert record.tags == ("a:1", "b:1")
    assert not record.dangling
    assert record.layer_sizes == (100, 0, 200)
    assert record.config.exposed_ports == ("80/tcp",)
    assert record.config.entrypoint is None
    assert record.config.cmd == ("sh",)


def test_untagged_image_is_dangling() -> None:
    record = image_record({"Id": "sha256:" + "b" * 64, "RepoTags": ["<none>:<none>"]}, [])
    assert record.dangling
    assert record.layer_sizes == ()
