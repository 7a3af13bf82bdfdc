"""Verify's multi-platform check and its throw-away containers, on real engines.

The containerd store is read with the engine's own `ctr`: that the probe's content and
snapshots are gone is something only containerd can say.
"""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest

from migrate.engine.client import Engine
from migrate.engine.containerd import Containerd, find_ctr
from migrate.errors import EngineError
from migrate.models import DOCKERD_CONTAINERD_NAMESPACE
from migrate.phases.platform_check import (
    PROBE_IMAGE,
    PROBE_LABEL,
    PROBE_PLATFORMS,
    check_multi_platform,
    probe_layout,
)
from migrate.phases.verify import VERIFY_LABEL, try_container
from migrate.phases.volume_guard import GUARD_COMMAND
from migrate.sandbox import Sandbox, SandboxFactory, docker
from migrate.sandbox.fetch import docker_cli, engine_bin_dirs

pytestmark = pytest.mark.engine

CONTAINERD_STORE = {"features": {"containerd-snapshotter": True}}
ENGINES = pytest.mark.parametrize("engine_key", ["26", "28"])


def _ctr(sandbox: Sandbox) -> Containerd:
    ctr = find_ctr(None, path=":".join(map(str, engine_bin_dirs(sandbox.engine))))
    assert ctr is not None
    return Containerd(ctr, str(sandbox.containerd_socket), DOCKERD_CONTAINERD_NAMESPACE)


def _content(client: Containerd) -> set[str]:
    listed = subprocess.run([str(client.ctr), "--address", client.address, "-n",
                             client.namespace, "content", "ls", "-q"], capture_output=True,
                            text=True, check=True).stdout
    return set(listed.split())


def _trace(sandbox: Sandbox) -> dict[str, object]:
    """Everything a check could leave behind, as the operator and containerd see it."""
    client = _ctr(sandbox)
    return {
        "images": docker(sandbox.host, "image", "ls", "-a", "-q", "--no-trunc").stdout.split(),
        "containers": docker(sandbox.host, "ps", "-a", "-q").stdout.split(),
        "volumes": docker(sandbox.host, "volume", "ls", "-q").stdout.split(),
        "content": _content(client),
        "snapshots": client.snapshots("overlayfs"),
        "containerd images": client.images(),
    }


def _volume_image(sandbox: Sandbox, tag: str) -> None:
    """A one-file image that declares a VOLUME, as `docker import` makes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("srv/data/.keep")
        tar.addfile(info, io.BytesIO(b""))
    subprocess.run([docker_cli(), "-H", sandbox.host, "import", "--change", "VOLUME /srv/data",
                    "-", tag], input=buffer.getvalue(), capture_output=True, check=True)


@ENGINES
def test_multi_platform_check_passes_and_leaves_nothing(fresh_sandbox: SandboxFactory,
                                                        engine_key: str) -> None:
    sandbox = fresh_sandbox(engine_key, daemon_json=CONTAINERD_STORE)
    assert sandbox.containerd_snapshotter()
    before = _trace(sandbox)
    layout = probe_layout()
    with Engine(sandbox.host) as engine:
        # A verify killed midway left the probe and one of its containers behind.
        engine.load([layout.tar], size=len(layout.tar))
        engine.create_for_platform(PROBE_IMAGE, PROBE_PLATFORMS[1], "cm-left-over",
                                   {PROBE_LABEL: "1"}, GUARD_COMMAND)
        check = check_multi_platform(engine, engine.info().architecture, {VERIFY_LABEL: "1"})
    assert check.supported, check.problems
    assert check.platforms == PROBE_PLATFORMS and check.ran in PROBE_PLATFORMS
    # Engine 28's inspect lists the manifests; Engine 26's API cannot (docs/engine-facts.md).
    assert ("manifest list" in check.evidence) is (engine_key == "28")
    assert check.line().startswith("multi-platform: supported (linux/amd64 and linux/arm64")
    after = _trace(sandbox)
    assert after == before
    assert not set(layout.manifests.values()) & after["content"]  # type: ignore[operator]


@ENGINES
def test_engine_26_api_has_no_manifest_list_but_refuses_a_missing_platform(
        fresh_sandbox: SandboxFactory, engine_key: str) -> None:
    """What proves "both platforms under one name" on each engine: the create of a platform
    the index lacks is refused (26 answers 404 No such image), and only API 1.48+ lists the
    manifests."""
    sandbox = fresh_sandbox(engine_key, daemon_json=CONTAINERD_STORE)
    layout = probe_layout()
    with Engine(sandbox.host) as engine:
        engine.load([layout.tar], size=len(layout.tar))
        manifests = engine.image_manifests(PROBE_IMAGE)
        image = engine.inspect_image(PROBE_IMAGE, sizes=False)
        assert image is not None and image.id == layout.index_digest
        with pytest.raises(EngineError, match=r"linux/s390x|No such image"):
            engine.create_for_platform(PROBE_IMAGE, "linux/s390x", "cm-s390x", {},
                                       GUARD_COMMAND)
        created = engine.create_for_platform(PROBE_IMAGE, "linux/arm64", "cm-arm64", {},
                                             GUARD_COMMAND)
        engine.discard_container(created)
        engine.remove_image(PROBE_IMAGE)
    if engine_key == "26":
        assert manifests is None
    else:
        assert manifests is not None
        assert {(m.platform, m.digest, m.available) for m in manifests} == {
            (p, d, True) for p, d in layout.manifests.items()}


@ENGINES
def test_multi_platform_check_fails_on_the_legacy_store(fresh_sandbox: SandboxFactory,
                                                        engine_key: str) -> None:
    """The legacy store cannot load an OCI index without a manifest.json: the check says so
    and leaves nothing behind."""
    sandbox = fresh_sandbox(engine_key)
    before = docker(sandbox.host, "image", "ls", "-a", "-q").stdout
    with Engine(sandbox.host) as engine:
        check = check_multi_platform(engine, engine.info().architecture, {})
    assert check.supported is False and check.problems
    assert check.line().startswith("multi-platform: NOT SUPPORTED: ")
    assert docker(sandbox.host, "image", "ls", "-a", "-q").stdout == before


@ENGINES
def test_throw_away_container_leaves_no_anonymous_volume(fresh_sandbox: SandboxFactory,
                                                         engine_key: str) -> None:
    """Issue 16 item 8: each verify left an empty volume per image declaring VOLUME."""
    sandbox = fresh_sandbox(engine_key, daemon_json=CONTAINERD_STORE)
    _volume_image(sandbox, "cm-test/with-volume:1")
    volumes = docker(sandbox.host, "volume", "ls", "-q").stdout
    with Engine(sandbox.host) as engine:
        assert engine.inspect_image("cm-test/with-volume:1", sizes=False) is not None
        for _ in range(2):
            assert try_container(engine, "cm-test/with-volume:1") == []
    assert docker(sandbox.host, "volume", "ls", "-q").stdout == volumes
    assert docker(sandbox.host, "ps", "-a", "-q").stdout == ""
