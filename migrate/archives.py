"""The archives written by export and read by import, and their manifest.

`<archives_dir>/manifest.json` lists every active archive with its checksum and the image
IDs each image will have after a cd-mode `docker load`. That ID is the digest of the OCI
manifest `docker save` wrote into index.json, and that manifest's config digest must be the
legacy image ID: checking the chain at export time is what lets verify prove identity later.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tarfile
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from migrate.batching import BATCH_PREFIX, BATCH_SUFFIX, BatchKind
from migrate.errors import MigrateError
from migrate.fsutil import atomic_write_bytes, fsync_dir, sha256_file
from migrate.models import Frozen, Inventory

MANIFEST_NAME = "manifest.json"
PARTIAL_SUFFIX = ".partial"
NAME_ANNOTATION = "io.containerd.image.name"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
# index.json, manifest.json, manifests and configs are small; a bigger member under one
# of those names means we are not reading a `docker save` archive.
MAX_METADATA_BYTES = 64 * 1024 * 1024


class ArchiveError(MigrateError):
    """An archive is unreadable, or does not hold what its batch asked for."""


class ExpectedImage(Frozen):
    legacy_id: str
    # Digest of the OCI manifest in index.json: the image ID after a cd-mode load.
    new_id: str
    # Tags as `docker save` was called with them; empty for a dangling image.
    refs: tuple[str, ...] = ()


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

    def with_entry(self, entry: ArchiveEntry) -> ArchiveManifest:
        others = tuple(a for a in self.archives if a.file != entry.file)
        return self.model_copy(update={"archives": (*others, entry)})


class IndexedImage(Frozen):
    """One distinct image in an archive's index.json, followed to its manifest and config."""

    manifest_digest: str
    config_digest: str
    # Fully qualified names from the index annotations; empty for a dangling image.
    names: tuple[str, ...]
    # What manifest.json says for the same config (familiar names, as saved).
    repo_tags: tuple[str, ...]
    config_verified: bool


class ArchiveIndex(Frozen):
    images: tuple[IndexedImage, ...]


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


def write_manifest(archives_dir: Path, manifest: ArchiveManifest) -> None:
    atomic_write_bytes(manifest_path(archives_dir),
                       manifest.model_dump_json(indent=2).encode(), mode=0o600)


# --- reading a saved tar ------------------------------------------------------------------

def qualified_name(ref: str) -> str:
    """`t:1` -> `docker.io/library/t:1`, as the engine writes it into index.json."""
    first, slash, rest = ref.partition("/")
    if not slash:
        return f"docker.io/library/{ref}"
    if first in {"docker.io", "index.docker.io"}:
        return f"docker.io/{rest}" if "/" in rest else f"docker.io/library/{rest}"
    if "." in first or ":" in first or first == "localhost":
        return ref
    return f"docker.io/{ref}"


def _member_bytes(tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], name: str,
                  archive: Path) -> bytes:
    member = members.get(name)
    handle = tar.extractfile(member) if member is not None else None
    if member is None or handle is None:
        raise ArchiveError(f"{archive.name} has no {name}: it is not a complete `docker save`",
                           "delete it and run `containerd-migrate export` again")
    if member.size > MAX_METADATA_BYTES:
        raise ArchiveError(f"{archive.name}: {name} is implausibly large ({member.size} bytes)")
    with handle:
        return handle.read()


def _blob_name(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"blobs/{algorithm}/{hexpart}"


def _sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _repo_tags_by_config(manifest_json: Any) -> dict[str, tuple[str, ...]]:
    tags: dict[str, tuple[str, ...]] = {}
    for item in manifest_json or ():
        config = str(item.get("Config", ""))
        digest = "sha256:" + config.rsplit("/", 1)[-1].removesuffix(".json")
        tags[digest] = tuple(item.get("RepoTags") or ())
    return tags


def read_archive_index(path: Path) -> ArchiveIndex:
    """Parse index.json, manifest.json and the manifest/config blobs of a saved archive.

    Seeks over layer data instead of reading it; reading all headers also proves the tar
    is not truncated (tarfile checks that the last member's data is there).
    """
    try:
        with tarfile.open(path, "r:") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
            index = json.loads(_member_bytes(tar, members, "index.json", path))
            repo_tags = _repo_tags_by_config(
                json.loads(_member_bytes(tar, members, "manifest.json", path)))
            found: dict[str, IndexedImage] = {}
            for descriptor in index.get("manifests") or ():
                digest = str(descriptor["digest"])
                names = tuple(
                    name for name in [(descriptor.get("annotations") or {}).get(NAME_ANNOTATION)]
                    if name
                )
                previous = found.get(digest)
                if previous is not None:
                    found[digest] = previous.model_copy(
                        update={"names": tuple(sorted({*previous.names, *names}))})
                    continue
                found[digest] = _follow_manifest(tar, members, path, digest=digest, names=names,
                                                 repo_tags=repo_tags)
    except (tarfile.TarError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"cannot read the archive {path}: {exc}",
                           "the file is damaged or incomplete: delete it and run "
                           "`containerd-migrate export` again") from exc
    return ArchiveIndex(images=tuple(found[d] for d in sorted(found)))


def _follow_manifest(tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], path: Path,
                     *, digest: str, names: tuple[str, ...],
                     repo_tags: Mapping[str, tuple[str, ...]]) -> IndexedImage:
    raw = _member_bytes(tar, members, _blob_name(digest), path)
    if _sha256_digest(raw) != digest:
        raise ArchiveError(f"{path.name}: manifest blob {digest} does not match its digest")
    manifest = json.loads(raw)
    if manifest.get("mediaType", OCI_MANIFEST) not in {OCI_MANIFEST, DOCKER_MANIFEST}:
        raise ArchiveError(f"{path.name}: {digest} is a {manifest.get('mediaType')}, not an "
                           "image manifest; only legacy-store archives are supported")
    config_digest = str(manifest["config"]["digest"])
    config = _member_bytes(tar, members, _blob_name(config_digest), path)
    return IndexedImage(
        manifest_digest=digest,
        config_digest=config_digest,
        names=tuple(sorted(names)),
        repo_tags=repo_tags.get(config_digest, ()),
        config_verified=_sha256_digest(config) == config_digest,
    )


def expected_images(index: ArchiveIndex, ref_to_id: Mapping[str, str],
                    dangling_ids: Iterable[str], archive: str) -> tuple[ExpectedImage, ...]:
    """Check the chain ref -> OCI manifest -> config digest == legacy ID for a batch.

    Raises ArchiveError when the archive lacks a ref or an image, or when a chain is broken:
    loading it would then give images that cannot be proven identical.
    """
    problems: list[str] = []
    found: dict[str, IndexedImage] = {}
    for ref, legacy_id in sorted(ref_to_id.items()):
        wanted = qualified_name(ref)
        hit = next((i for i in index.images if wanted in i.names), None)
        if hit is None:
            problems.append(f"{ref} is not in index.json")
        elif hit.config_digest != legacy_id or not hit.config_verified:
            problems.append(f"{ref}: config {hit.config_digest} is not image {legacy_id}")
        elif found.setdefault(legacy_id, hit) != hit:
            problems.append(f"{ref}: two manifests for image {legacy_id}")
    for legacy_id in sorted(dangling_ids):
        hit = next((i for i in index.images if i.config_digest == legacy_id and not i.names),
                   None)
        if hit is None or not hit.config_verified:
            problems.append(f"dangling image {legacy_id} is not in index.json")
        else:
            found[legacy_id] = hit
    if problems:
        raise ArchiveError(f"{archive} does not hold what was saved: " + "; ".join(problems[:5]),
                           "run `containerd-migrate export` again; if this repeats, report it")
    refs_by_id: dict[str, list[str]] = {}
    for ref, legacy_id in ref_to_id.items():
        refs_by_id.setdefault(legacy_id, []).append(ref)
    return tuple(
        ExpectedImage(legacy_id=legacy_id, new_id=hit.manifest_digest,
                      refs=tuple(sorted(refs_by_id.get(legacy_id, ()))))
        for legacy_id, hit in sorted(found.items())
    )


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
