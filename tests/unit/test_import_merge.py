"""The import phase: an image imported from two archives keeps the refs of both (for an exact
purge), and a load the daemon refuses is blamed on what failed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from migrate.archives.batching import BatchKind
from migrate.archives.manifest import ArchiveEntry
from migrate.engine.client import Engine
from migrate.errors import EngineError
from migrate.journal.state_dir import StateDir
from migrate.models import Store, commit_ref
from migrate.phases.base import PhaseContext, RunOptions, UndoContext
from migrate.phases.commit import PHASE as COMMIT
from migrate.phases.import_ import ImportedImage, ImportPhase, ImportUndo, _merge
from migrate.phases.records import CommittedEntry, CommitUndo
from migrate.support.progress import byte_bar

pytestmark = pytest.mark.unit


def test_refs_of_one_image_from_two_archives_are_merged() -> None:
    first = [ImportedImage(id="sha256:b", legacy_id="sha256:1", refs=("app:1",)),
             ImportedImage(id="sha256:a", legacy_id="sha256:2")]
    second = [ImportedImage(id="sha256:b", legacy_id="sha256:1", refs=("app:latest", "app:1"))]
    merged = _merge(first, second)
    assert [image.id for image in merged] == ["sha256:a", "sha256:b"]
    assert merged[1].refs == ("app:1", "app:latest")
    assert merged[0].refs == ()


class _DyingContainerd:
    """An engine whose containerd dies while the archive streams in."""

    def __init__(self, said: str) -> None:
        self.said = said

    def load(self, chunks: Iterable[bytes], size: int | None = None) -> list[str]:
        for _ in chunks:
            pass
        raise EngineError(self.said, "check that the archive is intact (its checksum) and that "
                          "the data-root filesystem has free space")


def _entry(tmp_path: Path, data: bytes) -> ArchiveEntry:
    (tmp_path / "batch-0001.tar").write_bytes(data)
    return ArchiveEntry(file="batch-0001.tar", kind=BatchKind.TAGGED, refs=(), image_ids=(),
                        bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), images=(),
                        config_digests_verified=True, written_at=datetime.now(UTC))


@pytest.mark.parametrize("verify", [True, False])
def test_containerd_dying_during_the_load_is_not_blamed_on_the_archive_or_disk(
        tmp_path: Path, verify: bool) -> None:
    entry = _entry(tmp_path, b"x" * 1000)
    ctx = cast(PhaseContext, SimpleNamespace(archives_dir=tmp_path))
    engine = cast(Engine, _DyingContainerd(
        "the daemon failed to load an archive: rpc error: code = Unavailable desc = error "
        "reading from server: EOF"))
    with byte_bar("import", entry.bytes) as bar, pytest.raises(EngineError) as raised:
        ImportPhase()._load(ctx, engine, entry, bar, verify=verify)
    assert "batch-0001.tar is intact" in raised.value.hint
    assert "containerd" in raised.value.hint
    assert "free space" not in raised.value.hint and "checksum" not in raised.value.hint


def test_a_full_disk_during_the_load_is_still_the_disk(tmp_path: Path) -> None:
    entry = _entry(tmp_path, b"y" * 10)
    ctx = cast(PhaseContext, SimpleNamespace(archives_dir=tmp_path))
    engine = cast(Engine, _DyingContainerd(
        "the daemon failed to load an archive: write /var/lib/docker/x: no space left on device"))
    with byte_bar("import", entry.bytes) as bar, pytest.raises(EngineError) as raised:
        ImportPhase()._load(ctx, engine, entry, bar)
    assert raised.value.hint.startswith("free space")


class _Store:
    """Images of one store, as an engine context manager (enough for the two undos)."""

    def __init__(self, store: Store, images: dict[str, str]) -> None:
        self.store, self.images = store, images  # ref or ID -> image ID

    def __enter__(self) -> _Store:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def info(self) -> SimpleNamespace:
        return SimpleNamespace(store=self.store)

    def raw_image(self, ref: str) -> dict[str, object] | None:
        image_id = self.images.get(ref)
        return None if image_id is None else {"Id": image_id, "RepoTags": [
            r for r, i in self.images.items() if i == image_id and r != i]}

    def remove_image(self, ref: str) -> None:
        image_id = self.images.pop(ref)
        if not any(i == image_id for r, i in self.images.items() if r != i):
            self.images.pop(image_id, None)


@pytest.mark.parametrize("purge", [False, True])
def test_rollback_names_each_commit_image_once(tmp_path: Path, purge: bool) -> None:
    ref = commit_ref("c" * 64)
    new_id, old_id = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    imported = (ImportedImage(id=new_id, legacy_id=old_id, refs=(ref,)),
                ImportedImage(id="sha256:" + "3" * 64, legacy_id="sha256:4", refs=("app:1",)))
    options = RunOptions(host="unix:///x.sock", daemon_config=tmp_path / "d.json",
                         state_dir=tmp_path)
    containerd = _Store(Store.CONTAINERD, {ref: new_id, new_id: new_id,
                                           "app:1": "sha256:" + "3" * 64})
    legacy = _Store(Store.LEGACY, {ref: old_id, old_id: old_id})
    report = ImportPhase().undo(
        UndoContext(options, lambda: cast(Engine, containerd), StateDir(tmp_path),
                     purge_imported=purge),
        ImportUndo(imported=imported))
    report += COMMIT.undo(UndoContext(options, lambda: cast(Engine, legacy), StateDir(tmp_path)),
                          CommitUndo(commits=(CommittedEntry(container="c" * 64, name="job",
                                                             ref=ref),)))
    assert report.ok, report
    lines = report.did
    assert sum(ref in line for line in lines) == 1, lines
    assert "import: removed the 1 commit image(s) from the containerd store" in lines
    assert ref not in containerd.images and ref not in legacy.images
    assert ("import: removed app:1" in "\n".join(lines)) is purge


def test_a_commit_image_is_told_by_its_repository_alone() -> None:
    commit = ImportedImage(id="sha256:" + "1" * 64, refs=("app:1", commit_ref("c" * 64)))
    assert commit.commit
    # A user's repository that merely starts like ours is not a commit image.
    lookalike = ("containerd-migrate/committed:1", "containerd-migrate/commit")
    assert not ImportedImage(id="sha256:" + "2" * 64, refs=lookalike).commit
