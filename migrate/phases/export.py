"""Phase "export": `docker save` every image into checksummed archives, while still legacy.

Archives are streamed to `<name>.partial` and renamed only once complete and fsynced, so a
file with a final name is always whole. Names are content-derived: a resumed run, or a
later run after a pre-staging export, recognises intact archives and writes only images
that are new or changed since.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from migrate.archives.batching import Batch, BatchKind, plan_batches
from migrate.archives.manifest import (
    PARTIAL_SUFFIX,
    ArchiveEntry,
    ArchiveManifest,
    covered_image_ids,
    prune_unlisted,
    read_manifest,
    remove_partials,
    reusable_archives,
)
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
from migrate.phases.base import (
    Phase,
    PhaseContext,
    PhaseOutcome,
    UndoContext,
    UndoReport,
)
from migrate.phases.records import ExportResult, RecordModel
from migrate.preflight.estimate import RESERVE_BYTES, room_needed
from migrate.support import failpoints
from migrate.support.logconfig import get_logger
from migrate.support.progress import ByteProgress, byte_bar

log = get_logger(__name__)

# Legacy save answers only after staging the whole batch, and cd-mode load only after
# ingesting it; the engine's read timeout (120 s) runs meanwhile. Measured ~330 MB/s
# staging, so 8 GiB keeps even slow disks inside it and resume granularity useful.
MAX_BATCH_BYTES = 8 * 1024 * 1024 * 1024
# Start the writeback of an archive being written every this many bytes.
WRITEBACK_STEP = 8 * 1024 * 1024


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


def _record(ctx: PhaseContext, manifest: ArchiveManifest, entry: ArchiveEntry,
            reused: bool) -> ArchiveManifest:
    manifest = manifest.with_entry(entry)
    ctx.write_manifest(manifest)
    ctx.checkpoint({"archive": entry.file, "sha256": entry.sha256, "bytes": entry.bytes,
                    "refs": len(entry.refs), "reused": reused})
    if not reused:
        failpoints.hit("export:archive-written")
    return manifest


def write_batches(ctx: PhaseContext, engine: Engine, inventory: Inventory,
                  manifest: ArchiveManifest, batches: tuple[Batch, ...], bar: ByteProgress,
                  phase: str = "export") -> tuple[ArchiveManifest, list[str], list[str], int]:
    """Save each batch into its archive and list it in the manifest, one checkpoint each.

    Returns the manifest, the archives written, those adopted (complete but unlisted after
    a crash) and the bytes written.
    """
    written: list[str] = []
    adopted_files: list[str] = []
    bytes_written = 0
    archives_dir = ctx.archives_dir
    data_root = inventory.engine.data_root
    for batch in batches:
        final = archives_dir / batch.name
        adopted = _adopt(final, batch, inventory)
        if adopted is not None:
            manifest = _record(ctx, manifest, adopted, reused=True)
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
        manifest = _record(ctx, manifest, entry, reused=False)
        written.append(entry.file)
        bytes_written += size
        log.info("archive written", phase=phase, archive=entry.file, refs=len(entry.refs),
                 bytes=size, duration=round(time.monotonic() - started, 2))
    return manifest, written, adopted_files, bytes_written


class ExportIntent(RecordModel):
    archives_dir: str | None = None


# The undo record is the intent: where the archives are (kept, unfinished ones removed).
ExportUndo = ExportIntent


class ExportPhase(Phase[ExportIntent, ExportUndo, ExportResult]):
    name = "export"
    undo_model = ExportUndo

    def intent(self, ctx: PhaseContext) -> ExportIntent:
        return ExportIntent(archives_dir=str(ctx.archives_dir))

    def run(self, ctx: PhaseContext) -> PhaseOutcome[ExportUndo, ExportResult]:
        inventory = ctx.load_inventory()
        archives_dir = ctx.archives_dir
        archives_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_partials(archives_dir)
        manifest = reusable_archives(read_manifest(archives_dir), inventory, archives_dir)
        ctx.write_manifest(manifest)
        reused = [entry.file for entry in manifest.archives]
        cap = batch_cap(inventory.engine.data_root, archives_dir)
        # Images staged into the containerd store need no archive (see phases/stage.py).
        staged = {image.legacy_id for image in ctx.records.stage.expected}
        covered = covered_image_ids(manifest.archives, inventory) | staged
        batches = plan_batches(inventory.images, covered, cap)
        total = sum(b.estimated_bytes for b in batches)
        log.info("export planned", phase=self.name, batches=len(batches), reused=len(reused),
                 estimated_bytes=total, staging_cap=cap)
        with ctx.connect() as engine, byte_bar("export", total) as bar:
            manifest, written, adopted, bytes_written = write_batches(
                ctx, engine, inventory, manifest, batches, bar, self.name)
        reused += adopted
        prune_unlisted(archives_dir, manifest)
        return PhaseOutcome(ExportUndo(archives_dir=str(archives_dir)), ExportResult(
            archives=tuple(entry.file for entry in manifest.archives),
            written=tuple(written),
            reused=tuple(reused),
            bytes_written=bytes_written,
            images=len(inventory.images),
            staged=len(staged),
            oversize=tuple(b.name for b in batches if b.oversize),
        ))

    def undo(self, ctx: UndoContext, record: ExportUndo) -> UndoReport:
        lines = []
        folder = Path(record.archives_dir) if record.archives_dir else None
        if folder is not None and folder.is_dir():
            removed = remove_partials(folder)
            lines += [f"export: removed the unfinished archive {name}" for name in removed]
        # Said only when true: a `cleanup` may have deleted them since.
        if folder is not None and folder.is_dir() and any(
                (folder / entry.file).is_file() for entry in read_manifest(folder).archives):
            lines.append("export: nothing to reverse on the host; the archives are kept for "
                         "the next run (`containerd-migrate cleanup` deletes them)")
        else:
            lines.append("export: nothing to reverse on the host")
        return UndoReport.done(*lines)


PHASE = ExportPhase()
