"""Verify's multi-platform probe without a daemon: the OCI layout it loads, the manifest
list it reads, and how its outcome is reported apart from the image checks."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime
from typing import cast

import pytest

from migrate.archives.manifest import ArchiveManifest
from migrate.archives.saved_tar import ExpectedImage
from migrate.engine.client import Engine
from migrate.engine.convert import image_manifests, platform_name
from migrate.errors import EngineError
from migrate.models import EngineInfo, ImageManifest, ImageRecord, Inventory, Store
from migrate.phases.platform_check import (
    PROBE_IMAGE,
    PROBE_PLATFORMS,
    PlatformCheck,
    check_multi_platform,
    multi_platform_status,
    probe_layout,
)
from migrate.phases.verify import (
    CHECKED_AFTER_RECREATE,
    ImageCheck,
    VerificationReport,
    render_text,
    verify,
)
from migrate.phases.volume_guard import oci_architecture

pytestmark = pytest.mark.unit

# Engine 28.5's answer to GET /images/{name}/json?manifests=1 for the probe (trimmed), plus
# an attestation manifest as buildx writes one.
INSPECT_28 = {
    "Id": "sha256:" + "0" * 64,
    "Manifests": [
        {"ID": "sha256:" + "1" * 64, "Available": True, "Kind": "image",
         "Descriptor": {"digest": "sha256:" + "1" * 64,
                        "platform": {"architecture": "amd64", "os": "linux"}},
         "ImageData": {"Platform": {"architecture": "amd64", "os": "linux"}}},
        {"ID": "sha256:" + "2" * 64, "Available": False, "Kind": "image",
         "Descriptor": {"digest": "sha256:" + "2" * 64,
                        "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}},
        {"ID": "sha256:" + "3" * 64, "Available": True, "Kind": "attestation",
         "Descriptor": {"digest": "sha256:" + "3" * 64,
                        "platform": {"architecture": "unknown", "os": "unknown"}}},
    ],
}


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()}


def test_probe_layout_is_one_name_for_an_index_of_two_platforms() -> None:
    layout = probe_layout()
    files = _members(layout.tar)
    blobs = {f"sha256:{name.rsplit('/', 1)[1]}": data for name, data in files.items()
             if name.startswith("blobs/sha256/")}
    assert all(hashlib.sha256(data).hexdigest() == digest.removeprefix("sha256:")
               for digest, data in blobs.items())
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (top,) = json.loads(files["index.json"])["manifests"]
    assert top["digest"] == layout.index_digest
    assert top["annotations"]["io.containerd.image.name"] == PROBE_IMAGE
    index = json.loads(blobs[layout.index_digest])
    assert [platform_name(m["platform"]) for m in index["manifests"]] == list(PROBE_PLATFORMS)
    for entry in index["manifests"]:
        manifest = json.loads(blobs[entry["digest"]])
        config = json.loads(blobs[manifest["config"]["digest"]])
        (layer,) = manifest["layers"]
        assert config["rootfs"]["diff_ids"] == [layer["digest"]]
        program = _members(blobs[layer["digest"]])["pause"]
        # ELF e_machine: 62 = x86-64, 183 = AArch64, as the config's architecture says.
        machine = int.from_bytes(program[18:20], "little")
        assert {"amd64": 62, "arm64": 183}[config["architecture"]] == machine
        assert layout.manifests[f"linux/{config['architecture']}"] == entry["digest"]
    # Deterministic: the same digests at every verify, so a leftover is recognised.
    probe_layout.cache_clear()
    assert probe_layout() == layout


def test_manifest_list_keeps_image_manifests_with_their_platforms() -> None:
    assert image_manifests(INSPECT_28) == (
        ImageManifest(digest="sha256:" + "1" * 64, platform="linux/amd64", available=True),
        ImageManifest(digest="sha256:" + "2" * 64, platform="linux/arm64/v8", available=False),
    )
    assert image_manifests({"Id": "x"}) == ()  # Engine 26 sends no list


def test_native_platform_names() -> None:
    assert oci_architecture("x86_64") == "amd64"
    assert oci_architecture("aarch64") == "arm64"
    assert oci_architecture("arm64") == "arm64"
    assert oci_architecture("s390x") is None


def _report(check: PlatformCheck | None) -> VerificationReport:
    return VerificationReport(
        checked_at=datetime(2026, 1, 1, tzinfo=UTC), store="containerd",
        images=(ImageCheck(legacy_id="sha256:a", new_id="sha256:b", tags=("app:1",)),),
        multi_platform=check)


def test_a_failed_capability_check_does_not_fail_the_verification() -> None:
    failed = PlatformCheck(supported=False, ran="linux/amd64",
                           problems=("the daemon failed to load an archive: boom",))
    report = _report(failed)
    assert report.ok and report.all_problems() == []
    text = render_text(report)
    assert text.startswith("verification at 2026-01-01T00:00:00+00:00: OK")
    assert ("multi-platform: NOT SUPPORTED: the daemon failed to load an archive: boom (the "
            "migrated images are not affected") in text
    assert multi_platform_status(failed) == "unsupported"
    body = json.loads(report.model_dump_json())
    assert body["multi_platform"]["supported"] is False


def test_capability_lines() -> None:
    ok = PlatformCheck(supported=True, platforms=PROBE_PLATFORMS, ran="linux/arm64",
                       evidence="from the image's manifest list")
    assert ok.line() == ("multi-platform: supported (linux/amd64 and linux/arm64 under one "
                         "name, from the image's manifest list; ran the linux/arm64 program; "
                         "nothing left behind)")
    unchecked = PlatformCheck(supported=None, note="no test program for the s390x machine")
    assert unchecked.line() == ("multi-platform: not checked (no test program for the s390x "
                                "machine)")
    assert [multi_platform_status(c) for c in (ok, unchecked, None)] == [
        "supported", "unchecked", "unchecked"]
    assert "multi-platform" not in render_text(_report(None))


class _Store:
    """A daemon as the check sees it: it loads the probe, and may lack a platform."""

    def __init__(self, api_lists: bool, holds: tuple[str, ...], image_id: str) -> None:
        self.api_lists, self.holds, self.image_id = api_lists, holds, image_id
        self.images: set[str] = set()
        self.containers: dict[str, str] = {}
        self.started: list[str] = []

    def containers_with_label(self, label: str) -> list[str]:
        return list(self.containers)

    def discard_container(self, container: str) -> None:
        del self.containers[container]

    def inspect_image(self, ref: str, sizes: bool = True) -> ImageRecord | None:
        return ImageRecord(id=self.image_id) if ref in self.images else None

    def remove_image(self, ref: str, force: bool = False) -> None:
        self.images.discard(ref)

    def load(self, chunks: list[bytes], size: int) -> list[str]:
        self.images.add(PROBE_IMAGE)
        return [PROBE_IMAGE]

    def image_manifests(self, ref: str) -> tuple[ImageManifest, ...] | None:
        if not self.api_lists:
            return None
        return tuple(ImageManifest(digest="sha256:x", platform=p, available=True)
                     for p in self.holds)

    def create_for_platform(self, image: str, platform: str, name: str,
                            labels: dict[str, str], command: tuple[str, ...]) -> str:
        if platform not in self.holds:
            raise EngineError(f"No such image: {image}")
        self.containers[name] = platform
        return name

    def start_container(self, container: str) -> None:
        self.started.append(self.containers[container])

    def running(self, container: str) -> bool:
        return True


@pytest.mark.parametrize("api_lists", [False, True], ids=["api-1.45", "api-1.51"])
def test_a_store_that_keeps_one_platform_is_reported_and_cleaned(api_lists: bool) -> None:
    store = _Store(api_lists, ("linux/amd64",), image_id=probe_layout().manifests["linux/amd64"])
    check = check_multi_platform(cast(Engine, store), "x86_64", {"verify": "1"})
    assert check.supported is False
    assert any("the store kept one platform" in p for p in check.problems)
    assert "linux/arm64: No such image: " + PROBE_IMAGE in check.problems
    assert check.platforms == ("linux/amd64",) and store.started == ["linux/amd64"]
    assert store.images == set() and store.containers == {}


def test_a_store_that_keeps_both_platforms_passes() -> None:
    store = _Store(False, PROBE_PLATFORMS, image_id=probe_layout().index_digest)
    check = check_multi_platform(cast(Engine, store), "aarch64", {})
    assert check.supported and check.ran == "linux/arm64" and store.started == ["linux/arm64"]
    assert check.evidence == "its ID is the index and each platform's create works"
    assert store.images == set() and store.containers == {}
    unknown = check_multi_platform(cast(Engine, store), "s390x", {})
    assert unknown.supported is None and unknown.note == "no test program for the s390x machine"


class _Migrated:
    """A containerd-store daemon holding the migrated images, for `verify` (no probe image
    can be loaded: a capability check would fail the test loudly)."""

    def __init__(self, images: dict[str, ImageRecord]):
        self.images = images
        self.created: list[str] = []

    def info(self) -> EngineInfo:
        return EngineInfo(version="28.5.2", api_version="1.51", store=Store.CONTAINERD,
                          driver="overlayfs", data_root="/var/lib/docker",
                          architecture="x86_64")

    def inspect_image(self, ref: str, sizes: bool = True) -> ImageRecord | None:
        return self.images.get(ref)

    def create_container(self, image: str, **_: object) -> str:
        self.created.append(image)
        return image

    def discard_container(self, container: str) -> None:
        pass


def test_verify_leaves_the_capability_check_to_its_caller_when_asked() -> None:
    old = [ImageRecord(id=f"sha256:{n}", tags=(f"app-{n}:1",), diff_ids=(f"sha256:d{n}",))
           for n in range(12)]
    new_ids = {image.id: f"sha256:new{n}" for n, image in enumerate(old)}
    live = {image.tags[0]: image.model_copy(update={"id": new_ids[image.id]}) for image in old}
    daemon = _Migrated(live)
    inventory = Inventory(taken_at=datetime(2026, 1, 1, tzinfo=UTC), engine=daemon.info(),
                          images=tuple(old))
    staged = [ExpectedImage(legacy_id=i.id, new_id=new_ids[i.id], refs=i.tags) for i in old]
    report = verify(cast(Engine, daemon), inventory, ArchiveManifest(), staged,
                    capability_check=False)
    # Every image checked (at once on the pool), in the snapshot's order, and the test
    # container created; the capability line says where the check went.
    assert report.ok and [c.tags[0] for c in report.images] == [i.tags[0] for i in old]
    assert daemon.created == ["app-0:1"]
    assert report.multi_platform is not None and report.multi_platform.supported is None
    assert report.multi_platform.note == CHECKED_AFTER_RECREATE
    assert "multi-platform: not checked (checked by the recreate phase" in render_text(report)
    # A moved tag is still caught with the checks running at once.
    daemon.images["app-5:1"] = live["app-6:1"]
    moved = verify(cast(Engine, daemon), inventory, ArchiveManifest(), staged,
                   capability_check=False)
    assert not moved.ok and any("app-5:1 is sha256:new6" in p for p in moved.all_problems())
