"""Phase "export": `docker save` every image into checksummed archives, while still legacy.

Archives are streamed to `<name>.partial` and renamed only once complete and fsynced, so a
file with a final name is always whole (`archives/writing.py`). Names are content-derived:
a resumed run, or a later run after a pre-staging export, recognises intact archives and
writes only images that are new or changed since.
"""

from __future__ import annotations

from pathlib import Path

from migrate.archives.batching import plan_batches
from migrate.archives.manifest import (
    covered_image_ids,
    prune_unlisted,
    read_manifest,
    remove_partials,
    reusable_archives,
)
from migrate.archives.writing import batch_cap, write_batches
from migrate.phases.base import (
    Phase,
    PhaseContext,
    PhaseOutcome,
    UndoContext,
    UndoReport,
)
from migrate.phases.records import ExportResult, RecordModel
from migrate.support.logconfig import get_logger
from migrate.support.progress import byte_bar

log = get_logger(__name__)


class ExportIntent(RecordModel):
    archives_dir: str | None = None


# The undo record is the intent: where the archives are (kept, unfinished ones removed).
ExportUndo = ExportIntent


class ExportPhase(Phase[ExportIntent, ExportUndo, ExportResult]):
    name = "export"
    undo_model = ExportUndo
    result_model = ExportResult

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
