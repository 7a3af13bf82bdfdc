"""Phase "commit": keep changed writable layers by committing them to images (recreate only).

A container recreated in the containerd store starts from its image: whatever it added,
changed or deleted in its writable layer would be lost. So, with `--containers recreate`,
every container whose `docker diff` is not empty is committed, once stopped (after quiesce:
nothing changes any more), to `containerd-migrate/commit:<container id>`, a repository no
user tag uses, and that image is saved into an archive listed in the same manifest as the
others, so import loads it and proves its new ID like any other image. Recreate then
creates the container from it with the container's own recorded config (the commit's image
config does not matter).
"""

from __future__ import annotations

from migrate.archives.batching import plan_batches
from migrate.archives.manifest import covered_image_ids, read_manifest
from migrate.archives.writing import batch_cap, write_batches
from migrate.engine import Engine
from migrate.errors import MigrateError, StateError
from migrate.models import (
    COMMIT_REPOSITORY,
    ContainerRecord,
    ImageRecord,
    Inventory,
    Store,
    commit_ref,
)
from migrate.phases.base import Phase, PhaseContext, PhaseOutcome, UndoContext, UndoReport
from migrate.phases.records import (
    CommitEntry,
    CommitResult,
    CommittedEntry,
    CommitUndo,
    RecordModel,
)
from migrate.preflight.containers import commits_layer
from migrate.support import failpoints
from migrate.support.logconfig import get_logger
from migrate.support.progress import byte_bar

log = get_logger(__name__)

def to_commit(inventory: Inventory) -> list[ContainerRecord]:
    return [c for c in inventory.containers if commits_layer(c)]


class CommitIntent(RecordModel):
    policy: str | None = None
    # What this attempt may commit: the undo of a half-done attempt removes these.
    commits: tuple[CommitEntry, ...] = ()


def _entry(container: ContainerRecord) -> CommitEntry:
    return CommitEntry(container=container.id, name=container.name,
                       ref=commit_ref(container.id))


def _require_legacy(engine: Engine) -> None:
    if engine.info().store is not Store.LEGACY:
        raise StateError("the commit phase needs the daemon on the legacy store, where the "
                         "containers are", "roll back with `containerd-migrate rollback`")


def _committed(container: ContainerRecord, image: ImageRecord) -> CommittedEntry:
    return CommittedEntry(**_entry(container).model_dump(), image_id=image.id)


def _commit(engine: Engine, ctx: PhaseContext, container: ContainerRecord) -> ImageRecord:
    ref = commit_ref(container.id)
    image = engine.inspect_image(ref)
    if image is None:  # not yet, or a resumed run that was killed before the commit
        ctx.checkpoint({"committing": _entry(container).to_json()})
        engine.commit_container(container.id, COMMIT_REPOSITORY, container.id)
        image = engine.inspect_image(ref)
        if image is None:
            raise StateError(f"committing {container.name} reported success but {ref} is "
                             "missing", "run `containerd-migrate run` again")
        ctx.checkpoint({"committed": _committed(container, image).to_json()})
        failpoints.hit("commit:container-committed")
        log.info("writable layer committed", phase="commit", container=container.name,
                 image=image.id)
    return image


class CommitPhase(Phase[CommitIntent, CommitUndo, CommitResult]):
    name = "commit"
    undo_model = CommitUndo
    result_model = CommitResult

    def intent(self, ctx: PhaseContext) -> CommitIntent:
        policy = ctx.containers_policy
        commits = (tuple(_entry(c) for c in to_commit(ctx.load_inventory()))
                   if policy == "recreate" else ())
        return CommitIntent(policy=policy, commits=commits)

    def run(self, ctx: PhaseContext) -> PhaseOutcome[CommitUndo, CommitResult]:
        if ctx.containers_policy != "recreate":
            return PhaseOutcome(CommitUndo(), CommitResult())
        inventory = ctx.load_inventory()
        containers = to_commit(inventory)
        with ctx.connect() as engine:
            if containers:
                _require_legacy(engine)
            images = [_commit(engine, ctx, c) for c in containers]
            # The commit images alone, as an inventory: what the export machinery saves.
            commits = inventory.model_copy(update={"images": tuple(images), "containers": ()})
            manifest = read_manifest(ctx.archives_dir)
            batches = plan_batches(images, covered_image_ids(manifest.archives, commits),
                                   batch_cap(inventory.engine.data_root, ctx.archives_dir))
            with byte_bar("commit", sum(b.estimated_bytes for b in batches)) as bar:
                manifest, written, _adopted, size = write_batches(
                    ctx, engine, commits, manifest, batches, bar, self.name)
        ctx.write_manifest(manifest)
        ids = {image.id for image in images}
        archives = [a.file for a in manifest.archives if {i.legacy_id for i in a.images} & ids]
        entries = [_committed(c, i) for c, i in zip(containers, images, strict=True)]
        return PhaseOutcome(
            CommitUndo(commits=tuple(entries)),
            CommitResult(committed=tuple(c.name for c in containers), archives=tuple(archives),
                         written=tuple(written), bytes_written=size))

    def undo(self, ctx: UndoContext, record: CommitUndo) -> UndoReport:
        # The intent lists what a half-done attempt may have committed; only a tag that
        # still carries our repository and the container's ID is ours to remove.
        entries = record.commits
        if not entries:
            return UndoReport.done("commit: no writable layer was committed")
        lines: list[str] = []
        try:
            with ctx.connect() as engine:
                if engine.info().store is not Store.LEGACY:
                    return UndoReport.failure(
                        "commit: the daemon is not on the legacy store; the commit images "
                        f"({', '.join(e.ref for e in entries)}) were not removed")
                for entry in entries:
                    ref = entry.ref
                    if engine.raw_image(ref) is None:
                        continue
                    engine.remove_image(ref)
                    lines.append(f"commit: removed {ref} from the legacy store (the writable "
                                 f"layer of {entry.name}, which is intact in the "
                                 "container)")
        except MigrateError as error:
            return UndoReport.failure(f"commit: could not remove the commit images: "
                                      f"{error.message}", *lines)
        return UndoReport.done(*(lines or ["commit: no commit image left to remove"]))


PHASE = CommitPhase()
