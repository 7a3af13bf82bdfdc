"""Phase "stage": fill the containerd store dockerd will use, while it still serves legacy.

`docker save` of a batch is streamed straight into `ctr images import` (no archive on
disk) against dockerd's containerd, in its namespace, unpacked for the snapshotter the
switch will configure, so after the switch the images are there and the first `docker
run` unpacks nothing (docs/engine-facts.md, "Pre-staging"). Untagged images are imported
alone under the name dockerd gives dangling images, `moby-dangling@<digest>`.

An image counts as staged when the store proves the same chain the export checks in an
archive: each of its tags names one manifest whose config digest is the legacy image ID
(config bytes hashed), and the snapshot of its layer chain exists. A later run stages
only what changed or appeared since, and takes out what it staged for tags that are
gone. The journal keeps the names that were in the store before the first attempt, and
every name staged with its digest, so a purge removes exactly what was staged.

A `ctr import` whose CLI was killed can outlive it: its pid is checkpointed before the
stream starts, and a resumed run waits for it to end before it reads the store.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from migrate.archives.batching import Batch, BatchKind, plan_batches
from migrate.archives.saved_tar import (
    ArchiveError,
    ArchiveIndex,
    ExpectedImage,
    IndexedImage,
    expected_images,
    qualified_name,
)
from migrate.archives.writing import batch_cap, closing_stream, room_needed
from migrate.engine.client import Engine
from migrate.engine.containerd import (
    DANGLING_PREFIX,
    Containerd,
    ContainerdError,
    chain_id,
    find_ctr,
    import_output,
    is_ctr_import,
)
from migrate.errors import DiskFullError
from migrate.host.daemon_json import read_daemon_config
from migrate.host.fs import flush_filesystem, free_bytes
from migrate.host.launch import detect_launch
from migrate.host.processes import command_line
from migrate.models import DOCKERD_CONTAINERD_NAMESPACE, ImageRecord, Inventory
from migrate.phases.base import Phase, PhaseContext, PhaseOutcome, UndoContext, UndoReport
from migrate.phases.records import (
    RecordModel,
    StagedNames,
    StageFlush,
    StageResult,
    StageTarget,
)
from migrate.preflight.facts import StagingFacts, staging_facts
from migrate.support import failpoints
from migrate.support.logconfig import get_logger
from migrate.support.progress import ByteProgress, byte_bar

log = get_logger(__name__)

# How long a resumed run waits for a `ctr import` left by a killed run before stopping it.
ORPHAN_WAIT = 120.0
ORPHAN_POLL = 0.1
# The store keeps each layer twice: its blob in the content store and its unpacked snapshot.
STORE_COPIES = 2


# The intent: where the stage phase stages, and the names the store held before.
StageIntent = StageTarget


class StageCheckpoint(RecordModel):
    """What the undo reads of a stage checkpoint: the names one batch staged."""

    names: dict[str, str] = Field(default_factory=dict)


class StageUndo(StagedNames):
    """The names this migration staged; an attempt that stopped half-way has only its
    intent and its checkpoints, which the runner hands over under `progress`."""

    # Read, never journaled: the runner adds it to the record it hands to `undo()`.
    progress: tuple[StageCheckpoint, ...] = Field(default=(), exclude=True)


def _target(ctx: PhaseContext) -> StagingFacts:
    with ctx.connect() as engine:
        info = engine.info()
        launch = detect_launch(info.pid, engine.host)
    config = read_daemon_config(ctx.options.daemon_config)
    facts = staging_facts(info, launch, config, ctx.options.snapshotter, measure=False)
    facts.client()  # raises, saying why, when staging is unavailable
    return facts


def _first(progress: Iterable[Mapping[str, Any]], key: str) -> Any:
    return next((p[key] for p in progress if key in p), None)


class StoreView:
    """What the namespace holds, read once: names, manifest -> config, snapshot keys."""

    def __init__(self, client: Containerd, snapshotter: str,
                 known: Mapping[str, tuple[str, bool]] | None = None):
        self.client = client
        self.names = client.images()
        self.snapshots = client.snapshots(snapshotter)
        # Content is addressed by digest: a manifest checked once never changes.
        self._configs: dict[str, tuple[str, bool]] = dict(known or {})

    @property
    def known(self) -> Mapping[str, tuple[str, bool]]:
        return self._configs

    def config(self, manifest: str) -> tuple[str, bool]:
        if manifest not in self._configs:
            try:
                self._configs[manifest] = self.client.manifest_config(manifest)
            except (ContainerdError, ValueError, KeyError, TypeError):
                self._configs[manifest] = ("", False)
        return self._configs[manifest]

    def index(self, names: Iterable[str]) -> ArchiveIndex:
        """The names given, as the index of an archive, for the chain check of export."""
        by_digest: dict[str, list[str]] = {}
        for name in names:
            digest = self.names.get(name)
            if digest is not None:
                by_digest.setdefault(digest, []).append(name)
        images = []
        for digest, found in sorted(by_digest.items()):
            config, verified = self.config(digest)
            tags = tuple(sorted(n for n in found if not n.startswith(DANGLING_PREFIX)))
            images.append(IndexedImage(manifest_digest=digest, config_digest=config,
                                       names=tags, repo_tags=(), config_verified=verified))
        return ArchiveIndex(images=tuple(images))

    def staged(self, image: ImageRecord) -> ExpectedImage | None:
        """The image as the store holds it, if the chain and the snapshot prove it."""
        if image.dangling:
            names = [n for n in self.names if n.startswith(DANGLING_PREFIX)]
            refs: dict[str, str] = {}
            dangling = [image.id]
        else:
            names = [qualified_name(tag) for tag in image.tags]
            refs = dict.fromkeys(image.tags, image.id)
            dangling = []
        try:
            found = expected_images(self.index(names), refs, dangling, "the containerd store")
        except ArchiveError:
            return None
        key = chain_id(image.diff_ids)
        if len(found) != 1 or (key is not None and key not in self.snapshots):
            return None
        return found[0]

    def names_of(self, expected: ExpectedImage) -> dict[str, str]:
        wanted = ({qualified_name(r) for r in expected.refs} if expected.refs
                  else {DANGLING_PREFIX + expected.new_id})
        return {n: d for n, d in self.names.items() if n in wanted}


def _wait_for_orphans(previous: Iterable[Mapping[str, Any]]) -> list[int]:
    """Let `ctr import` processes of a killed run end (bounded), then stop them."""
    pids = [int(p["pid"]) for p in previous if "pid" in p]
    alive = [pid for pid in pids if is_ctr_import(command_line(pid))]
    if alive:
        log.warning("waiting for ctr import left by an earlier run", pids=alive)
    deadline = time.monotonic() + ORPHAN_WAIT
    while alive and time.monotonic() < deadline:
        time.sleep(ORPHAN_POLL)
        alive = [pid for pid in alive if is_ctr_import(command_line(pid))]
    for pid in alive:
        # Its stream came from the killed run: what it did not finish is imported again.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return alive


def _ensure_room(data_root: str, managed: bool, batches: Iterable[Batch]) -> None:
    """Legacy save's staging copy of a batch, and (for dockerd's own containerd, whose
    root is under the data root) content + snapshots of every batch."""
    root = Path(data_root) if data_root else None
    todo = list(batches)
    if root is None or not root.is_dir() or not todo:
        return
    store = STORE_COPIES * sum(b.estimated_bytes for b in todo) if managed else 0
    need = room_needed(store + max(b.estimated_bytes for b in todo))
    free = free_bytes(root)
    if free < need:
        raise DiskFullError(
            f"staging needs about {need} bytes on the data-root filesystem ({data_root}: "
            f"the containerd store keeps each layer as a blob and as a snapshot, and "
            f"`docker save` stages a copy of each batch), only {free} are free",
            "free space there, or migrate without staging (`containerd-migrate run`); "
            "what is staged already is kept")


def _flush(data_root: str, managed: bool) -> StageFlush:
    """Write what the imports left in the page cache to disk now, before the window.

    `ctr import` does not sync the snapshots it unpacks, so gigabytes stay dirty for up to
    the kernel's writeback delay. The first container stop of the window then pays for
    them: unmounting its overlay syncs the whole filesystem under it, the data root's
    (measured: stop 0.05 s -> 1.1 s after staging 2 GiB; docs/engine-facts.md). dockerd's
    own containerd lives under the data root; another one may not: sync everything.
    """
    started = time.monotonic()
    how = "sync"
    if managed and data_root and Path(data_root).is_dir():
        try:
            how = flush_filesystem(data_root)
        except OSError:
            os.sync()  # e.g. the data root cannot be opened here: the slower, wider flush
    else:
        os.sync()
    return StageFlush(how=how, seconds=round(time.monotonic() - started, 2))


def stream_batch(engine: Engine, client: Containerd, snapshotter: str, local_import: bool,
                 batch: Batch, bar: ByteProgress, started: Callable[[int], None]) -> int:
    """`docker save` of the batch into a `ctr images import` child; returns bytes sent.

    `started` gets the child's pid before the stream begins, so whoever runs this can
    record it: a child outlives a CLI killed under it (stage's journal, rehearse's record).
    """
    with import_output() as output:
        child = client.start_import(snapshotter, dangling=batch.kind is BatchKind.DANGLING,
                                    local=local_import, output=output)
        started(child.pid)
        sent = 0
        assert child.stdin is not None
        try:
            with closing_stream(engine.save(list(batch.refs))) as chunks:
                for chunk in chunks:
                    child.stdin.write(chunk)
                    sent += len(chunk)
                    bar.advance(len(chunk))
                    failpoints.hit("stage:streaming")
            child.stdin.close()
            code = child.wait()
        except BrokenPipeError:
            code = child.wait()
        except BaseException:
            child.kill()
            child.wait()
            raise
        if code != 0:
            output.seek(0)
            said = output.read().decode(errors="replace").strip().splitlines()[-1:]
            raise ContainerdError(
                f"`ctr images import` of {batch.name} ({len(batch.refs)} ref(s)) exited "
                f"{code}: {said[0] if said else 'no output'}",
                "check containerd's log and the free space of its root; then run the same "
                "command again (what is staged already is kept)")
    return sent


def _journal_import(ctx: PhaseContext, batch: Batch) -> Callable[[int], None]:
    """Checkpoint a started `ctr import`'s pid: a resumed run waits for it to end."""
    def checkpoint(pid: int) -> None:
        ctx.checkpoint({"importing": batch.name, "pid": pid, "refs": len(batch.refs)})
    return checkpoint


class StagePhase(Phase[StageIntent, StageUndo, StageResult]):
    name = "stage"
    undo_model = StageUndo
    result_model = StageResult

    def intent(self, ctx: PhaseContext) -> StageIntent:
        facts = _target(ctx)
        before = _first(ctx.previous_progress, "before")
        if before is None:
            before = sorted(facts.client().images())
        return _where(facts, before)

    def run(self, ctx: PhaseContext) -> PhaseOutcome[StageUndo, StageResult]:
        inventory = ctx.load_inventory()
        orphans = _wait_for_orphans(ctx.previous_progress)
        facts = _target(ctx)
        client = facts.client()
        before: list[str] | None = _first(ctx.previous_progress, "before")
        usage_before: int | None = _first(ctx.previous_progress, "usage_before")
        if before is None or usage_before is None:
            before = sorted(client.images())
            usage_before = sum(client.usage_bytes(facts.snapshotter))
            ctx.checkpoint({"before": before, "usage_before": usage_before})
        ours = _staged_names(ctx.previous_progress, before)
        view = StoreView(client, facts.snapshotter, _known_configs(ctx.previous_progress))
        present = {i.id: e for i in inventory.images if (e := view.staged(i)) is not None}
        data_root = inventory.engine.data_root
        cap = batch_cap(data_root, Path(data_root)) if data_root else None
        batches = plan_batches(inventory.images, set(present), cap)
        _ensure_room(data_root, facts.managed, batches)
        total = sum(b.estimated_bytes for b in batches)
        log.info("staging planned", phase=self.name, batches=len(batches),
                 already=len(present), estimated_bytes=total, orphans_stopped=len(orphans))
        sent_now = 0
        with ctx.connect() as engine, byte_bar("stage", total) as bar:
            for batch in batches:
                bar.describe(f"stage {batch.name} ({len(batch.refs)} refs)")
                started = time.monotonic()
                sent = stream_batch(engine, client, facts.snapshotter, facts.local_import,
                                    batch, bar, _journal_import(ctx, batch))
                sent_now += sent
                view = StoreView(client, facts.snapshotter, view.known)
                staged = self._prove(view, inventory, batch)
                names = {n: d for e in staged for n, d in view.names_of(e).items()}
                ours.update({n: d for n, d in names.items() if n not in before})
                present.update({e.legacy_id: e for e in staged})
                ctx.checkpoint({"staged": batch.name, "bytes": sent, "names": names,
                                "images": [e.model_dump(mode="json") for e in staged],
                                "configs": {e.new_id: e.legacy_id for e in staged}})
                failpoints.hit("stage:batch-staged")
                log.info("batch staged", phase=self.name, batch=batch.name,
                         refs=len(batch.refs), bytes=sent,
                         duration=round(time.monotonic() - started, 2))
        unstaged = self._remove_stale(client, view, present.values(), ours)
        flushed = _flush(data_root, facts.managed)
        log.info("staged data flushed to disk", phase=self.name, **flushed.to_json())
        usage_after = sum(client.usage_bytes(facts.snapshotter))
        previous_bytes = sum(int(p.get("bytes", 0)) for p in ctx.previous_progress
                             if "staged" in p)
        record = StageUndo(**_where(facts, before).model_dump(), names=ours)
        return PhaseOutcome(record, StageResult(
            **record.model_dump(),
            expected=tuple(sorted(present.values(), key=lambda e: e.legacy_id)),
            staged=len(present),
            staged_now=sum(len(b.image_ids) for b in batches),
            batches_now=len(batches),
            bytes_streamed=previous_bytes + sent_now,
            bytes_streamed_now=sent_now,
            unstaged=tuple(unstaged),
            disk_bytes=max(usage_after - usage_before, 0),
            flushed=flushed,
        ))

    def _prove(self, view: StoreView, inventory: Inventory, batch: Batch) -> list[ExpectedImage]:
        wanted = [i for i in inventory.images if i.id in set(batch.image_ids)]
        staged = [(image, view.staged(image)) for image in wanted]
        missing = [image for image, found in staged if found is None]
        if missing:
            raise ContainerdError(
                f"after importing {batch.name} the containerd store does not prove "
                + ", ".join(", ".join(i.tags) or i.id for i in missing[:5])
                + " (name, config digest or unpacked snapshot missing)",
                "check containerd's log; then run the same command again")
        return [found for _, found in staged if found is not None]

    def _remove_stale(self, client: Containerd, view: StoreView,
                      present: Iterable[ExpectedImage], ours: dict[str, str]) -> list[str]:
        """Names this migration staged for tags or images that are gone since."""
        wanted = {n for e in present for n in view.names_of(e)}
        stale = [n for n, d in ours.items() if n not in wanted and view.names.get(n) == d]
        client.remove_images(stale)
        for name in stale:
            ours.pop(name)
        # Names that no longer point at what we staged are someone else's now.
        for name in [n for n, d in ours.items() if view.names.get(n) != d]:
            ours.pop(name)
        return stale

    def undo(self, ctx: UndoContext, record: StageUndo) -> UndoReport:
        names = _record_names(record)
        if not ctx.purge_imported:
            return UndoReport.done(
                f"stage: kept {len(names)} staged image name(s) in the containerd store at "
                f"{record.address} (`containerd-migrate cleanup` removes them)")
        return purge_staged(record)


def _where(facts: StagingFacts, before: Iterable[str]) -> StageTarget:
    return StageTarget(ctr=facts.ctr, address=facts.address, namespace=facts.namespace,
                       snapshotter=facts.snapshotter, before=tuple(before))


def _staged_names(progress: Iterable[Mapping[str, Any]], before: Iterable[str]) -> dict[str, str]:
    skip = set(before)
    names: dict[str, str] = {}
    for item in progress:
        for name, digest in (item.get("names") or {}).items():
            if name not in skip:
                names[str(name)] = str(digest)
    return names


def _known_configs(progress: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, bool]]:
    return {str(m): (str(c), True) for p in progress for m, c in (p.get("configs") or {}).items()}


def _record_names(record: StageUndo) -> dict[str, str]:
    """Every name staged by this migration, from a done record or an attempt's progress."""
    before = set(record.before)
    names = {n: d for checkpoint in record.progress for n, d in checkpoint.names.items()
             if n not in before}
    names.update({n: d for n, d in record.names.items() if n not in before})
    return names


def purge_staged(record: StageUndo) -> UndoReport:
    """Remove the names this migration staged (and only those still pointing at what was
    staged); containerd's garbage collector then frees content and snapshots no other
    image uses. Works from the journal record alone."""
    names = _record_names(record)
    if not names:
        return UndoReport.done("stage: nothing staged to remove")
    address = record.address or ""
    ctr = Path(record.ctr) if record.ctr else None
    if ctr is None or not ctr.is_file():
        ctr = find_ctr(None)
    if ctr is None or not address:
        return UndoReport.failure("stage: could not remove the staged images: no `ctr` to "
                                  "reach containerd")
    client = Containerd(ctr, address, record.namespace or DOCKERD_CONTAINERD_NAMESPACE)
    try:
        current = client.images()
        gone = sorted(n for n, d in names.items() if current.get(n) == d)
        client.remove_images(gone)
    except ContainerdError as error:
        return UndoReport.failure(f"stage: could not remove the staged images: "
                                  f"{error.message}")
    kept = sorted(set(names) - set(gone))
    lines = [f"stage: removed {len(gone)} staged image name(s) from the containerd store"]
    if kept:
        lines.append(f"stage: kept {len(kept)} name(s) changed since staging: "
                     + ", ".join(kept[:5]))
    return UndoReport.done(*lines)


PHASE = StagePhase()
