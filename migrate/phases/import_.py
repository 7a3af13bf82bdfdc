"""Phase "import": `docker load` the export archives into the containerd image store.

Every archive is checksummed before any image is created, so a damaged file stops the phase
before it half-fills the store. The largest archive is not read twice: it is hashed while
it streams into `docker load`, and its last bytes are sent only once the whole file matched
its export record (see `_verified_chunks`). Archives whose images are all present already
(a resumed run, or pre-staged content) are skipped. The journal keeps exactly which images
this phase brought in, so `rollback --purge-imported` removes those and nothing else.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from migrate.archives.manifest import ArchiveEntry, archive_is_intact, read_manifest
from migrate.archives.saved_tar import ArchiveError, ExpectedImage, qualified_name
from migrate.engine.client import Engine
from migrate.errors import EngineError, MigrateError, StateError
from migrate.host.fs import CHUNK_SIZE
from migrate.models import Store, is_commit_ref
from migrate.phases.base import Phase, PhaseContext, PhaseOutcome, UndoContext, UndoReport
from migrate.phases.records import RecordModel, counted, sized, summarised
from migrate.support import failpoints
from migrate.support.logconfig import get_logger
from migrate.support.progress import ByteProgress, byte_bar

log = get_logger(__name__)

# Tail of the streamed-and-verified archive kept back until its sha256 matched: much more
# than index.json + manifest.json + the tar's end blocks, which `docker save` writes last.
HELD_BACK_BYTES = 8 * 1024 * 1024

RERUN_HINT = ("run `containerd-migrate rollback`, then `containerd-migrate export` to write "
              "the archives again, and migrate again")


class ImportedImage(RecordModel):
    """An image the import phase brought into the containerd store, under its new ID."""

    id: str
    legacy_id: str = ""
    refs: tuple[str, ...] = ()

    @property
    def commit(self) -> bool:
        """A commit image (`--containers recreate`): it serves only this migration."""
        return any(is_commit_ref(ref) for ref in self.refs)


class ImportIntent(RecordModel):
    # What this attempt may bring in: if it dies half-way, undo gets only this record.
    imported: tuple[ImportedImage, ...] = ()


# The undo record is the intent, once done with exactly what was brought in.
ImportUndo = ImportIntent


class ImportResult(RecordModel):
    loaded: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    imported: tuple[ImportedImage, ...] = ()
    bytes_loaded: int = 0
    dropped_earlier: tuple[str, ...] = ()

    def summary(self) -> str:
        return summarised(counted(self.loaded, "archives loaded"),
                          counted(self.skipped, "archives skipped"),
                          counted(self.imported, "images imported"),
                          sized(self.bytes_loaded, "loaded"))


def _imported(image: ExpectedImage) -> ImportedImage:
    return ImportedImage(id=image.new_id, legacy_id=image.legacy_id, refs=image.refs)


def active_archives(ctx: PhaseContext) -> list[ArchiveEntry]:
    names = ctx.records.export.archives
    if names is None:
        raise StateError("the export phase has no result in the journal: nothing to import",
                         "run `containerd-migrate run` so the export phase runs first")
    # Committed writable layers (`--containers recreate`) travel in archives of their own.
    names = (*names, *ctx.records.commit.archives)
    manifest = read_manifest(ctx.archives_dir)
    entries = [manifest.entry(str(name)) for name in names]
    missing = [str(n) for n, e in zip(names, entries, strict=True) if e is None]
    if missing:
        raise StateError(f"the archive manifest in {ctx.archives_dir} does not list "
                         f"{', '.join(missing)}", RERUN_HINT)
    return [e for e in entries if e is not None]


def image_present(engine: Engine, image: ExpectedImage) -> bool:
    """The expected new ID exists and every tag points at it."""
    if engine.raw_image(image.new_id) is None:
        return False
    for ref in image.refs:
        raw = engine.raw_image(ref)
        if raw is None or raw.get("Id") != image.new_id:
            return False
    return True


def archive_present(engine: Engine, entry: ArchiveEntry) -> bool:
    return all(image_present(engine, image) for image in entry.images)


def _file_chunks(path: Path, bar: ByteProgress) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            bar.advance(len(chunk))
            yield chunk


def _damaged(path: Path) -> ArchiveError:
    return ArchiveError(
        f"the archive {path} is missing, truncated or corrupted (its size or sha256 differs "
        "from the export record); nothing was loaded from it", RERUN_HINT)


# How `Engine.load` words what the daemon answered (an error in its load stream, or a
# refused request).
_DAEMON_SAID = ("the daemon failed to load", "the Docker daemon refused")


def load_refused(error: EngineError, path: Path) -> EngineError:
    """The daemon's refusal of an archive known to be intact: the cause is on its side."""
    if not error.message.startswith(_DAEMON_SAID):
        return error  # not the daemon's answer (e.g. the file changed while it was sent)
    if "no space left" in error.message.lower():
        hint = ("free space on the filesystem of dockerd's data root (or of the containerd "
                "it imports into), then run the same command again")
    else:
        # containerd dying under the load looks like this; the archive and the disk are fine.
        hint = (f"{path.name} is intact (it matched its export record): the daemon or its "
                "containerd failed while loading it; check the daemon log (journalctl -u "
                "docker) and that containerd runs, then run the same command again (images "
                "already loaded are skipped)")
    return EngineError(error.message, hint, exit_code=error.exit_code)


def _check_all(entries: list[ArchiveEntry], archives_dir: Path) -> None:
    with byte_bar("checking archives", sum(e.bytes for e in entries)) as bar:
        for entry in entries:
            bar.describe(f"checking {entry.file}")
            if not archive_is_intact(entry, archives_dir, bar.advance):
                raise _damaged(archives_dir / entry.file)


def _verified_chunks(path: Path, entry: ArchiveEntry, bar: ByteProgress) -> Iterator[bytes]:
    """The archive's bytes for `docker load`, checked against the export record on the way.

    Everything but the last HELD_BACK_BYTES is sent while it is hashed; the tail goes only
    once the whole file matched, else the upload is aborted. The daemon creates images only
    after the end of the tar (containerd's import reads it whole first), and `docker save`
    writes index.json and manifest.json last, inside that tail: an aborted upload leaves
    no image, only unreferenced blobs for containerd's garbage collector. This saves the
    separate read-and-hash pass (about a second per GB on a 2-core host).
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size != entry.bytes:
            raise _damaged(path)
        remaining = max(size - HELD_BACK_BYTES, 0)
        while remaining > 0:
            chunk = handle.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                raise _damaged(path)
            remaining -= len(chunk)
            digest.update(chunk)
            bar.advance(len(chunk))
            yield chunk
        tail = handle.read()
        digest.update(tail)
        if handle.tell() != entry.bytes or digest.hexdigest() != entry.sha256:
            raise _damaged(path)
    bar.advance(len(tail))
    yield tail


def _previously_imported(ctx: PhaseContext) -> list[ImportedImage]:
    return [ImportedImage.model_validate(image) for data in ctx.previous_progress
            for image in data.get("imported") or ()]


def _merge(*groups: Iterable[ImportedImage]) -> tuple[ImportedImage, ...]:
    # One image can come from two archives (a tag added after a reused export): keep the
    # refs of both, or `rollback --purge-imported` would leave one of its tags behind.
    merged: dict[str, ImportedImage] = {}
    for group in groups:
        for image in group:
            seen = merged.get(image.id)
            if seen is None:
                merged[image.id] = image
            else:
                refs = tuple(sorted({*seen.refs, *image.refs}))
                merged[image.id] = seen.model_copy(update={"refs": refs})
    return tuple(merged[key] for key in sorted(merged))


def _require_containerd(engine: Engine) -> None:
    store = engine.info().store
    if store is not Store.CONTAINERD:
        raise StateError(f"the daemon runs on the {store} image store; loading now would put "
                         "the images in the wrong store",
                         "run `containerd-migrate run` so the switch and restart happen")


def drop_earlier_images(engine: Engine, ctx: PhaseContext) -> list[str]:
    """A migration moves its own snapshot, nothing more: names an earlier, rolled-back
    migration put into the containerd store for a tag the legacy store no longer has (deleted
    since) would otherwise come back. Only names still pointing where that migration left
    them are removed; the legacy store is not touched."""
    wanted = {qualified_name(tag) for tag in ctx.load_inventory().tags}
    dropped = []
    for image in ctx.earlier_tool_images:
        if image.dangling or "@" in image.name or qualified_name(image.name) in wanted:
            continue  # untagged (by digest) names carry nothing a tag could bring back
        raw = engine.raw_image(image.name)
        if raw is None or raw.get("Id") != image.digest:
            continue  # gone already, or someone's own image by now
        engine.remove_image(image.name)
        dropped.append(image.name)
    if dropped:
        log.info("names of earlier migrations dropped", phase="import", names=dropped)
    return dropped


class ImportPhase(Phase[ImportIntent, ImportUndo, ImportResult]):
    name = "import"
    undo_model = ImportUndo
    result_model = ImportResult

    def intent(self, ctx: PhaseContext) -> ImportIntent:
        with ctx.connect() as engine:
            todo = [image for entry in active_archives(ctx) for image in entry.images
                    if not image_present(engine, image)]
        return ImportIntent(imported=_merge(_previously_imported(ctx),
                                            [_imported(i) for i in todo]))

    def run(self, ctx: PhaseContext) -> PhaseOutcome[ImportUndo, ImportResult]:
        entries = active_archives(ctx)
        imported: list[ImportedImage] = []
        with ctx.connect() as engine:
            _require_containerd(engine)
            todo = [e for e in entries if not archive_present(engine, e)]
            skipped = [e.file for e in entries if e not in todo]
            # The others are all checked before the streamed one's upload can complete.
            streamed = max(todo, key=lambda e: e.bytes, default=None)
            _check_all([e for e in todo if e is not streamed], ctx.archives_dir)
            order = [e for e in todo if e is streamed] + [e for e in todo if e is not streamed]
            with byte_bar("import", sum(e.bytes for e in todo)) as bar:
                for entry in order:
                    imported += self._load(ctx, engine, entry, bar, verify=entry is streamed)
            dropped = drop_earlier_images(engine, ctx)
        everything = _merge(_previously_imported(ctx), imported)
        return PhaseOutcome(
            ImportUndo(imported=everything),
            ImportResult(loaded=tuple(e.file for e in todo), skipped=tuple(skipped),
                         imported=everything, bytes_loaded=sum(e.bytes for e in todo),
                         dropped_earlier=tuple(dropped)))

    def _load(self, ctx: PhaseContext, engine: Engine, entry: ArchiveEntry,
              bar: ByteProgress, verify: bool = False) -> list[ImportedImage]:
        bar.describe(f"import {entry.file}")
        started = time.monotonic()
        path = ctx.archives_dir / entry.file
        if not verify:
            try:
                said = engine.load(_file_chunks(path, bar), entry.bytes)
            except EngineError as error:
                raise load_refused(error, path) from error  # checked intact before
        else:
            if not path.is_file() or path.stat().st_size != entry.bytes:
                raise _damaged(path)
            try:
                said = engine.load(_verified_chunks(path, entry, bar), entry.bytes)
            except ArchiveError:
                raise
            except MigrateError as error:
                # The daemon may reject damaged content (a blob digest) before we do.
                if not archive_is_intact(entry, ctx.archives_dir):
                    raise _damaged(path) from error
                if isinstance(error, EngineError):
                    raise load_refused(error, path) from error
                raise
        missing = [i for i in entry.images if not image_present(engine, i)]
        if missing:
            raise EngineError(
                f"after loading {entry.file} the store lacks "
                + ", ".join(f"{i.refs or i.legacy_id} as {i.new_id}" for i in missing[:5])
                + f" (the daemon said it loaded: {', '.join(said) or 'nothing'})",
                "check the daemon log; then run the same command again",
            )
        images = [_imported(image) for image in entry.images]
        ctx.checkpoint({"archive": entry.file, "imported": [i.to_json() for i in images]})
        failpoints.hit("import:archive-loaded")
        log.info("archive loaded", phase=self.name, archive=entry.file, refs=len(entry.refs),
                 bytes=entry.bytes, duration=round(time.monotonic() - started, 2))
        return images

    def undo(self, ctx: UndoContext, record: ImportUndo) -> UndoReport:
        images = record.imported
        # Commit images (`--containers recreate`) serve only this migration: always removed.
        commits = [i for i in images if i.commit]
        if not ctx.purge_imported:
            kept = [i for i in images if not i.commit]
            purged = self._purge_commits(ctx, commits) if commits else UndoReport()
            return purged + UndoReport.done(
                f"import: kept {len(kept)} imported image(s) in the containerd store; the next "
                "forward run reuses them (`containerd-migrate cleanup` removes them)")
        ours = {i.id for i in commits}
        earlier = [ImportedImage.model_validate(i) for i in ctx.earlier_imports]
        rest = [i for i in _merge(images, earlier) if i.id not in ours]
        purged = self._purge_commits(ctx, commits) if commits else UndoReport()
        return purged + (self._purge_all(ctx, rest) if rest or not commits else UndoReport())

    def _purge_commits(self, ctx: UndoContext, commits: list[ImportedImage]) -> UndoReport:
        # A commit image lives in both stores: the commit phase's undo names each one when it
        # removes the legacy copy, so a clean removal here is one line, not a second listing.
        report = self._purge_all(ctx, commits)
        if report.ok and all(line.startswith("import: removed") for line in report.did):
            return UndoReport.done(f"import: removed the {len(commits)} commit image(s) from "
                                   "the containerd store")
        return report

    def _purge_all(self, ctx: UndoContext, images: list[ImportedImage]) -> UndoReport:
        if not images:
            return UndoReport.done("import: no imported images to remove")
        try:
            with ctx.connect() as engine:
                if engine.info().store is not Store.CONTAINERD:
                    # By name, a legacy-mode removal would delete the ORIGINAL images.
                    return UndoReport.failure(
                        "import: the daemon is not on the containerd store; the imported "
                        "images were not removed (`containerd-migrate cleanup` removes them "
                        "once the rollback is done)")
                report = UndoReport()
                for image in images:
                    report += _purge(engine, image)
                return report
        except MigrateError as error:
            return UndoReport.failure(f"import: could not remove the imported images: "
                                      f"{error.message}")


def _purge(engine: Engine, image: ImportedImage) -> UndoReport:
    new_id = image.id
    lines: list[str] = []
    try:
        for ref in image.refs:
            raw = engine.raw_image(ref)
            if raw is not None and raw.get("Id") == new_id:
                engine.remove_image(ref)
                lines.append(f"import: removed {ref} ({new_id[:19]})")
        raw = engine.raw_image(new_id)
        others = [t for t in (raw or {}).get("RepoTags") or () if t and "<none>" not in t]
        if raw is not None and others:
            # Tagged since the import by someone else: removing by ID would take their tags.
            lines.append(f"import: kept {new_id[:19]}, now also tagged {', '.join(others)}")
        elif raw is not None:
            engine.remove_image(new_id)
            lines.append(f"import: removed image {new_id[:19]}")
    except MigrateError as error:
        return UndoReport.failure(f"import: could not remove {new_id[:19]}: {error.message}",
                                  *lines)
    return UndoReport.done(*lines)


PHASE = ImportPhase()
