"""A busy container's work rate while a command runs on the host: the probes and sampling
that benchmarks/staging.py and benchmarks/rehearse.py share.

A probe is work done inside a running container of the live daemon through `docker exec`,
timed from outside: what a service on the host sees of its own speed. `during()` runs the
probes again and again while an action runs, and `idle()` the same with nothing else.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from migrate.sandbox import Sandbox
from migrate.sandbox.samples import docker

# A CPU loop in the container's shell (about 0.2 s on an idle core).
CPU_LOOP = "i=0; while [ $i -lt 60000 ]; do i=$((i+1)); done"
# Writes 8 MiB into the container's writable layer and waits for the disk.
IO_WRITE = "dd if=/dev/zero of=/cm-probe bs=1M count=8 conv=fsync 2>/dev/null; rm -f /cm-probe"

T = TypeVar("T")


class Sampler(threading.Thread, Generic[T]):
    """Calls `sample()` until stopped, `every` seconds apart; keeps every value."""

    def __init__(self, sample: Callable[[], T], every: float = 0.0):
        super().__init__(daemon=True)
        self.sample, self.every = sample, every
        self.values: list[T] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.values.append(self.sample())
            self.stopped.wait(self.every)

    def stop(self) -> list[T]:
        self.stopped.set()
        self.join()
        return self.values


def probe(sandbox: Sandbox, container: str, script: str = CPU_LOOP) -> Callable[[], float]:
    """Seconds one run of `script` takes inside `container` (docker exec included)."""
    def once() -> float:
        started = time.perf_counter()
        docker(sandbox.host, "exec", container, "sh", "-c", script)
        return time.perf_counter() - started
    return once


Probes = Mapping[str, Callable[[], float]]


@dataclass(frozen=True)
class Samples:
    """Seconds of each probe, run after one another again and again; the load average
    (1 min) at the end."""

    values: dict[str, list[float]]
    load: float

    @property
    def rounds(self) -> int:
        return min((len(v) for v in self.values.values()), default=0)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])

    def slowdown(self, name: str, calm: Samples) -> float:
        """How much longer the work took than idle (1.0: not at all; 2.0: half the rate)."""
        return self.median(name) / calm.median(name)

    def merged(self, other: Samples) -> Samples:
        """Both runs' values; the lower load average (an idle run right after a busy one
        still carries the busy one's load in its 1-minute average)."""
        return Samples({name: [*values, *other.values[name]]
                        for name, values in self.values.items()}, min(self.load, other.load))


def _samples(rounds: list[dict[str, float]]) -> Samples:
    names = rounds[0].keys() if rounds else ()
    return Samples({name: [r[name] for r in rounds] for name in names}, os.getloadavg()[0])


def _one_round(probes: Probes) -> dict[str, float]:
    return {name: once() for name, once in probes.items()}


def idle(probes: Probes, count: int = 7) -> Samples:
    return _samples([_one_round(probes) for _ in range(count)])


def during(probes: Probes, action: Callable[[], T]) -> tuple[Samples, T]:
    """The probes run again and again while `action()` runs; the action's result too."""
    busy = Sampler(lambda: _one_round(probes))
    busy.start()
    try:
        result = action()
    finally:
        rounds = busy.stop()
    if not rounds:
        raise RuntimeError("the action ended before one round of probes finished")
    return _samples(rounds), result
