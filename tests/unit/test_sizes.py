from __future__ import annotations

import pytest

from migrate.support.sizes import human_bytes

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("size", "text"), [
    (0, "0 B"), (999, "999 B"), (12_491_776, "12.5 MB"), (1_060_000_000, "1.06 GB"),
    (2 * 10**12, "2 TB"),
])
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text
