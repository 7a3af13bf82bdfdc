"""The archives written by export and read by import, and their manifest.

`<archives_dir>/manifest.json` lists every active archive with its checksum and the image
IDs each image will have after a cd-mode `docker load`. That ID is the digest of the OCI
manifest `docker save` wrote into index.json, and that manifest's config digest must be the
legacy image ID: checking the chain at export time is what lets verify prove identity later.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from migrate.archives.batching import BATCH_PREFIX, BATCH_SUFFIX, BatchKind
from migrate.archives.saved_tar import ArchiveError, ExpectedImage
from migrate.host.fs import fsync_dir, sha256_file
from migrate.models import Frozen, Inventory

MANIFEST_NAME = "manifest.json"
PARTIAL_SUFFIX = ".partial"


class ArchiveEntry(Frozen):
    file: str
    kind: BatchKind
    refs: tuple[str, ...]
    image_ids: tuple[str, ...]
    bytes: int
    sha256: str
    images: tuple[ExpectedImage, ...]
    config_digests_verified: bool
    written_at: datetime


class ArchiveManifest(Frozen):
    version: int = 1
    archives: tuple[ArchiveEntry, ...] = ()

    def entry(self, file: str) -> ArchiveEntry | None:
        return next((a for a in self.archives if a.file == file), None)

    def new_ids(self) -> dict[str, str]:
        """Legacy image ID -> the ID it has after a containerd-store load."""
        return {i.legacy_id: i.new_id for a in self.archives for i in a.images}

    def with_entry(self, entry: ArchiveEntry) -> ArchiveManifest:
        others = tuple(a for a in self.archives if a.file != entry.file)
        return self.model_copy(update={"archives": (*others, entry)})


# --- manifest file ------------------------------------------------------------------------

def manifest_path(archives_dir: Path) -> Path:
    return archives_dir / MANIFEST_NAME


def read_manifest(archives_dir: Path) -> ArchiveManifest:
    path = manifest_path(archives_dir)
    try:
        return ArchiveManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return ArchiveManifest()
    except ValidationError as exc:
        raise ArchiveError(
            f"the archive manifest {path} is unreadable: {exc.errors()[0]['msg']}",
            "delete it (and the archives next to it) and run `containerd-migrate export` again",
        ) from exc


def manifest_bytes(manifest: ArchiveManifest) -> bytes:
    """The manifest file's content; the phases write it through `StateDir.write_file`."""
    return manifest.model_dump_json(indent=2).encode()


# --- reuse and cleanup --------------------------------------------------------------------

def archive_is_intact(entry: ArchiveEntry, archives_dir: Path,
                      on_bytes: Callable[[int], None] | None = None) -> bool:
    path = archives_dir / entry.file
    try:
        if path.stat().st_size != entry.bytes:
            return False
        return sha256_file(path, on_bytes) == entry.sha256
    except FileNotFoundError:
        return False


def entry_matches_inventory(entry: ArchiveEntry, inventory: Inventory) -> bool:
    """Every ref of the archive still names the legacy image it was saved from."""
    tag_to_id = {tag: image.id for image in inventory.images for tag in image.tags}
    dangling = {image.id for image in inventory.dangling_images}
    for image in entry.images:
        if entry.kind is BatchKind.DANGLING:
            if image.legacy_id not in dangling:
                return False
        elif not image.refs or any(tag_to_id.get(ref) != image.legacy_id for ref in image.refs):
            return False
    return bool(entry.images)


def written_bytes(archives_dir: Path, inventory: Inventory) -> int:
    """Bytes of the archives already written that a run would reuse for this host (by name
    and size; the export checks their sha256 before reusing them). Never raises: a plan
    that cannot tell credits nothing."""
    try:
        manifest = read_manifest(archives_dir)
    except (ArchiveError, OSError):
        return 0
    total = 0
    for entry in manifest.archives:
        try:
            size = (archives_dir / entry.file).stat().st_size
        except OSError:
            continue
        if size == entry.bytes and entry_matches_inventory(entry, inventory):
            total += entry.bytes
    return total


def covered_image_ids(entries: Iterable[ArchiveEntry], inventory: Inventory) -> set[str]:
    """Images whose every current tag (or, dangling, the image itself) is in an archive."""
    archived: dict[str, set[str]] = {}
    for entry in entries:
        for image in entry.images:
            archived.setdefault(image.legacy_id, set()).update(image.refs)
    return {
        image.id for image in inventory.images
        if image.id in archived and set(image.tags) <= archived[image.id]
    }


def _unlink(path: Path) -> bool:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        return True
    return False


def reusable_archives(manifest: ArchiveManifest, inventory: Inventory,
                      archives_dir: Path) -> ArchiveManifest:
    """Keep the intact archives that still match the host; delete the others."""
    kept = [entry for entry in manifest.archives
            if entry_matches_inventory(entry, inventory) and archive_is_intact(entry, archives_dir)]
    _remove_all(archives_dir, (archives_dir / e.file for e in manifest.archives if e not in kept))
    return manifest.model_copy(update={"archives": tuple(kept)})


def _remove_all(archives_dir: Path, paths: Iterable[Path]) -> list[str]:
    removed = [path.name for path in sorted(paths) if _unlink(path)]
    if removed:
        fsync_dir(archives_dir)
    return removed


def remove_partials(archives_dir: Path) -> list[str]:
    return _remove_all(archives_dir, archives_dir.glob(f"*{PARTIAL_SUFFIX}"))


def prune_unlisted(archives_dir: Path, manifest: ArchiveManifest) -> list[str]:
    """Delete batch archives the manifest no longer lists (left by an older plan)."""
    listed = {entry.file for entry in manifest.archives}
    stray = archives_dir.glob(f"{BATCH_PREFIX}*{BATCH_SUFFIX}")
    return _remove_all(archives_dir, (p for p in stray if p.name not in listed))


def delete_archives(archives_dir: Path) -> int:
    """Delete the archives, keeping their manifest, which `verify` still reads (expected IDs).

    Returns the bytes freed.
    """
    freed = 0
    if not archives_dir.is_dir():
        return freed
    for path in archives_dir.iterdir():
        if path.is_file() and not path.is_symlink() and path.name != MANIFEST_NAME:
            freed += path.stat().st_size
            path.unlink()
    return freed
