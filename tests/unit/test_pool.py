"""The bounded pool quiesce and recreate run a level at a time on (support/pool.py)."""

from __future__ import annotations

import threading
import time

import pytest

from migrate.support.pool import Workers, serialised

pytestmark = pytest.mark.unit


def test_a_level_runs_at_once_and_answers_in_item_order() -> None:
    barrier = threading.Barrier(4, timeout=10)  # only passes if all four run together

    def call(item: int) -> int:
        barrier.wait()
        return item * 2

    with Workers(size=4) as pool:
        assert pool.all(call, [3, 1, 2, 0]) == [6, 2, 4, 0]


def test_a_failure_is_raised_once_every_call_of_the_level_is_done() -> None:
    done: list[int] = []
    failed = threading.Event()

    def call(item: int) -> int:
        if item == 0:
            failed.set()
            raise ValueError("first fails")
        assert failed.wait(10)  # still running when the failure is known
        done.append(item)
        return item

    with Workers(size=4) as pool, pytest.raises(ValueError, match="first fails"):
        pool.all(call, [0, 1, 2])
    assert sorted(done) == [1, 2]


def test_serialised_calls_never_overlap() -> None:
    inside = threading.Semaphore(1)
    overlaps: list[int] = []

    def write(item: int) -> None:
        if not inside.acquire(blocking=False):
            overlaps.append(item)
            return
        time.sleep(0.001)
        inside.release()

    locked = serialised(write)
    with Workers(size=8) as pool:
        pool.all(locked, range(64))
    assert overlaps == []
