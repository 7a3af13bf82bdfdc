"""Disk and time estimates for a migration, from what the host shows (pure).

Each time figure says what it stands on (`Basis`): `measured` on this host (the daemon's
own last start, what is staged already), measured by the last usable `rehearsal` (its
engine's start, its save and load, its verification; see preflight/rehearsal.py), a
`bound` that holds (the containers' own stop timeouts), an operator's `given` throughput,
or a stated `default`. Defaults come from
docs/engine-facts.md: 1302 MB of unique layers saved in 7-11 s and loaded in 9-15 s,
rounded towards the slow end so a plan under-promises.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from migrate.archives.batching import plan_batches
from migrate.archives.writing import room_needed
from migrate.errors import UsageError
from migrate.models import Frozen, ImageRecord, Inventory
from migrate.preflight.containers import dependency_levels, stop_timeout
from migrate.preflight.rehearsal import (
    RehearsalFigures,
    RehearsalReport,
    RehearsalUse,
    measured_by,
    rehearsal_use,
)

MB = 1_000_000
DEFAULT_SAVE_MBPS = 110.0
DEFAULT_LOAD_MBPS = 90.0
# Per image an archive adds a config blob, an OCI manifest and index.json/manifest.json
# entries; a few KiB, rounded up.
PER_IMAGE_OVERHEAD_BYTES = 8 * 1024
# The containerd store keeps compressed content plus unpacked snapshots.
NEW_STORE_FACTOR = 2
# A restart when the daemon's last start cannot be read (1.3-2.4 s measured in sandboxes).
RESTART_SECONDS = 4.0
# What dockerd's own stop adds to its measured start: its containers are stopped by then.
DAEMON_STOP_SECONDS = 1.0
# A stop level waits for its slowest container's stop timeout, plus the stop call itself.
STOP_LEVEL_OVERHEAD_SECONDS = 0.5
# Each docker save / docker load call: daemon round trips and archive setup.
PER_BATCH_SECONDS = 1.0
VERIFY_BASE_SECONDS = 2.0
VERIFY_PER_IMAGE_SECONDS = 0.2


BasisKind = Literal["measured", "rehearsal", "bound", "given", "default"]


class Basis(Frozen):
    """What a time figure stands on, said with the figure in every format."""

    kind: BasisKind
    source: str

    def label(self) -> str:
        # A rehearsal's source says "measured by rehearsal <time>" itself.
        return self.source if self.kind == "rehearsal" else f"{self.kind}: {self.source}"


class Estimate(Frozen):
    image_count: int
    dangling_count: int
    # batching.plan_batches without a size cap: one archive per group of tagged images
    # sharing layers, one per dangling image (cd-mode `docker load` skips untagged images
    # inside a shared archive), so a dangling image's shared layers are written again.
    batch_count: int
    unique_layer_bytes: int
    archive_bytes: int
    # `docker save` first copies the batch under DATA_ROOT/tmp; batches run one at a time.
    staging_bytes: int
    new_store_bytes: int
    shared_filesystem: bool
    state_dir_need_bytes: int
    data_root_need_bytes: int
    save_mbps: float
    load_mbps: float
    export_seconds: float
    restart_seconds: float
    import_seconds: float
    verify_seconds: float
    total_seconds: float
    # Images are unusable from the restart until verified (the import is nothing once
    # everything is staged).
    downtime_seconds: float
    # Stopping the running containers before the restart (an upper bound), and the window:
    # from the first container stop until verified.
    stop_seconds: float = 0.0
    window_seconds: float = 0.0
    # Figure name (export, stop, restart, import, verify) -> what it stands on.
    bases: dict[str, Basis] = Field(default_factory=dict)
    # The last rehearsal: whether its figures were used, and why not. None: none ran.
    rehearsal: RehearsalUse | None = None


def batch_bytes(inventory: Inventory) -> tuple[int, ...]:
    """Archive size of each `docker save` call, batched exactly as the export phase does."""
    return batch_bytes_of(inventory.images)


def batch_bytes_of(images: tuple[ImageRecord, ...]) -> tuple[int, ...]:
    batches = plan_batches(images, set(), max_batch_bytes=None)
    return tuple(
        batch.estimated_bytes + PER_IMAGE_OVERHEAD_BYTES * len(batch.image_ids)
        for batch in batches
    )


def _seconds(size: int, mbps: float, batches: int) -> float:
    return size / (mbps * MB) + PER_BATCH_SECONDS * batches


@dataclass(frozen=True)
class Rehearsed:
    """The figures of a usable rehearsal, and how a figure taken from them is labelled."""

    report: RehearsalReport
    figures: RehearsalFigures

    def basis(self, what: str) -> Basis:
        return Basis(kind="rehearsal", source=f"{measured_by(self.report)}: {what}")

    def transfer(self, verb: str, moved_bytes: int, partial: bool) -> tuple[float, Basis]:
        """The save ("export") or the load ("import"): as long as the rehearsal's, or, for
        `partial`ly staged images, `moved_bytes` at the rate it measured."""
        figures = self.figures
        seconds, mbps = ((figures.save_seconds, figures.save_mbps) if verb == "export"
                         else (figures.load_seconds, figures.load_mbps))
        done = "saved" if verb == "export" else "loaded"
        if self.report.path == "staged":
            # It streamed the save into the store at once (nothing loaded): that stream's
            # time stands for the save and for the load alike, an upper bound for each.
            seconds, mbps, done = figures.save_seconds, figures.load_mbps, "staged"
        basis = self.basis(f"{done} {figures.archive_bytes / MB:.0f} MB in {seconds:.1f} s "
                           f"({mbps:.0f} MB/s)")
        if not partial or mbps <= 0:
            return seconds, basis
        return moved_bytes / (mbps * MB), basis.model_copy(
            update={"source": f"{basis.source}, for the images not staged"})


def _throughputs(throughput_mbps: float | None,
                 rehearsed: Rehearsed | None = None) -> tuple[float, float]:
    if throughput_mbps is None and rehearsed is not None:
        figures = rehearsed.figures
        return (round(figures.save_mbps, 1) or DEFAULT_SAVE_MBPS,
                round(figures.load_mbps, 1) or DEFAULT_LOAD_MBPS)
    if throughput_mbps is None:
        return DEFAULT_SAVE_MBPS, DEFAULT_LOAD_MBPS
    if throughput_mbps <= 0:
        raise UsageError(f"throughput must be positive, got {throughput_mbps}")
    return throughput_mbps, throughput_mbps


def stop_bound(inventory: Inventory) -> float:
    """At most how long stopping the running containers takes: quiesce stops a dependency
    level at once, and a stop waits at most the container's own stop timeout."""
    running = [c for c in inventory.containers if c.running]
    return sum(max(stop_timeout(c) for c in level) + STOP_LEVEL_OVERHEAD_SECONDS
               for level in dependency_levels(running))


def _restart(last_start_seconds: float | None,
             rehearsed: Rehearsed | None) -> tuple[float, Basis]:
    """The live daemon's own last start first: the rehearsal's engine starts empty, before
    any image is loaded, and measured 0.1-0.2 s where a live restart took 1.3 s
    (benchmarks/README.md); it stands in only when the last start is not readable."""
    if last_start_seconds is not None:
        return last_start_seconds + DAEMON_STOP_SECONDS, Basis(
            kind="measured", source=f"the daemon's last start took {last_start_seconds:.1f} "
            f"s, plus {DAEMON_STOP_SECONDS:g} s for its stop")
    if rehearsed is not None:
        start = rehearsed.figures.engine_start_seconds
        return start + DAEMON_STOP_SECONDS, rehearsed.basis(
            f"its engine started in {start:.1f} s, plus {DAEMON_STOP_SECONDS:g} s for the "
            "daemon's stop")
    return RESTART_SECONDS, Basis(kind="default", source="the daemon's last start was not "
                                  "readable (systemd shows it for docker.service)")


def _verify(images: int, rehearsed: Rehearsed | None) -> tuple[float, Basis]:
    if rehearsed is not None:
        seconds = rehearsed.figures.verify_seconds
        return seconds, rehearsed.basis(f"{images} image(s) verified in {seconds:.1f} s")
    return VERIFY_BASE_SECONDS + VERIFY_PER_IMAGE_SECONDS * images, Basis(
        kind="default", source=f"{VERIFY_BASE_SECONDS:g} s + {VERIFY_PER_IMAGE_SECONDS:g} s "
        "per image")


def _rehearsed(report: RehearsalReport | None, use: RehearsalUse | None) -> Rehearsed | None:
    if report is None or report.figures is None or use is None or not use.used:
        return None
    return Rehearsed(report, report.figures)


def _transfer(images: tuple[ImageRecord, ...], to_move: tuple[ImageRecord, ...], mbps: float,
              given: bool, verb: str, rehearsed: Rehearsed | None = None,
              ) -> tuple[float, Basis]:
    if images and not to_move:
        return 0.0, Basis(kind="measured", source=f"every image is staged: nothing to {verb}")
    batches = batch_bytes_of(to_move)
    if rehearsed is not None and not given:
        return rehearsed.transfer(verb, sum(batches), len(to_move) < len(images))
    rate = Basis(kind="given" if given else "default",
                 source=f"{mbps:g} MB/s" + ("" if given else " (docs/engine-facts.md)"))
    if len(to_move) < len(images):
        rate = rate.model_copy(update={"source": f"{rate.source}, for the "
                                       f"{len(to_move)} image(s) not staged"})
    return _seconds(sum(batches), mbps, len(batches)), rate


def estimate(
    inventory: Inventory, throughput_mbps: float | None = None, *,
    shared_filesystem: bool = False, staged: Collection[str] = (),
    last_start_seconds: float | None = None, stops_containers: bool = True,
    commit_bytes: int = 0, rehearsal: RehearsalReport | None = None,
) -> Estimate:
    """Disk needs and durations; `shared_filesystem` = state dir and data root on one fs;
    `staged`: legacy IDs of the images already in the containerd store (neither exported
    nor imported); `last_start_seconds`: how long the daemon's last start took, when the
    host shows it; `stops_containers`: the containers policy stops the running ones.

    `commit_bytes`: the writable layers `--containers recreate` commits. Each is committed
    to an image in the legacy store (data root), saved to an archive (state dir) and loaded
    into the new store (data root, twice: content and snapshot).

    `rehearsal`: the last rehearsal's report; its figures stand for the restart, the export,
    the import and the verification when it succeeded on these very images (`--throughput`
    still wins for the export and the import)."""
    use = rehearsal_use(rehearsal, inventory)
    rehearsed = _rehearsed(rehearsal, use)
    save_mbps, load_mbps = _throughputs(throughput_mbps, rehearsed)
    batches = batch_bytes(inventory)
    archive = sum(batches) + commit_bytes
    staging = max([*batches, commit_bytes], default=0)
    unique = inventory.unique_layer_bytes()
    new_store = NEW_STORE_FACTOR * (unique + commit_bytes)
    state_need = room_needed(archive)
    data_need = room_needed(staging + new_store + commit_bytes)
    if shared_filesystem:
        state_need = data_need = room_needed(archive + staging + new_store + commit_bytes)
    to_move = tuple(image for image in inventory.images if image.id not in set(staged))
    given = throughput_mbps is not None
    export_s, export_basis = _transfer(inventory.images, to_move, save_mbps, given, "export",
                                       rehearsed)
    import_s, import_basis = _transfer(inventory.images, to_move, load_mbps, given, "import",
                                       rehearsed)
    restart_s, restart_basis = _restart(last_start_seconds, rehearsed)
    stop_s = stop_bound(inventory) if stops_containers else 0.0
    verify_s, verify_basis = _verify(len(inventory.images), rehearsed)
    bases = {
        "export": export_basis,
        "stop": Basis(kind="bound", source="the running containers' own stop timeouts "
                      "(StopTimeout, else the daemon's 10 s), a dependency level at once")
        if stop_s else Basis(kind="measured", source="no running container to stop"),
        "restart": restart_basis,
        "import": import_basis,
        "verify": verify_basis,
    }
    return Estimate(
        image_count=len(inventory.images),
        dangling_count=len(inventory.dangling_images),
        batch_count=len(batches),
        unique_layer_bytes=unique,
        archive_bytes=archive,
        staging_bytes=staging,
        new_store_bytes=new_store,
        shared_filesystem=shared_filesystem,
        state_dir_need_bytes=state_need,
        data_root_need_bytes=data_need,
        save_mbps=save_mbps,
        load_mbps=load_mbps,
        export_seconds=export_s,
        restart_seconds=restart_s,
        import_seconds=import_s,
        verify_seconds=verify_s,
        total_seconds=export_s + stop_s + restart_s + import_s + verify_s,
        downtime_seconds=restart_s + import_s + verify_s,
        stop_seconds=stop_s,
        window_seconds=stop_s + restart_s + import_s + verify_s,
        bases=bases,
        rehearsal=use,
    )
