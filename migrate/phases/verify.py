"""Phase "verify": prove every snapshotted image arrived unchanged in the containerd store.

Identity is proven by the chain checked at export (legacy ID = config digest of the OCI
manifest whose digest is the new ID) plus the diff_ids; never by Size or by comparing IDs
across stores, which legitimately differ. A throw-away container create catches a store
that loads images but cannot run them (`snapshotter not loaded: overlay2`). Then the
capability the store was migrated for is checked on its own (`platform_check`): its
failure is reported, and fails neither the verification nor the migration.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from migrate.archives.manifest import ArchiveManifest, read_manifest
from migrate.archives.saved_tar import ExpectedImage
from migrate.engine.client import Engine
from migrate.errors import MigrateError, VerificationFailed
from migrate.journal.state_dir import StateDir
from migrate.models import EngineInfo, Frozen, ImageRecord, Inventory, Store
from migrate.phases.base import (
    JSONDict,
    Phase,
    PhaseContext,
    PhaseOutcome,
    UndoContext,
    UndoReport,
    moved_image_ids,
)
from migrate.phases.platform_check import (
    PlatformCheck,
    check_multi_platform,
    multi_platform_status,
    remove_probe,
    report_check,
)
from migrate.phases.records import RecordModel, VerifyResult
from migrate.phases.volume_guard import create_guard, remove_guard
from migrate.support.logconfig import get_logger
from migrate.support.pool import Workers

log = get_logger(__name__)

VERIFY_LABEL = "io.containerd-migrate.verify"
SHOWN_PROBLEMS = 5


class ImageCheck(Frozen):
    legacy_id: str
    new_id: str | None
    tags: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


class VerificationReport(Frozen):
    checked_at: datetime
    store: str
    images: tuple[ImageCheck, ...]
    # Problems that are not about one image: wrong store, containers cannot be created.
    problems: tuple[str, ...] = ()
    container_image: str = ""
    # Apart from `ok` on purpose: it says what the store can do, not whether images moved.
    multi_platform: PlatformCheck | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and all(check.ok for check in self.images)

    def all_problems(self) -> list[str]:
        per_image = [
            f"{', '.join(c.tags) or c.legacy_id}: {p}" for c in self.images for p in c.problems
        ]
        return [*self.problems, *per_image]

    def id_map(self) -> dict[str, JSONDict]:
        return {c.legacy_id: {"new_id": c.new_id, "tags": list(c.tags)} for c in self.images}


def _same_instant(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        # Stores may print different sub-second precision for the same instant.
        return datetime.fromisoformat(a[:26].rstrip("Z")) == datetime.fromisoformat(
            b[:26].rstrip("Z"))
    except ValueError:
        return False


def compare(old: ImageRecord, new: ImageRecord) -> list[str]:
    """What differs between the snapshot record and the live image (Size and ID excluded)."""
    problems = []
    if old.diff_ids != new.diff_ids:
        problems.append(f"layers differ ({len(old.diff_ids)} before, {len(new.diff_ids)} now)")
    if old.config != new.config:
        problems.append("image config (env, cmd, entrypoint, labels, ...) differs")
    if (old.os, old.architecture, old.variant) != (new.os, new.architecture, new.variant):
        problems.append(f"platform {old.os}/{old.architecture} became {new.os}/{new.architecture}")
    if not _same_instant(old.created, new.created):
        problems.append(f"created {old.created} became {new.created}")
    return problems


def _inspect(engine: Engine, ref: str, problems: list[str]) -> ImageRecord | None:
    try:
        return engine.inspect_image(ref, sizes=False)
    except MigrateError as error:
        # Reported per image, so one unreadable image does not hide the others' results.
        problems.append(f"cannot inspect {ref}: {error.message}")
        return None


def check_image(engine: Engine, old: ImageRecord, new_id: str | None) -> ImageCheck:
    problems: list[str] = []
    if new_id is None:
        problems.append("no export archive holds this image")
    elif old.dangling:
        live = _inspect(engine, new_id, problems)
        if live is None:
            problems.append(f"missing: no image {new_id}")
        elif live.diff_ids != old.diff_ids:
            problems.append("layers differ")
    else:
        for tag in old.tags:
            live = _inspect(engine, tag, problems)
            if live is None:
                problems.append(f"{tag} is missing")
            elif live.id != new_id:
                problems.append(f"{tag} is {live.id}, expected {new_id}")
            else:
                problems += [f"{tag}: {problem}" for problem in compare(old, live)]
    return ImageCheck(legacy_id=old.id, new_id=new_id, tags=old.tags, problems=tuple(problems))


def _container_image(inventory: Inventory, expected: dict[str, str]) -> str:
    tagged = [i.tags[0] for i in inventory.images if i.tags and i.id in expected]
    dangling = [expected[i.id] for i in inventory.images if i.dangling and i.id in expected]
    return next(iter(sorted(tagged) + dangling), "")


def try_container(engine: Engine, image: str) -> list[str]:
    """Create (never start) and remove one container: the store must be able to run images."""
    name = f"containerd-migrate-verify-{uuid.uuid4().hex[:12]}"
    try:
        container = engine.create_container(image, name=name, labels={VERIFY_LABEL: "1"})
    except MigrateError as error:
        return [f"cannot create a container from {image}: {error.message}"]
    try:
        engine.discard_container(container)
    except MigrateError as error:
        return [f"cannot remove the test container {name}: {error.message}"]
    return []


# Why verify's report has no capability check when containers wait to be recreated.
CHECKED_AFTER_RECREATE = ("checked by the recreate phase once every container runs again: "
                          "see the end of `containerd-migrate run`")


def verify(engine: Engine, inventory: Inventory, manifest: ArchiveManifest,
           staged: Iterable[ExpectedImage] = (), pool: Workers | None = None,
           capability_check: bool = True, info: EngineInfo | None = None,
           ) -> VerificationReport:
    """Every check at once on `pool` (one of its own if not given): verification sits in
    the window, between the restart and the recreate, so every container waits for it; the
    checks only read, or create what is their own. Without `capability_check` the
    multi-platform check is left to the caller (the recreate phase runs it after the
    window). `info`: the daemon's, when the caller read it already."""
    if pool is None:
        with Workers() as own:
            return verify(engine, inventory, manifest, staged, own, capability_check, info)
    expected = moved_image_ids(manifest, staged)
    info = info or engine.info()
    problems = []
    on_containerd = info.store is Store.CONTAINERD
    if not on_containerd:
        problems.append(f"the daemon runs on the {info.store} image store, not containerd")
    capability = pool.submit(lambda: check_multi_platform(
        engine, info.architecture, {VERIFY_LABEL: "1"})) \
        if on_containerd and capability_check else None
    image = _container_image(inventory, expected)
    created = pool.submit(lambda: try_container(engine, image)) \
        if image and on_containerd else None
    checks = tuple(pool.all(lambda old: check_image(engine, old, expected.get(old.id)),
                            inventory.images))
    problems += created.result() if created is not None else []
    if capability is not None:
        platforms: PlatformCheck | None = capability.result()
    elif on_containerd and not capability_check:
        platforms = PlatformCheck(supported=None, note=CHECKED_AFTER_RECREATE)
    else:
        platforms = None
    return VerificationReport(checked_at=datetime.now(UTC), store=str(info.store),
                              images=checks, problems=tuple(problems), container_image=image,
                              multi_platform=platforms)


def render_text(report: VerificationReport) -> str:
    lines = [f"verification at {report.checked_at.isoformat()}: "
             f"{'OK' if report.ok else 'FAILED'} (store: {report.store})"]
    lines += [f"PROBLEM {problem}" for problem in report.problems]
    for check in report.images:
        label = ", ".join(check.tags) or f"<none> {check.legacy_id}"
        lines.append(f"{'ok  ' if check.ok else 'FAIL'} {label} -> {check.new_id}")
        lines += [f"     {problem}" for problem in check.problems]
    if report.multi_platform is not None:
        lines.append(report.multi_platform.line())
    return "\n".join(lines) + "\n"


def write_reports(report: VerificationReport, state_dir: StateDir) -> dict[str, Path]:
    paths = {name: state_dir.reports_dir / name
             for name in ("id-map.json", "verification.json", "verification.txt")}
    body = {**report.model_dump(mode="json"), "ok": report.ok}
    state_dir.write_file(paths["id-map.json"], json.dumps(report.id_map(), indent=2).encode())
    state_dir.write_file(paths["verification.json"], json.dumps(body, indent=2).encode())
    state_dir.write_file(paths["verification.txt"], render_text(report).encode())
    return paths


def raise_if_failed(report: VerificationReport, text_path: Path) -> None:
    if report.ok:
        return
    problems = report.all_problems()
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
    raise VerificationFailed(f"verification found {len(problems)} problem(s): {shown}{more}",
                             f"the full report is {text_path}; `containerd-migrate rollback` "
                             "returns the host to the legacy store")


class VerifyIntent(RecordModel):
    reports_dir: str | None = None


# The undo record is the intent: the reports stay where they are (the undo says where).
VerifyUndo = VerifyIntent


class VerifyPhase(Phase[VerifyIntent, VerifyUndo, VerifyResult]):
    name = "verify"
    undo_model = VerifyUndo
    result_model = VerifyResult

    def intent(self, ctx: PhaseContext) -> VerifyIntent:
        return VerifyIntent(reports_dir=str(ctx.reports_dir))

    def run(self, ctx: PhaseContext) -> PhaseOutcome[VerifyUndo, VerifyResult]:
        inventory = ctx.load_inventory()
        manifest = read_manifest(ctx.archives_dir)
        # Stopped containers wait for this phase: the check of what the store can do from
        # now on (no bearing on whether the images moved) waits for them instead.
        waiting = ctx.containers_wait
        with ctx.connect() as engine, Workers() as pool:
            info = engine.info()
            # Started with the checks, not after them: it is in the window too.
            guard = pool.submit(lambda: create_guard(engine, inventory)) \
                if info.store is Store.CONTAINERD else None
            report = verify(engine, inventory, manifest, ctx.records.stage.expected, pool,
                            capability_check=not waiting, info=info)
            guarded: tuple[str, ...] = ()
            if guard is not None:
                try:
                    guarded = guard.result()
                except MigrateError:
                    # A store that cannot run the guard fails verification below anyway;
                    # its own report says why, which matters more than the guard.
                    if report.ok:
                        raise
        paths = write_reports(report, ctx.state_dir)
        log.info("verification done", phase=self.name, ok=report.ok, images=len(report.images),
                 problems=len(report.all_problems()), report=str(paths["verification.txt"]))
        raise_if_failed(report, paths["verification.txt"])
        capability = report.multi_platform
        report_check(capability, self.name, str(paths["verification.txt"]))
        return PhaseOutcome(VerifyUndo(reports_dir=str(ctx.reports_dir)), VerifyResult(
            images=len(report.images), tags=len(inventory.tags),
            id_map=str(paths["id-map.json"]), volume_guard=guarded,
            report=str(paths["verification.txt"]),
            multi_platform=None if waiting else multi_platform_status(capability)))

    def undo(self, ctx: UndoContext, record: VerifyUndo) -> UndoReport:
        where = record.reports_dir or "the reports dir"
        said = f"verify: nothing to reverse; the reports stay in {where}"
        # The guard goes now, still on the containerd store, where it lives: the switch undo
        # that follows brings back the legacy containers, which protect their volumes again.
        # Left there it would stay hidden in the containerd store (or, with live-restore,
        # keep running unseen under the legacy daemon). So does the multi-platform probe a
        # verify killed during its check left behind.
        try:
            with ctx.connect() as engine:
                if engine.info().store is not Store.CONTAINERD:
                    return UndoReport.done(said)
                removed = remove_guard(engine)
                left = remove_probe(engine)
        except MigrateError as error:
            return UndoReport.failure(f"verify: could not remove the volume guard: "
                                      f"{error.message}", said)
        report = UndoReport.done(said, *(["verify: removed the volume guard"] if removed
                                         else []))
        for what in left:
            report += UndoReport.failure(f"verify: could not remove {what}")
        return report


PHASE = VerifyPhase()
