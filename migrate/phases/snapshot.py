"""Phase "snapshot": record the legacy inventory; refuse when the plan has a blocker.

The stored inventory is what every later phase, verification and rollback compares
against, so it is taken from the live legacy daemon and written atomically, 0600.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from migrate.engine import Engine
from migrate.errors import BlockedError, ExitCode
from migrate.phases.base import (
    Phase,
    PhaseContext,
    PhaseOutcome,
    PreparedPlan,
    RunOptions,
    UndoContext,
    UndoReport,
)
from migrate.phases.records import NoUndo, RecordModel, counted, sized, summarised
from migrate.preflight.facts import PlanOptions, gather_facts
from migrate.preflight.render import render
from migrate.preflight.report import PlanReport, build_plan
from migrate.support.logconfig import get_logger

log = get_logger(__name__)
# A plan taken before the confirmation is the snapshot when it is this recent; after a
# longer wait at the prompt the host may have changed, so the snapshot reads it again.
PLAN_REUSE_SECONDS = 60.0


def prepare_plan(options: RunOptions, connect: Callable[[], Engine],
                 staged: Collection[str] = ()) -> PreparedPlan:
    """The plan for these run options, read from the host now (the snapshot's first step);
    `staged`: the legacy IDs of the images this migration staged (see `build_plan`)."""
    with connect() as engine:
        facts = gather_facts(engine, options.daemon_config, options.state_dir,
                             restart_command=options.restart_command or None,
                             snapshotter=options.snapshotter, staging=False)
    report = build_plan(facts, PlanOptions(
        containers=options.containers, snapshotter=options.snapshotter,
        follow_symlinks=options.follow_symlinks,
    ), staged=staged)
    return PreparedPlan(facts, report, time.monotonic())


def blocker_error(report: PlanReport) -> BlockedError:
    blockers = [c for c in report.checks if c.severity == "blocker"]
    lines = "; ".join(f"{c.id}: {c.message}" for c in blockers)
    hints = " ".join(c.hint for c in blockers if c.hint)
    # A daemon.json we cannot use gets its own exit code: the fix is in that file.
    config_only = all(c.id.startswith("daemon-config") and c.id != "daemon-config-not-read"
                      for c in blockers)
    return BlockedError(
        f"the host cannot be migrated now: {lines}",
        hints or "run `containerd-migrate plan` for the full report",
        exit_code=ExitCode.CONFIG_INVALID if config_only else None,
    )


class SnapshotIntent(RecordModel):
    inventory: str = ""


class SnapshotResult(RecordModel):
    images: int = 0
    tags: int = 0
    dangling: int = 0
    containers: int = 0
    volumes: int = 0
    unique_layer_bytes: int = 0
    estimated_archive_bytes: int = 0

    def summary(self) -> str:
        return summarised(counted(self.images, "images"), counted(self.tags, "tags"),
                          counted(self.dangling, "dangling"),
                          counted(self.containers, "containers"),
                          counted(self.volumes, "volumes"),
                          sized(self.unique_layer_bytes, "of layers"))


class SnapshotPhase(Phase[SnapshotIntent, NoUndo, SnapshotResult]):
    name = "snapshot"
    undo_model = NoUndo
    result_model = SnapshotResult

    def intent(self, ctx: PhaseContext) -> SnapshotIntent:
        return SnapshotIntent(inventory=str(ctx.inventory_path))

    def run(self, ctx: PhaseContext) -> PhaseOutcome[NoUndo, SnapshotResult]:
        prepared = ctx.prepared
        if prepared is None or time.monotonic() - prepared.taken_monotonic > PLAN_REUSE_SECONDS:
            prepared = prepare_plan(ctx.options, ctx.connect)
        facts, report = prepared.facts, prepared.report
        ctx.state_dir.write_file(ctx.reports_dir / "plan.json", render(report, "json").encode())
        if not report.ready:
            raise blocker_error(report)
        inventory = facts.inventory
        ctx.state_dir.write_file(ctx.inventory_path,
                                 inventory.model_dump_json(indent=1).encode())
        log.info("inventory stored", phase=self.name, images=len(inventory.images),
                 containers=len(inventory.containers), volumes=len(inventory.volumes))
        return PhaseOutcome(NoUndo(), SnapshotResult(
            images=len(inventory.images),
            tags=len(inventory.tags),
            dangling=len(inventory.dangling_images),
            containers=len(inventory.containers),
            volumes=len(inventory.volumes),
            unique_layer_bytes=inventory.unique_layer_bytes(),
            estimated_archive_bytes=report.estimate.archive_bytes,
        ))

    def undo(self, ctx: UndoContext, record: NoUndo) -> UndoReport:
        return UndoReport.done("snapshot: nothing to undo (the stored inventory is kept for "
                               "reference)")


PHASE = SnapshotPhase()
