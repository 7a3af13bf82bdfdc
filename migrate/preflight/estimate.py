"""Disk and time estimates for a migration, from the inventory alone (pure).

Numbers come from docs/engine-facts.md: 1302 MB of unique layers saved in 7-11 s and loaded in
9-15 s, rounded towards the slow end so a plan under-promises.
"""

from __future__ import annotations

from migrate.archives.batching import plan_batches
from migrate.errors import UsageError
from migrate.models import Frozen, Inventory

MB = 1_000_000
DEFAULT_SAVE_MBPS = 110.0
DEFAULT_LOAD_MBPS = 90.0
# Per image an archive adds a config blob, an OCI manifest and index.json/manifest.json
# entries; a few KiB, rounded up.
PER_IMAGE_OVERHEAD_BYTES = 8 * 1024
# The containerd store keeps compressed content plus unpacked snapshots.
NEW_STORE_FACTOR = 2
RESTART_SECONDS = 4.0
# Containers are stopped together; one that ignores SIGTERM costs the 10 s stop timeout
# plus the ~2 s a stop takes anyway.
CONTAINER_STOP_SECONDS = 12.0
# Each docker save / docker load call: daemon round trips and archive setup.
PER_BATCH_SECONDS = 1.0
VERIFY_BASE_SECONDS = 2.0
VERIFY_PER_IMAGE_SECONDS = 0.2
# Head-room left on a filesystem for the journal, reports and the daemon's own writes.
# One rule for `plan`'s disk checks and the export's pre-check (`room_needed`), so a plan
# that passes is a run whose export has room.
RESERVE_BYTES = 256 * 1024 * 1024


def room_needed(write_bytes: int) -> int:
    """Free bytes a filesystem needs before `write_bytes` are written to it."""
    return write_bytes + RESERVE_BYTES


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
    # Without pre-staging, images are unusable from the restart until verified.
    downtime_seconds: float


def batch_bytes(inventory: Inventory) -> tuple[int, ...]:
    """Archive size of each `docker save` call, batched exactly as the export phase does."""
    batches = plan_batches(inventory.images, set(), max_batch_bytes=None)
    return tuple(
        batch.estimated_bytes + PER_IMAGE_OVERHEAD_BYTES * len(batch.image_ids)
        for batch in batches
    )


def _seconds(size: int, mbps: float, batches: int) -> float:
    return size / (mbps * MB) + PER_BATCH_SECONDS * batches


def _throughputs(throughput_mbps: float | None) -> tuple[float, float]:
    if throughput_mbps is None:
        return DEFAULT_SAVE_MBPS, DEFAULT_LOAD_MBPS
    if throughput_mbps <= 0:
        raise UsageError(f"throughput must be positive, got {throughput_mbps}")
    return throughput_mbps, throughput_mbps


def estimate(
    inventory: Inventory, throughput_mbps: float | None = None, *, shared_filesystem: bool = False,
    commit_bytes: int = 0,
) -> Estimate:
    """Disk needs and durations; `shared_filesystem` = state dir and data root on one fs.

    `commit_bytes`: the writable layers `--containers recreate` commits. Each is committed
    to an image in the legacy store (data root), saved to an archive (state dir) and loaded
    into the new store (data root, twice: content and snapshot)."""
    save_mbps, load_mbps = _throughputs(throughput_mbps)
    batches = batch_bytes(inventory)
    archive = sum(batches) + commit_bytes
    staging = max([*batches, commit_bytes], default=0)
    unique = inventory.unique_layer_bytes()
    new_store = NEW_STORE_FACTOR * (unique + commit_bytes)
    state_need = room_needed(archive)
    data_need = room_needed(staging + new_store + commit_bytes)
    if shared_filesystem:
        state_need = data_need = room_needed(archive + staging + new_store + commit_bytes)
    running = any(container.running for container in inventory.containers)
    export_s = _seconds(archive, save_mbps, len(batches))
    restart_s = RESTART_SECONDS + (CONTAINER_STOP_SECONDS if running else 0.0)
    import_s = _seconds(archive, load_mbps, len(batches))
    verify_s = VERIFY_BASE_SECONDS + VERIFY_PER_IMAGE_SECONDS * len(inventory.images)
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
        total_seconds=export_s + restart_s + import_s + verify_s,
        downtime_seconds=restart_s + import_s + verify_s,
    )
