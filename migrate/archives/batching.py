"""Plan which images go into which `docker save` archive. Pure: no I/O, plans are values.

Saving images that share layers in one archive writes the shared layers once
(docs/engine-facts.md: 1301 MiB vs 2509 MiB), so tagged images are grouped by shared
diff_ids. But legacy `docker save` first stages the whole batch under DATA_ROOT/tmp, so a
batch must also fit in the free space there. Dangling images must be saved alone, by ID:
inside a multi-image archive they are missing from index.json and cd-mode `docker load`
silently skips them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from enum import StrEnum

from migrate.models import EMPTY_LAYER_DIFF_ID, Frozen, ImageRecord, unique_layer_bytes

BATCH_PREFIX = "batch-"
BATCH_SUFFIX = ".tar"


class BatchKind(StrEnum):
    TAGGED = "tagged"
    DANGLING = "dangling"


class Batch(Frozen):
    name: str
    kind: BatchKind
    # What `docker save` is called with: every tag of every image, or one dangling ID.
    refs: tuple[str, ...]
    image_ids: tuple[str, ...]
    # Unique layer bytes inside the batch: what the staging copy and the archive weigh.
    estimated_bytes: int
    # The single image in this batch alone is larger than the staging cap.
    oversize: bool = False


def batch_name(ref_to_id: Mapping[str, str]) -> str:
    """Content-derived, so a resumed or later run recognises an archive it already wrote."""
    lines = "\n".join(sorted(f"{ref}={image_id}" for ref, image_id in ref_to_id.items()))
    return f"{BATCH_PREFIX}{hashlib.sha256(lines.encode()).hexdigest()[:16]}{BATCH_SUFFIX}"


def _find(parent: dict[str, str], key: str) -> str:
    root = key
    while parent[root] != root:
        root = parent[root]
    while parent[key] != root:  # path compression
        parent[key], key = root, parent[key]
    return root


def group_by_shared_layers(images: Iterable[ImageRecord]) -> tuple[tuple[ImageRecord, ...], ...]:
    """Union-find over diff_ids: images that share any non-empty layer end up together."""
    ordered = sorted(images, key=lambda i: i.id)
    parent = {image.id: image.id for image in ordered}
    owner: dict[str, str] = {}
    for image in ordered:
        for diff_id in image.diff_ids:
            if diff_id == EMPTY_LAYER_DIFF_ID:
                continue
            if diff_id in owner:
                a, b = _find(parent, owner[diff_id]), _find(parent, image.id)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                owner[diff_id] = image.id
    groups: dict[str, list[ImageRecord]] = {}
    for image in ordered:
        groups.setdefault(_find(parent, image.id), []).append(image)
    return tuple(tuple(group) for _, group in sorted(groups.items()))


def split_group(
    group: Iterable[ImageRecord], cap: int | None
) -> tuple[tuple[tuple[ImageRecord, ...], bool], ...]:
    """Split one group into bins of at most `cap` unique bytes: (images, oversize) pairs.

    Largest image first; each goes to the bin it adds the fewest new bytes to (so images
    sharing layers still tend to stay together), or opens a new bin. An image larger
    than the cap alone gets a bin of its own, flagged oversize.
    """
    members = sorted(group, key=lambda i: (-unique_layer_bytes([i]), i.id))
    if cap is None or unique_layer_bytes(members) <= cap:
        return ((tuple(members), False),)
    bins: list[tuple[list[ImageRecord], dict[str, int]]] = []
    oversize: list[ImageRecord] = []
    for image in members:
        layers = image.layer_bytes()
        if sum(layers.values()) > cap:
            oversize.append(image)
            continue
        best: tuple[int, int] | None = None  # (added bytes, bin index)
        for index, (_, seen) in enumerate(bins):
            added = sum(size for diff_id, size in layers.items() if diff_id not in seen)
            if sum(seen.values()) + added <= cap and (best is None or added < best[0]):
                best = (added, index)
        if best is None:
            bins.append(([image], dict(layers)))
        else:
            chosen, seen = bins[best[1]]
            chosen.append(image)
            for diff_id, size in layers.items():
                seen.setdefault(diff_id, size)
    packed = [(tuple(images), False) for images, _ in bins]
    return tuple(packed + [((image,), True) for image in oversize])


def _tagged_batch(images: tuple[ImageRecord, ...], oversize: bool) -> Batch:
    ref_to_id = {tag: image.id for image in images for tag in image.tags}
    return Batch(
        name=batch_name(ref_to_id),
        kind=BatchKind.TAGGED,
        refs=tuple(sorted(ref_to_id)),
        image_ids=tuple(sorted(image.id for image in images)),
        estimated_bytes=unique_layer_bytes(images),
        oversize=oversize,
    )


def _dangling_batch(image: ImageRecord, cap: int | None) -> Batch:
    size = unique_layer_bytes([image])
    return Batch(
        name=batch_name({image.id: image.id}),
        kind=BatchKind.DANGLING,
        refs=(image.id,),
        image_ids=(image.id,),
        estimated_bytes=size,
        oversize=cap is not None and size > cap,
    )


def plan_batches(
    images: Iterable[ImageRecord], reusable: set[str], max_batch_bytes: int | None
) -> tuple[Batch, ...]:
    """Batches for every image not in `reusable` (IDs already covered by intact archives).

    `max_batch_bytes=None` means no cap (the data root is not visible from here).
    """
    todo = [image for image in images if image.id not in reusable]
    tagged = [image for image in todo if not image.dangling]
    batches = [
        _tagged_batch(members, oversize)
        for group in group_by_shared_layers(tagged)
        for members, oversize in split_group(group, max_batch_bytes)
    ]
    batches.sort(key=lambda b: (b.refs, b.name))
    dangling = sorted(
        (_dangling_batch(image, max_batch_bytes) for image in todo if image.dangling),
        key=lambda b: b.name,
    )
    return tuple(batches + dangling)
