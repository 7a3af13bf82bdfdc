"""How long reading a host with many images and containers takes: `plan` and the snapshot.

    .venv/bin/python benchmarks/inventory.py [--engine 28] [--sizes 1000x300,5000x1000] [--repeat 3]

Builds the host in a private sandbox engine (bulk images in one `docker load`, containers
made with `docker create` and never started, a few named volumes), grown from one size
(images x containers) to the next, and at each size times, in rounds that alternate them:
`plan --format json` in-process and as a separate CLI process; the snapshot phase's reading
of the host (`phases.snapshot.prepare_plan`, the facts and plan a `run` stores, in-process:
`containerd-migrate` cannot run the snapshot alone); and the plain docker CLI reading the
same facts: `docker image ls` + `docker image inspect` of every image + `docker ps -a` +
`docker volume ls`. `plan` reads more than that (every container's inspect, `ctr`, `dockerd
--validate`) but reads the image configs from the legacy store on disk instead of
inspecting each image; so does the snapshot. Each measure's growth factor is its time at the
largest size over its time at the smallest.
The sandbox is destroyed at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import bench_parser, own_path, run_in_sandbox
from migrate.commands.context import GlobalOptions
from migrate.commands.plan import PlanArgs, make_report
from migrate.engine import Engine
from migrate.host.restart_command import parse_restart_command
from migrate.phases.base import RunOptions
from migrate.phases.snapshot import prepare_plan
from migrate.preflight.render import render
from migrate.preflight.report import PlanReport
from migrate.sandbox import Sandbox, build_bulk_images, docker

# Goals (issue 19), at the largest size (5,000 images and 1,000 containers on a 2-core
# machine): plan as a CLI process no slower than the docker CLI reading the same facts, and
# the snapshot's reading of the host at most 1.5x plan's (both in-process). They replace
# issue 12's (1,000 images and 300 containers: under 3 s and at most 1.5x the docker CLI).
MAX_PLAN_RATIO = 1.0
MAX_SNAPSHOT_RATIO = 1.5
VOLUMES = 5
MEASURES = {
    "plan_in_process": "plan --format json, in-process",
    "plan_cli": "plan --format json, CLI process",
    "snapshot": "snapshot's inventory, in-process",
    "docker_cli": "docker CLI",
}


@dataclass(frozen=True)
class Size:
    images: int
    containers: int

    @classmethod
    def parse(cls, text: str) -> Size:
        images, _, containers = text.partition("x")
        if not (images.isdigit() and containers.isdigit() and int(images) > 0):
            raise argparse.ArgumentTypeError(
                f"{text!r}: a size is IMAGESxCONTAINERS, at least one image, e.g. 1000x300")
        return cls(int(images), int(containers))

    def __str__(self) -> str:
        return f"{self.images}x{self.containers}"


@dataclass
class Measured:
    size: Size
    load: float = 0.0
    times: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MEASURES})

    def median(self, measure: str) -> float:
        return statistics.median(self.times[measure])

    def ratio(self, measure: str, against: str) -> float:
        return self.median(measure) / self.median(against)


def sizes_argument(text: str) -> list[Size]:
    sizes = sorted({Size.parse(part) for part in text.split(",") if part},
                   key=lambda s: (s.images, s.containers))
    for smaller, larger in itertools.pairwise(sizes):
        if larger.containers < smaller.containers:
            raise argparse.ArgumentTypeError(
                "the host grows from one size to the next: containers must not shrink")
    return sizes


def grow_host(sandbox: Sandbox, have: Size, want: Size, tags: list[str]) -> None:
    """Add images and containers until the sandbox holds `want` (it holds `have`, whose
    image tags are `tags`; the new ones are added to it)."""
    if want.images > have.images:
        # Each step loads its images under a prefix of its own: tags stay unique.
        tags += build_bulk_images(sandbox.host, want.images - have.images,
                                  prefix=f"cm-bulk/app{want.images}", workdir=sandbox.dir)
    if have.images == 0:
        for v in range(VOLUMES):
            docker(sandbox.host, "volume", "create", f"bench-vol-{v}")

    def create(i: int) -> None:
        docker(sandbox.host, "create", "--name", f"bench-ctr-{i:04d}",
               "-v", f"bench-vol-{i % VOLUMES}:/data", tags[i % len(tags)], "true")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, range(have.containers, want.containers)))


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def plan_in_process(sandbox: Sandbox, state_dir: Path) -> PlanReport:
    opts = GlobalOptions(host=sandbox.host, daemon_config=sandbox.daemon_json,
                         state_dir=state_dir)
    report = make_report(opts, PlanArgs(fmt="json", containers="leave",
                                        restart_command=sandbox.restart_command))
    render(report, "json")
    return report


def plan_cli(sandbox: Sandbox, state_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "migrate", "--host", sandbox.host,
         "--daemon-config", str(sandbox.daemon_json), "--state-dir", str(state_dir),
         "plan", "--format", "json", "--containers", "leave",
         "--restart-command", sandbox.restart_command],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"plan exited {done.returncode}: {done.stderr}")
    PlanReport.model_validate_json(done.stdout)


def snapshot_inventory(sandbox: Sandbox, state_dir: Path) -> PlanReport:
    """What the snapshot phase does to read the host: its plan, from facts read now."""
    options = RunOptions(host=sandbox.host, daemon_config=sandbox.daemon_json,
                         state_dir=state_dir, containers="leave",
                         restart_command=parse_restart_command(sandbox.restart_command))
    prepared = prepare_plan(options, lambda: Engine(sandbox.host))
    render(prepared.report, "json")  # the snapshot stores it as reports/plan.json
    prepared.facts.inventory.model_dump_json(indent=1)  # ... and this as inventory.json
    return prepared.report


def docker_cli_inventory(host: str) -> int:
    ids = list(dict.fromkeys(docker(host, "image", "ls", "-q", "--no-trunc").stdout.split()))
    docker(host, "image", "inspect", *ids)
    docker(host, "ps", "-a", "--no-trunc")
    docker(host, "volume", "ls")
    return len(ids)


def describe(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})"


def counted(report: PlanReport, size: Size) -> bool:
    return (len(report.images), len(report.containers)) == (size.images, size.containers)


def measure(sandbox: Sandbox, size: Size, repeat: int, state_dir: Path) -> Measured:
    """Every measure `repeat` times, one of each per round, so that other load on the
    machine weighs on all alike; after one warm-up of each, which also checks the counts."""
    runs: dict[str, Callable[[], object]] = {
        "plan_in_process": lambda: plan_in_process(sandbox, state_dir),
        "plan_cli": lambda: plan_cli(sandbox, state_dir),
        "snapshot": lambda: snapshot_inventory(sandbox, state_dir),
        "docker_cli": lambda: docker_cli_inventory(sandbox.host),
    }
    plan, snapshot = plan_in_process(sandbox, state_dir), snapshot_inventory(sandbox, state_dir)
    seen = docker_cli_inventory(sandbox.host)
    plan_cli(sandbox, state_dir)
    if not (counted(plan, size) and counted(snapshot, size) and seen == size.images):
        raise SystemExit(f"{size}: plan counted {len(plan.images)} images and "
                         f"{len(plan.containers)} containers, the snapshot "
                         f"{len(snapshot.images)} and {len(snapshot.containers)}, "
                         f"the docker CLI {seen} images")
    measured = Measured(size)
    for _ in range(repeat):
        for name, run in runs.items():
            measured.times[name] += timed(run, 1)
    measured.load = os.getloadavg()[0]
    return measured


def print_size(measured: Measured) -> None:
    size = measured.size
    print(f"{size.images} images, {size.containers} containers, {VOLUMES} volumes "
          f"(load average {measured.load:.2f})")
    for name, label in MEASURES.items():
        print(f"  {label + ':':36} {describe(measured.times[name])}")
    print(f"  ratio plan (CLI process) / docker CLI:   "
          f"{measured.ratio('plan_cli', 'docker_cli'):.2f}")
    print(f"  ratio plan (in-process) / docker CLI:    "
          f"{measured.ratio('plan_in_process', 'docker_cli'):.2f}")
    print(f"  ratio snapshot / plan (both in-process): "
          f"{measured.ratio('snapshot', 'plan_in_process'):.2f}")


def print_growth(smallest: Measured, largest: Measured) -> None:
    print(f"growth factor (time at {largest.size} / time at {smallest.size}):")
    for name, label in MEASURES.items():
        print(f"  {label + ':':36} {largest.median(name) / smallest.median(name):.2f}")


def goals_met(largest: Measured) -> bool:
    plan_ratio = largest.ratio("plan_cli", "docker_cli")
    snapshot_ratio = largest.ratio("snapshot", "plan_in_process")
    checks = [
        (f"plan (CLI process) / docker CLI at {largest.size}", plan_ratio, MAX_PLAN_RATIO),
        (f"snapshot / plan (in-process) at {largest.size}", snapshot_ratio, MAX_SNAPSHOT_RATIO),
    ]
    for what, ratio, most in checks:
        print(f"{what}: {ratio:.2f}, goal <= {most:g}: {'PASS' if ratio <= most else 'MISS'}")
    return all(ratio <= most for _, ratio, most in checks)


def measure_sizes(sandbox: Sandbox, args: argparse.Namespace, started: float) -> int:
    """Grows the host through every size, measures and prints each; 1 if a goal is missed."""
    results: list[Measured] = []
    have, tags = Size(0, 0), list[str]()
    with tempfile.TemporaryDirectory(prefix="cm-bench-") as tmp:
        for size in args.sizes:
            start = time.perf_counter()
            grow_host(sandbox, have, size, tags)
            have = size
            print(f"engine {args.engine}: grown to {size} in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            results.append(measure(sandbox, size, args.repeat, Path(tmp) / "state"))
            print_size(results[-1])
    if len(results) > 1:
        print_growth(results[0], results[-1])
    ok = goals_met(results[-1])
    print(f"benchmark wall time {time.perf_counter() - started:.0f} s")
    print("OK" if ok else "FAILED: a goal was missed")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--sizes", type=sizes_argument, default=[Size(200, 50)],
                        help="IMAGESxCONTAINERS[,...], e.g. 1000x300,5000x1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the sandbox afterwards")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    return run_in_sandbox(Sandbox(own_path("bench-inv"), args.engine), args.keep,
                          lambda sandbox: measure_sizes(sandbox, args, started))


if __name__ == "__main__":
    sys.exit(main())
