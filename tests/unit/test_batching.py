from __future__ import annotations

import pytest

from migrate.archives.batching import (
    Batch,
    BatchKind,
    batch_name,
    group_by_shared_layers,
    plan_batches,
)
from migrate.models import EMPTY_LAYER_DIFF_ID, ImageRecord

pytestmark = pytest.mark.unit

MB = 1024 * 1024


def layer(n: int) -> str:
    return f"sha256:{n:064x}"


def image(n: int, tags: tuple[str, ...], layers: dict[int, int]) -> ImageRecord:
    return ImageRecord(
        id=f"sha256:{0xABC000 + n:064x}",
        tags=tags,
        diff_ids=tuple(layer(k) for k in layers),
        layer_sizes=tuple(layers.values()),
        size=sum(layers.values()),
    )


BASE = {1: 100 * MB}
APP = image(1, ("acme/app:1", "acme/app:latest"), {**BASE, 2: 10 * MB})
WORKER = image(2, ("acme/worker:1",), {**BASE, 3: 20 * MB})
OTHER = image(3, ("other:1",), {4: 50 * MB})
DANGLING = image(4, (), {**BASE, 5: 5 * MB})


def test_images_sharing_layers_are_one_batch_with_shared_bytes_once() -> None:
    batches = plan_batches([APP, WORKER, OTHER], set(), None)
    assert [b.refs for b in batches] == [
        ("acme/app:1", "acme/app:latest", "acme/worker:1"),
        ("other:1",),
    ]
    assert batches[0].estimated_bytes == 130 * MB
    assert batches[0].image_ids == tuple(sorted((APP.id, WORKER.id)))
    assert {b.kind for b in batches} == {BatchKind.TAGGED}


def test_empty_layer_does_not_glue_unrelated_images() -> None:
    a = image(5, ("a:1",), {6: MB})
    b = image(6, ("b:1",), {7: MB})
    a = a.model_copy(update={"diff_ids": (*a.diff_ids, EMPTY_LAYER_DIFF_ID),
                             "layer_sizes": (MB, 0)})
    b = b.model_copy(update={"diff_ids": (EMPTY_LAYER_DIFF_ID, *b.diff_ids),
                             "layer_sizes": (0, MB)})
    assert len(group_by_shared_layers([a, b])) == 2


def test_dangling_images_get_their_own_batch_saved_by_id() -> None:
    batches = plan_batches([APP, DANGLING], set(), None)
    assert batches[-1] == Batch(
        name=batch_name({DANGLING.id: DANGLING.id}),
        kind=BatchKind.DANGLING,
        refs=(DANGLING.id,),
        image_ids=(DANGLING.id,),
        estimated_bytes=105 * MB,
    )
    assert batches[0].refs == ("acme/app:1", "acme/app:latest")


def test_cap_splits_a_group_largest_first() -> None:
    small = image(7, ("small:1",), {**BASE, 8: 1 * MB})
    batches = plan_batches([APP, WORKER, small], set(), 125 * MB)
    # WORKER (120 MB) is placed first; APP does not fit next to it, small does (+1 MB).
    assert [(b.refs, b.estimated_bytes) for b in batches] == [
        (("acme/app:1", "acme/app:latest"), 110 * MB),
        (("acme/worker:1", "small:1"), 121 * MB),
    ]
    assert all(b.estimated_bytes <= 125 * MB and not b.oversize for b in batches)


def test_image_larger_than_the_cap_gets_its_own_flagged_batch() -> None:
    batches = plan_batches([APP, WORKER, OTHER], set(), 60 * MB)
    assert [(b.refs, b.oversize) for b in batches] == [
        (("acme/app:1", "acme/app:latest"), True),
        (("acme/worker:1",), True),
        (("other:1",), False),
    ]
    assert plan_batches([DANGLING], set(), 60 * MB)[0].oversize


def test_names_are_stable_and_content_derived() -> None:
    first = plan_batches([APP, WORKER, OTHER, DANGLING], set(), None)
    again = plan_batches([DANGLING, OTHER, WORKER, APP], set(), None)
    assert first == again
    assert all(b.name.startswith("batch-") and b.name.endswith(".tar") for b in first)
    assert len(first[0].name) == len("batch-") + 16 + len(".tar")
    retagged = APP.model_copy(update={"tags": ("acme/app:2",)})
    assert plan_batches([retagged, WORKER], set(), None)[0].name != first[0].name


def test_reusable_images_are_skipped() -> None:
    batches = plan_batches([APP, WORKER, OTHER, DANGLING], {APP.id, DANGLING.id}, None)
    assert [b.refs for b in batches] == [("acme/worker:1",), ("other:1",)]
    assert batches[0].estimated_bytes == 120 * MB
    assert plan_batches([APP], {APP.id}, None) == ()


def test_missing_layer_sizes_fall_back_to_image_size() -> None:
    vague = ImageRecord(id="sha256:" + "f" * 64, tags=("v:1",), diff_ids=(layer(9), layer(10)),
                        size=10 * MB)
    assert plan_batches([vague], set(), None)[0].estimated_bytes == 10 * MB
