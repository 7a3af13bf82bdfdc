"""How much a busy container on the live daemon slows down while `rehearse` runs, against
the same during `stage` and idle, in one run.

    .venv/bin/python benchmarks/rehearse.py [--engine 28] [--gib 1] [--keep]

One private sandbox engine (under /tmp/cm-sandbox/bench-rehearse-*, destroyed at the end)
with 5 images on a shared base holding --gib GiB of unique random layer data and one running
container. Inside that container two probes run one after the other, again and again
(benchmarks/busy.py): a CPU loop in its shell, and 8 MiB written to its writable layer with
fsync; each is timed from outside, `docker exec` included. In this order: idle, during
`rehearse --format json` (its throwaway engine, `docker save` from the live daemon into
archives, `docker load` into the throwaway engine, verification, creates), idle again,
during `stage` (`docker save` streamed into `ctr import` on the live containerd). The
slowdown is the median probe time during a command over the median of both idle runs
(2.0: the container's work rate halved). Exit status 0 whatever the figures; 1 if a step
failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.busy import CPU_LOOP, IO_WRITE, Samples, during, idle, probe
from benchmarks.export_import import (
    build_host,
    cli,
    log,
    run_docker,
    unique_layer_bytes,
)
from benchmarks.harness import BenchError, bench_parser, own_path, run_in_sandbox
from migrate.sandbox import Sandbox
from migrate.sandbox.samples import BUSY_LOOP

GIB = 1024**3
MIB = 1024**2
IMAGES = 5
SHARED_MIB = 32
BUSY = "cm-bench-busy"
IDLE_ROUNDS = 7


def _checked(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        raise BenchError(f"{what} exited {done.returncode}: {done.stderr[-2000:]}")


def _timed(action: Any) -> Any:
    def run() -> tuple[float, Any]:
        started = time.perf_counter()
        result = action()
        return time.perf_counter() - started, result
    return run


def measure(sandbox: Sandbox, state: Path) -> dict[str, Any]:
    """Idle, rehearse, idle, stage: each command's samples, seconds and what it reported."""
    probes = {"cpu": probe(sandbox, BUSY, CPU_LOOP), "io": probe(sandbox, BUSY, IO_WRITE)}
    restart = f"{sys.executable} -m migrate.sandbox restart --dir {sandbox.dir}"
    calm = idle(probes, IDLE_ROUNDS)
    log(f"idle: cpu {calm.median('cpu') * 1000:.0f} ms, io {calm.median('io') * 1000:.0f} ms")
    rehearsed, (rehearse_s, done) = during(probes, _timed(
        lambda: cli(sandbox, state, "rehearse", "--format", "json")))
    _checked(done, "rehearse")
    report = json.loads(done.stdout)
    log(f"rehearse: {rehearse_s:.1f} s, {rehearsed.rounds} probe rounds")
    calm = calm.merged(idle(probes, IDLE_ROUNDS))
    staged, (stage_s, done) = during(probes, _timed(
        lambda: cli(sandbox, state, "stage", "--containers", "leave", "--restart-command",
                    restart)))
    _checked(done, "stage")
    log(f"stage: {stage_s:.1f} s, {staged.rounds} probe rounds")
    return {"idle": calm, "rehearse": rehearsed, "stage": staged, "rehearse_s": rehearse_s,
            "stage_s": stage_s, "report": report}


def report(found: dict[str, Any], unique_gib: float, engine: str) -> None:
    calm: Samples = found["idle"]
    print(f"\nengine {engine} on {os.cpu_count()} CPUs; {unique_gib:.2f} GiB of unique layer "
          f"data; a busy container's probes (median, docker exec included)")
    print(f"{'while':<10} {'seconds':>8} {'rounds':>6} {'cpu ms':>7} {'io ms':>7} "
          f"{'cpu x':>6} {'io x':>6} {'load':>5}")
    for name in ("idle", "rehearse", "stage"):
        samples: Samples = found[name]
        seconds = f"{found[name + '_s']:.1f}" if name != "idle" else "-"
        print(f"{name:<10} {seconds:>8} {samples.rounds:>6} {samples.median('cpu') * 1000:>7.0f} "
              f"{samples.median('io') * 1000:>7.0f} {samples.slowdown('cpu', calm):>6.2f} "
              f"{samples.slowdown('io', calm):>6.2f} {samples.load:>5.2f}")
    rehearsed, staged = found["rehearse"], found["stage"]
    print(f"\nslowdown of the busy container: rehearse cpu "
          f"{rehearsed.slowdown('cpu', calm):.2f}x, io {rehearsed.slowdown('io', calm):.2f}x; "
          f"stage cpu {staged.slowdown('cpu', calm):.2f}x, io {staged.slowdown('io', calm):.2f}x")
    print(f"rehearse / stage: cpu {rehearsed.median('cpu') / staged.median('cpu'):.2f}, "
          f"io {rehearsed.median('io') / staged.median('io'):.2f}; command time "
          f"{found['rehearse_s'] / found['stage_s']:.2f}")
    figures = found["report"]["figures"]
    print(f"rehearsal's own figures: engine start {figures['engine_start_seconds']} s, save "
          f"{figures['save_seconds']} s, load {figures['load_seconds']} s "
          f"({figures['load_mbps']} MB/s), verify {figures['verify_seconds']} s, window "
          f"{figures['window_seconds']} s, run {figures['run_seconds']} s")


def measure_all(sandbox: Sandbox, state: Path, args: argparse.Namespace, begun: float) -> int:
    """Builds the host with its busy container, measures and prints the report."""
    tags = build_host(sandbox, int(args.gib * GIB), IMAGES, SHARED_MIB * MIB)
    run_docker(sandbox, "run", "-d", "--name", BUSY, tags[0], "sh", "-c", BUSY_LOOP)
    found = measure(sandbox, state)
    report(found, unique_layer_bytes(sandbox, tags) / GIB, args.engine)
    print(f"\nbenchmark wall time {time.perf_counter() - begun:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--gib", type=float, default=1.0, help="GiB of unique layer data")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox afterwards")
    args = parser.parse_args(argv)
    begun = time.perf_counter()
    # Short: the rehearsal's sockets live under the state dir and must fit in 108 bytes.
    state = own_path("bench-rh")
    return run_in_sandbox(Sandbox(own_path("bench-rehearse"), args.engine), args.keep,
                          lambda sandbox: measure_all(sandbox, state, args, begun),
                          kept=lambda sandbox: f"kept: {sandbox.dir}, {state}",
                          also_removed=state)


if __name__ == "__main__":
    sys.exit(main())
