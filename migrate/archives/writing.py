"""Writing `docker save` archives: a batch streamed into `<name>.partial`, checksummed,
fsynced and renamed, then listed in the manifest; and the disk-room rule it, `plan` and
staging share.

Export and commit write their batches through `write_batches`; stage and `rehearse` use
`batch_cap` and `closing_stream` for their own streams. Names are content-derived: a
resumed run, or a later run after a pre-staging export, recognises intact archives and
writes only images that are new or changed since.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from migrate.archives.batching import Batch, BatchKind
from migrate.archives.manifest import PARTIAL_SUFFIX, ArchiveEntry, ArchiveManifest
from migrate.archives.saved_tar import ArchiveError, expected_images, read_archive_index
from migrate.engine.client import Engine
from migrate.errors import DiskFullError
from migrate.host.fs import (
    HashingWriter,
    disk_full_guard,
    free_bytes,
    fsync_dir,
    sha256_file,
    start_writeback,
)
from migrate.models import Inventory
from migrate.support import failpoints
from migrate.support.logconfig import get_logger
from migrate.support.progress import ByteProgress

log = get_logger(__name__)

# Legacy save answers only after staging the whole batch, and cd-mode load only after
# ingesting it; the engine's read timeout (120 s) runs meanwhile. Measured ~330 MB/s
# staging, so 8 GiB keeps even slow disks inside it and resume granularity useful.
MAX_BATCH_BYTES = 8 * 1024 * 1024 * 1024
# Start the writeback of an archive being written every this many bytes.
WRITEBACK_STEP = 8 * 1024 * 1024
# Head-room left on a filesystem for the journal, reports and the daemon's own writes.
# One rule for `plan`'s disk checks and the export's pre-check (`room_needed`), so a plan
# that passes is a run whose export has room.
RESERVE_BYTES = 256 * 1024 * 1024


def room_needed(write_bytes: int) -> int:
    """Free bytes a filesystem needs before `write_bytes` are written to it."""
    return write_bytes + RESERVE_BYTES


class ArchiveSink(Protocol):
    """Where `write_batches` puts the archives and what it tells about each one; a phase's
    `PhaseContext` is one (its state dir's archives, its journal checkpoint)."""

    @property
    def archives_dir(self) -> Path: ...

    def write_manifest(self, manifest: ArchiveManifest) -> None: ...

    def checkpoint(self, data: Mapping[str, Any]) -> None: ...


def _same_filesystem(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return False


def staging_cap(data_root: str, archives_dir: Path) -> int | None:
    """Largest batch the engine's staging copy under DATA_ROOT/tmp can hold.

    None when the data root is not visible from here (remote daemon): we cannot measure it.
    When the archives live on the same filesystem, each batch is there twice.
    """
    root = Path(data_root) if data_root else None
    if root is None or not root.is_dir():
        return None
    room = max(free_bytes(root) - RESERVE_BYTES, 0)
    return room // 2 if _same_filesystem(root, archives_dir) else room


def batch_cap(data_root: str, archives_dir: Path) -> int:
    staging = staging_cap(data_root, archives_dir)
    return MAX_BATCH_BYTES if staging is None else min(staging, MAX_BATCH_BYTES)


def _ensure_room(batch: Batch, archives_dir: Path, data_root: str) -> None:
    twice = bool(data_root) and _same_filesystem(Path(data_root), archives_dir)
    need = room_needed(batch.estimated_bytes * (2 if twice else 1))
    free = free_bytes(archives_dir)
    if free < need:
        where = " (it also holds the engine's staging copy)" if twice else ""
        raise DiskFullError(
            f"{batch.name} needs about {need} bytes in {archives_dir}{where}, "
            f"only {free} are free",
            "free space there or put the state dir on a bigger filesystem (--state-dir), "
            "then run the same command again: archives already written are kept",
        )


def _ref_map(batch: Batch, inventory: Inventory) -> tuple[dict[str, str], list[str]]:
    if batch.kind is BatchKind.DANGLING:
        return {}, list(batch.image_ids)
    wanted = set(batch.image_ids)
    refs = {tag: i.id for i in inventory.images if i.id in wanted for tag in i.tags}
    return refs, []


def _entry(path: Path, batch: Batch, inventory: Inventory, size: int, digest: str) -> ArchiveEntry:
    refs, dangling = _ref_map(batch, inventory)
    images = expected_images(read_archive_index(path), refs, dangling, path.name)
    return ArchiveEntry(
        file=path.name, kind=batch.kind, refs=batch.refs, image_ids=batch.image_ids,
        bytes=size, sha256=digest, images=images, config_digests_verified=True,
        written_at=datetime.now(UTC),
    )


def _adopt(path: Path, batch: Batch, inventory: Inventory) -> ArchiveEntry | None:
    """A complete archive renamed into place just before a crash, but not yet listed."""
    if not path.is_file():
        return None
    try:
        return _entry(path, batch, inventory, path.stat().st_size, sha256_file(path))
    except ArchiveError:
        path.unlink(missing_ok=True)
        return None


def _stream_to(path: Path, chunks: Iterator[bytes], bar: ByteProgress) -> tuple[int, str]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        writer = HashingWriter(handle)
        flushed = 0
        for chunk in chunks:
            writer.write(chunk)
            bar.advance(len(chunk))
            if writer.bytes_written - flushed >= WRITEBACK_STEP:
                # Disk writes overlap the download, instead of all waiting for the fsync.
                handle.flush()
                start_writeback(handle.fileno(), flushed, writer.bytes_written - flushed)
                flushed = writer.bytes_written
        handle.flush()
        os.fsync(handle.fileno())
    return writer.bytes_written, writer.hexdigest()


@contextlib.contextmanager
def closing_stream(chunks: Iterator[bytes]) -> Iterator[Iterator[bytes]]:
    # Closing the generator early releases the daemon's HTTP response on failure or ^C.
    try:
        yield chunks
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def save_batch(engine: Engine, batch: Batch, archives_dir: Path, bar: ByteProgress) -> tuple[
        Path, int, str]:
    """Stream `docker save` into `<name>.partial`, then publish it under its final name.

    On any failure, ^C included, the partial file goes away; finished archives stay.
    """
    final = archives_dir / batch.name
    partial = archives_dir / f"{batch.name}{PARTIAL_SUFFIX}"
    try:
        with disk_full_guard(archives_dir, f"saving {batch.name}"), \
                closing_stream(engine.save(list(batch.refs))) as chunks:
            size, digest = _stream_to(partial, chunks, bar)
            os.replace(partial, final)
            fsync_dir(archives_dir)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final, size, digest


def _record(sink: ArchiveSink, manifest: ArchiveManifest, entry: ArchiveEntry,
            reused: bool) -> ArchiveManifest:
    manifest = manifest.with_entry(entry)
    sink.write_manifest(manifest)
    sink.checkpoint({"archive": entry.file, "sha256": entry.sha256, "bytes": entry.bytes,
                     "refs": len(entry.refs), "reused": reused})
    if not reused:
        failpoints.hit("export:archive-written")
    return manifest


def write_batches(sink: ArchiveSink, engine: Engine, inventory: Inventory,
                  manifest: ArchiveManifest, batches: tuple[Batch, ...], bar: ByteProgress,
                  phase: str = "export") -> tuple[ArchiveManifest, list[str], list[str], int]:
    """Save each batch into its archive and list it in the manifest, one checkpoint each.

    Returns the manifest, the archives written, those adopted (complete but unlisted after
    a crash) and the bytes written.
    """
    written: list[str] = []
    adopted_files: list[str] = []
    bytes_written = 0
    archives_dir = sink.archives_dir
    data_root = inventory.engine.data_root
    for batch in batches:
        final = archives_dir / batch.name
        adopted = _adopt(final, batch, inventory)
        if adopted is not None:
            manifest = _record(sink, manifest, adopted, reused=True)
            adopted_files.append(adopted.file)
            bar.advance(batch.estimated_bytes)
            continue
        if batch.oversize:
            log.warning("image larger than the batch cap, saved alone", phase=phase,
                        archive=batch.name, bytes=batch.estimated_bytes)
        _ensure_room(batch, archives_dir, data_root)
        bar.describe(f"{phase} {batch.name} ({len(batch.refs)} refs)")
        started = time.monotonic()
        path, size, digest = save_batch(engine, batch, archives_dir, bar)
        try:
            entry = _entry(path, batch, inventory, size, digest)
        except ArchiveError:
            path.unlink(missing_ok=True)  # never leave an unproven archive
            raise
        manifest = _record(sink, manifest, entry, reused=False)
        written.append(entry.file)
        bytes_written += size
        log.info("archive written", phase=phase, archive=entry.file, refs=len(entry.refs),
                 bytes=size, duration=round(time.monotonic() - started, 2))
    return manifest, written, adopted_files, bytes_written
