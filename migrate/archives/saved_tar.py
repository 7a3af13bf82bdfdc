"""Reading a `docker save` archive and proving what it holds.

`read_archive_index` follows index.json to each OCI manifest and its config without
reading layer data; `expected_images` checks the chain ref -> OCI manifest -> config
digest == legacy image ID for a batch. `migrate.archives`, which keeps the manifest of
the export archives, re-exports everything public here.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from migrate.errors import MigrateError
from migrate.models import Frozen

__all__ = [
    "DOCKER_MANIFEST", "MAX_METADATA_BYTES", "NAME_ANNOTATION", "OCI_MANIFEST", "ArchiveError",
    "ArchiveIndex", "ExpectedImage", "IndexedImage", "expected_images", "qualified_name",
    "read_archive_index",
]

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
