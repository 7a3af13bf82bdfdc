"""A bounded thread pool for engine calls done level by level (quiesce, recreate).

Stopping, creating and starting containers one after another made every container's
downtime grow with the host (issue 19): the calls mostly wait on the daemon, so a few
threads shorten the window. Each level is finished, failures included, before the next
one starts: what a level needs (a container it joins or links to) is done by then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Self, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# The daemon serialises some of the work anyway (its container store, the network
# allocator); 8 threads were enough to keep it busy without piling up requests.
WORKERS = 8


class Workers:
    """`with Workers() as pool: pool.all(fn, items)`: one pool for a phase, so its threads
    (and each thread's engine connection) are reused from level to level."""

    def __init__(self, size: int = WORKERS):
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="migrate-worker")

    def all(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`fn` on every item at once; waits for every call, then raises the first failure
        (in item order) or returns the results in item order. A failure does not cancel
        the calls already running: their effects are journaled like any other."""
        futures = [self._pool.submit(fn, item) for item in items]
        wait(futures)
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return [future.result() for future in futures]

    def submit(self, fn: Callable[[], R]) -> Future[R]:
        """`fn` in the background: a call whose answer is needed only later (verify's
        capability check and volume guard, while the images are checked)."""
        return self._pool.submit(fn)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Interrupted (Ctrl-C, SIGTERM): what has not started yet never starts.
        self._pool.shutdown(wait=True, cancel_futures=True)


def serialised(fn: Callable[[T], R]) -> Callable[[T], R]:
    """`fn` behind one lock: e.g. the journal's checkpoint, whose writer is not
    thread-safe, called from every worker."""
    lock = threading.Lock()

    def call(arg: T) -> R:
        with lock:
            return fn(arg)

    return call
