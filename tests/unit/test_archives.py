from __future__ import annotations

import errno
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from migrate.archives.batching import Batch, BatchKind
from migrate.archives.manifest import (
    ArchiveEntry,
    ArchiveManifest,
    archive_is_intact,
    covered_image_ids,
    manifest_bytes,
    manifest_path,
    prune_unlisted,
    read_manifest,
    remove_partials,
    reusable_archives,
)
from migrate.archives.saved_tar import (
    NAME_ANNOTATION,
    OCI_MANIFEST,
    ArchiveError,
    ExpectedImage,
    expected_images,
    qualified_name,
    read_archive_index,
)
from migrate.archives.writing import save_batch
from migrate.errors import DiskFullError, EngineError
from migrate.host.fs import sha256_file
from migrate.journal.state_dir import StateDir
from migrate.models import EngineInfo, ImageRecord, Inventory, Store

pytestmark = pytest.mark.unit


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeImage:
    """One image as legacy `docker save` lays it out: layers, config, OCI manifest."""

    def __init__(self, seed: str, tags: tuple[str, ...]):
        self.tags = tags
        self.layers = [f"layer {seed} {n}".encode() for n in range(2)]
        self.config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [digest(x) for x in self.layers]},
        }).encode()
        self.id = digest(self.config)
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"digest": self.id, "size": len(self.config)},
            "layers": [{"digest": digest(x), "size": len(x)} for x in self.layers],
        }).encode()
        self.new_id = digest(self.manifest)


def write_save(path: Path, images: list[FakeImage], indexed: list[FakeImage] | None = None,
               index_override: dict[str, Any] | None = None) -> Path:
    """`indexed` limits which images index.json lists (mimics the dangling trap)."""
    blobs: dict[str, bytes] = {}
    for image in images:
        for data in [*image.layers, image.config, image.manifest]:
            blobs[digest(data)] = data
    entries = []
    for image in images if indexed is None else indexed:
        if not image.tags:
            entries.append({"mediaType": OCI_MANIFEST, "digest": image.new_id, "size": 1})
        for tag in image.tags:
            entries.append({"mediaType": OCI_MANIFEST, "digest": image.new_id, "size": 1,
                            "annotations": {NAME_ANNOTATION: qualified_name(tag),
                                            "org.opencontainers.image.ref.name": tag}})
    files = {f"blobs/sha256/{d.removeprefix('sha256:')}": b for d, b in blobs.items()}
    files["index.json"] = json.dumps(
        index_override or {"schemaVersion": 2, "manifests": entries}).encode()
    files["manifest.json"] = json.dumps([
        {"Config": f"blobs/sha256/{i.id.removeprefix('sha256:')}",
         "RepoTags": list(i.tags) or None, "Layers": []} for i in images
    ]).encode()
    files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    with tarfile.open(path, "w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


APP = FakeImage("app", ("acme/app:1", "acme/app:latest"))
BASE = FakeImage("base", ("busybox:1",))
LOOSE = FakeImage("loose", ())


def test_qualified_names_match_what_the_engine_writes() -> None:
    assert qualified_name("t:1") == "docker.io/library/t:1"
    assert qualified_name("acme/app:1") == "docker.io/acme/app:1"
    assert qualified_name("docker.io/t:1") == "docker.io/library/t:1"
    assert qualified_name("localhost:5000/t:1") == "localhost:5000/t:1"
    assert qualified_name("ghcr.io/o/t:1") == "ghcr.io/o/t:1"


def test_index_follows_each_manifest_to_its_config(tmp_path: Path) -> None:
    index = read_archive_index(write_save(tmp_path / "a.tar", [APP, BASE]))
    by_config = {i.config_digest: i for i in index.images}
    app = by_config[APP.id]
    assert app.manifest_digest == APP.new_id
    assert app.names == ("docker.io/acme/app:1", "docker.io/acme/app:latest")
    assert app.repo_tags == APP.tags
    assert app.config_verified
    assert len(index.images) == 2


def test_expected_images_prove_the_chain(tmp_path: Path) -> None:
    index = read_archive_index(write_save(tmp_path / "a.tar", [APP, BASE]))
    refs = {"acme/app:1": APP.id, "acme/app:latest": APP.id, "busybox:1": BASE.id}
    wanted = [ExpectedImage(legacy_id=APP.id, new_id=APP.new_id, refs=APP.tags),
              ExpectedImage(legacy_id=BASE.id, new_id=BASE.new_id, refs=BASE.tags)]
    assert expected_images(index, refs, [], "a.tar") == tuple(
        sorted(wanted, key=lambda e: e.legacy_id))


def test_broken_chain_and_missing_ref_are_refused(tmp_path: Path) -> None:
    index = read_archive_index(write_save(tmp_path / "a.tar", [APP]))
    with pytest.raises(ArchiveError, match="is not image"):
        expected_images(index, {"acme/app:1": BASE.id}, [], "a.tar")
    with pytest.raises(ArchiveError, match=r"other:1 is not in index\.json"):
        expected_images(index, {"other:1": APP.id}, [], "a.tar")


def test_dangling_image_alone_is_indexed_without_name(tmp_path: Path) -> None:
    index = read_archive_index(write_save(tmp_path / "d.tar", [LOOSE]))
    assert expected_images(index, {}, [LOOSE.id], "d.tar") == (
        ExpectedImage(legacy_id=LOOSE.id, new_id=LOOSE.new_id),
    )


def test_dangling_missing_from_index_is_refused(tmp_path: Path) -> None:
    # A dangling image saved next to tagged ones is in manifest.json but not in index.json.
    path = write_save(tmp_path / "m.tar", [APP, LOOSE], indexed=[APP])
    with pytest.raises(ArchiveError, match="dangling image"):
        expected_images(read_archive_index(path), {}, [LOOSE.id], "m.tar")


def test_truncated_or_foreign_archives_are_refused(tmp_path: Path) -> None:
    path = write_save(tmp_path / "a.tar", [APP])
    data = path.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="cannot read the archive"):
        read_archive_index(cut)
    bogus = {"schemaVersion": 2, "manifests": [{"digest": BASE.new_id}]}
    with pytest.raises(ArchiveError, match="has no blobs/sha256"):
        read_archive_index(write_save(tmp_path / "b.tar", [APP], index_override=bogus))


def entry_for(path: Path, image: FakeImage, kind: BatchKind = BatchKind.TAGGED) -> ArchiveEntry:
    return ArchiveEntry(
        file=path.name, kind=kind, refs=image.tags or (image.id,), image_ids=(image.id,),
        bytes=path.stat().st_size, sha256=sha256_file(path),
        images=(ExpectedImage(legacy_id=image.id, new_id=image.new_id, refs=image.tags),),
        config_digests_verified=True, written_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


def inventory(*images: ImageRecord) -> Inventory:
    engine = EngineInfo(version="26.1.5", api_version="1.45", store=Store.LEGACY,
                        driver="overlay2", data_root="/var/lib/docker")
    return Inventory(taken_at=datetime(2025, 1, 1, tzinfo=UTC), engine=engine, images=images)


def record(image: FakeImage, tags: tuple[str, ...] | None = None) -> ImageRecord:
    return ImageRecord(id=image.id, tags=image.tags if tags is None else tags)


def test_intact_means_present_same_size_same_sha(tmp_path: Path) -> None:
    path = write_save(tmp_path / "batch-1.tar", [APP])
    entry = entry_for(path, APP)
    assert archive_is_intact(entry, tmp_path)
    with path.open("r+b") as handle:
        handle.seek(100)
        handle.write(b"X")
    assert not archive_is_intact(entry, tmp_path)
    path.unlink()
    assert not archive_is_intact(entry, tmp_path)


def test_reusable_archives_keep_matching_and_delete_the_rest(tmp_path: Path) -> None:
    app = entry_for(write_save(tmp_path / "batch-app.tar", [APP]), APP)
    base = entry_for(write_save(tmp_path / "batch-base.tar", [BASE]), BASE)
    loose = entry_for(write_save(tmp_path / "batch-loose.tar", [LOOSE]), LOOSE,
                      BatchKind.DANGLING)
    manifest = ArchiveManifest(archives=(app, base, loose))
    # busybox:1 now names another image: its archive would load the wrong content.
    moved = ImageRecord(id="sha256:" + "9" * 64, tags=("busybox:1",))
    kept = reusable_archives(manifest, inventory(record(APP), moved, record(LOOSE)), tmp_path)
    assert [a.file for a in kept.archives] == ["batch-app.tar", "batch-loose.tar"]
    assert not (tmp_path / "batch-base.tar").exists()


def test_an_extra_tag_makes_the_image_uncovered(tmp_path: Path) -> None:
    app = entry_for(write_save(tmp_path / "batch-app.tar", [APP]), APP)
    loose = entry_for(write_save(tmp_path / "batch-loose.tar", [LOOSE]), LOOSE,
                      BatchKind.DANGLING)
    retagged = record(APP, (*APP.tags, "acme/app:2"))
    assert covered_image_ids([app, loose], inventory(record(APP), record(LOOSE))) == {
        APP.id, LOOSE.id}
    assert covered_image_ids([app, loose], inventory(retagged)) == set()


def test_manifest_round_trips_and_cleans_up(tmp_path: Path) -> None:
    state_dir = StateDir(tmp_path).ensure()
    archives = state_dir.archives_dir
    assert read_manifest(archives) == ArchiveManifest()
    first = entry_for(write_save(archives / "batch-app.tar", [APP]), APP)
    manifest = ArchiveManifest().with_entry(first).with_entry(first)
    state_dir.write_file(manifest_path(archives), manifest_bytes(manifest))
    assert read_manifest(archives) == manifest
    assert len(manifest.archives) == 1
    assert (archives / "manifest.json").stat().st_mode & 0o777 == 0o600
    (archives / "batch-old.tar").write_bytes(b"old")
    (archives / "batch-new.tar.partial").write_bytes(b"half")
    assert remove_partials(archives) == ["batch-new.tar.partial"]
    assert prune_unlisted(archives, manifest) == ["batch-old.tar"]
    assert sorted(p.name for p in archives.iterdir()) == ["batch-app.tar", "manifest.json"]


class FailingEngine:
    """Streams a few chunks of `docker save`, then fails the way the daemon or disk can."""

    def __init__(self, error: BaseException):
        self.error = error
        self.closed = False

    def save(self, refs: list[str]) -> Iterator[bytes]:
        try:
            yield b"x" * 1024
            yield b"y" * 1024
            raise self.error
        finally:
            self.closed = True


class NullBar:
    def advance(self, nbytes: int) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


BATCH = Batch(name="batch-0123456789abcdef.tar", kind=BatchKind.TAGGED, refs=("a:1",),
              image_ids=("sha256:" + "a" * 64,), estimated_bytes=2048)


@pytest.mark.parametrize(("error", "raised"), [
    (KeyboardInterrupt(), KeyboardInterrupt),
    (EngineError("the daemon refused"), EngineError),
    (OSError(errno.ENOSPC, "No space left on device"), DiskFullError),
])
def test_a_failed_save_leaves_no_partial_and_no_archive(
        tmp_path: Path, error: BaseException, raised: type[BaseException]) -> None:
    engine = FailingEngine(error)
    (tmp_path / "batch-done.tar").write_bytes(b"complete")
    with pytest.raises(raised):
        save_batch(engine, BATCH, tmp_path, NullBar())  # type: ignore[arg-type]
    assert engine.closed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch-done.tar"]


def test_a_finished_save_is_private_and_hashed_while_written(tmp_path: Path) -> None:
    class Engine:
        def save(self, refs: list[str]) -> Iterator[bytes]:
            yield from (b"a" * 1000, b"b" * 24)

    path, size, sha = save_batch(Engine(), BATCH, tmp_path, NullBar())  # type: ignore[arg-type]
    assert path == tmp_path / BATCH.name and size == 1024
    assert sha == hashlib.sha256(b"a" * 1000 + b"b" * 24).hexdigest()
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_interrupt_while_writing_closes_the_daemon_stream(tmp_path: Path) -> None:
    class InterruptingBar(NullBar):
        def advance(self, nbytes: int) -> None:
            raise KeyboardInterrupt

    engine = FailingEngine(AssertionError("never reached"))
    with pytest.raises(KeyboardInterrupt):
        save_batch(engine, BATCH, tmp_path, InterruptingBar())  # type: ignore[arg-type]
    assert engine.closed  # suspended at its first chunk, closed by save_batch
    assert list(tmp_path.iterdir()) == []
