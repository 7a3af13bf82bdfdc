from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import JsonValue

from migrate.archives.batching import plan_batches
from migrate.archives.writing import RESERVE_BYTES, room_needed
from migrate.errors import UsageError
from migrate.models import ContainerRecord, EngineInfo, ImageRecord, Inventory, Store
from migrate.preflight.estimate import (
    DAEMON_STOP_SECONDS,
    MB,
    PER_BATCH_SECONDS,
    PER_IMAGE_OVERHEAD_BYTES,
    RESTART_SECONDS,
    STOP_LEVEL_OVERHEAD_SECONDS,
    estimate,
)

pytestmark = pytest.mark.unit

OV = PER_IMAGE_OVERHEAD_BYTES


def image(id_: str, layers: dict[str, int], tags: tuple[str, ...] = ()) -> ImageRecord:
    return ImageRecord(id=f"sha256:{id_}", tags=tags, diff_ids=tuple(layers),
                       layer_sizes=tuple(layers.values()), size=sum(layers.values()))


def inventory(*images: ImageRecord, containers: tuple[ContainerRecord, ...] = ()) -> Inventory:
    engine = EngineInfo(version="26.1.5", api_version="1.45", store=Store.LEGACY,
                        driver="overlay2", data_root="/var/lib/docker")
    return Inventory(taken_at=datetime(2024, 6, 1, tzinfo=UTC), engine=engine, images=images,
                     containers=containers)


BASE = {"sha256:base": 100 * MB}
APP = image("a", {**BASE, "sha256:app": 10 * MB}, ("acme/app:1",))
WEB = image("b", {**BASE, "sha256:web": 20 * MB}, ("acme/web:1", "acme/web:latest"))


def test_shared_layers_counted_once() -> None:
    est = estimate(inventory(APP, WEB))
    assert est.unique_layer_bytes == 130 * MB
    assert est.batch_count == 1
    assert est.archive_bytes == 130 * MB + 2 * OV
    assert est.staging_bytes == est.archive_bytes
    assert est.new_store_bytes == 260 * MB


def test_unrelated_images_go_to_separate_batches() -> None:
    other = image("c", {"sha256:other": 50 * MB}, ("other:1",))
    est = estimate(inventory(APP, other))
    assert est.batch_count == 2
    assert est.archive_bytes == 160 * MB + 2 * OV
    assert est.staging_bytes == 110 * MB + OV  # only the largest batch is staged at once


def test_dangling_layers_counted_again_in_archives() -> None:
    dangling = image("d", {**BASE, "sha256:old": 5 * MB})
    est = estimate(inventory(APP, WEB, dangling))
    assert est.unique_layer_bytes == 135 * MB  # the store de-duplicates
    assert est.dangling_count == 1
    assert est.batch_count == 2
    assert est.archive_bytes == (130 * MB + 2 * OV) + (105 * MB + OV)
    assert est.staging_bytes == 130 * MB + 2 * OV


def test_disk_needs_separate_and_shared() -> None:
    inv = inventory(APP, WEB)
    apart = estimate(inv)
    assert apart.state_dir_need_bytes == room_needed(apart.archive_bytes)
    assert apart.data_root_need_bytes == room_needed(apart.staging_bytes + apart.new_store_bytes)
    shared = estimate(inv, shared_filesystem=True)
    total = apart.archive_bytes + apart.staging_bytes + apart.new_store_bytes
    assert shared.shared_filesystem
    assert shared.state_dir_need_bytes == shared.data_root_need_bytes == room_needed(total)


def test_throughput_override_drives_durations() -> None:
    est = estimate(inventory(APP, WEB), throughput_mbps=10)
    assert est.save_mbps == est.load_mbps == 10
    expected = est.archive_bytes / (10 * MB) + PER_BATCH_SECONDS
    assert est.export_seconds == pytest.approx(expected)
    assert est.import_seconds == pytest.approx(expected)
    assert est.total_seconds == pytest.approx(
        est.export_seconds + est.restart_seconds + est.import_seconds + est.verify_seconds)


def test_defaults_are_at_the_slow_end_of_measurements() -> None:
    # docs/engine-facts.md: 1302 MB saved in 7-11 s, loaded in 9-15 s.
    est = estimate(inventory(image("big", {"sha256:l": 1302 * MB}, ("big:1",))))
    assert 11 <= est.export_seconds <= 16
    assert 14 <= est.import_seconds <= 20


def _container(name: str, state: str = "running", stop_timeout: int | None = None,
               links: tuple[str, ...] = ()) -> ContainerRecord:
    config: dict[str, JsonValue] = {} if stop_timeout is None else {"StopTimeout": stop_timeout}
    return ContainerRecord(id=name * 8, name=name, image="acme/app:1", image_id=APP.id,
                           state=state, config=config, links=links)


def test_stop_is_a_bound_from_the_containers_own_timeouts_a_level_at_once() -> None:
    idle = _container("idle", state="exited")
    assert estimate(inventory(APP, containers=(idle,))).stop_seconds == 0
    db = _container("db", stop_timeout=30)
    cache = _container("cache")  # the daemon's 10 s
    app = _container("app", stop_timeout=2, links=("/db:/app/db",))
    est = estimate(inventory(APP, containers=(idle, db, cache, app)))
    # Two levels: app alone (2 s), then db and cache together (the slower: 30 s).
    assert est.stop_seconds == 2 + 30 + 2 * STOP_LEVEL_OVERHEAD_SECONDS
    assert est.bases["stop"].kind == "bound"
    assert est.window_seconds == pytest.approx(est.stop_seconds + est.downtime_seconds)
    assert est.restart_seconds == RESTART_SECONDS  # the stop is its own figure now
    # A policy that stops nothing (refuse) costs no stop.
    assert estimate(inventory(APP, containers=(db,)), stops_containers=False).stop_seconds == 0


def test_restart_is_measured_from_the_daemons_last_start_else_a_stated_default() -> None:
    default = estimate(inventory(APP))
    assert default.restart_seconds == RESTART_SECONDS
    assert default.bases["restart"].kind == "default"
    assert "not readable" in default.bases["restart"].source
    measured = estimate(inventory(APP), last_start_seconds=1.4)
    assert measured.restart_seconds == pytest.approx(1.4 + DAEMON_STOP_SECONDS)
    assert measured.bases["restart"].kind == "measured"
    assert "1.4 s" in measured.bases["restart"].source


def test_nothing_left_to_export_or_import_once_staged() -> None:
    staged = estimate(inventory(APP, WEB), staged={APP.id, WEB.id})
    assert staged.import_seconds == staged.export_seconds == 0
    assert staged.bases["import"].kind == "measured"
    assert "staged" in staged.bases["import"].source
    assert staged.window_seconds == pytest.approx(staged.restart_seconds
                                                  + staged.verify_seconds)
    half = estimate(inventory(APP, WEB), staged={APP.id})
    whole = estimate(inventory(APP, WEB))
    assert 0 < half.import_seconds < whole.import_seconds
    assert "1 image(s) not staged" in half.bases["import"].source
    assert whole.bases["import"].kind == "default"
    assert estimate(inventory(APP), throughput_mbps=50).bases["export"].kind == "given"
    # Disk needs do not shrink: staged images may still be exported on a resumed stage.
    assert staged.archive_bytes == whole.archive_bytes


def test_downtime_without_prestaging() -> None:
    est = estimate(inventory(APP))
    assert set(est.bases) == {"export", "stop", "restart", "import", "verify"}
    assert est.downtime_seconds == pytest.approx(
        est.restart_seconds + est.import_seconds + est.verify_seconds)


def test_empty_inventory() -> None:
    est = estimate(inventory())
    assert (est.archive_bytes, est.staging_bytes, est.batch_count) == (0, 0, 0)
    assert est.export_seconds == 0


@pytest.mark.parametrize("value", [0, -5])
def test_bad_throughput(value: float) -> None:
    with pytest.raises(UsageError):
        estimate(inventory(APP), throughput_mbps=value)


def test_a_plan_that_passes_leaves_room_for_every_export_batch() -> None:
    """Issue 11.11: plan and the export pre-check apply one rule (room_needed)."""
    inv = inventory(APP, WEB)
    est = estimate(inv)
    free = est.state_dir_need_bytes  # the least a passing plan accepts
    for batch in plan_batches(inv.images, set(), max_batch_bytes=None):
        assert free >= room_needed(batch.estimated_bytes)
        free -= batch.estimated_bytes
    assert free >= RESERVE_BYTES
    # 40 MiB for 11.9 MiB of archives: the plan refuses, as the run would.
    assert est.state_dir_need_bytes > 40 * 1024 * 1024
