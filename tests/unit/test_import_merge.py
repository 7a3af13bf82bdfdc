"""An image imported from two archives keeps the refs of both (for an exact purge)."""

from __future__ import annotations

import pytest

from migrate.phases.import_ import _merge

pytestmark = pytest.mark.unit


def test_refs_of_one_image_from_two_archives_are_merged() -> None:
    first = [{"id": "sha256:b", "legacy_id": "sha256:1", "refs": ["app:1"]},
             {"id": "sha256:a", "legacy_id": "sha256:2", "refs": []}]
    second = [{"id": "sha256:b", "legacy_id": "sha256:1", "refs": ["app:latest", "app:1"]}]
    merged = _merge(first, second)
    assert [image["id"] for image in merged] == ["sha256:a", "sha256:b"]
    assert merged[1]["refs"] == ["app:1", "app:latest"]
    assert merged[0]["refs"] == []
