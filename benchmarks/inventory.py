"""How long `containerd-migrate plan` takes on a host with many images and containers.

    .venv/bin/python benchmarks/inventory.py [--engine 28] [--images 200] [--containers 50]

Builds the host in a private sandbox engine (bulk images in one `docker load`, containers
made with `docker create` and never started, a few named volumes), times the plan
(`plan --format json`, in-process and as a separate CLI process), checks that it counted
everything, and compares it with the plain docker CLI reading the same facts:
`docker image ls` + `docker image inspect` of every image + `docker ps -a` + `docker volume ls`
(the CLI runs and the docker CLI runs alternate). `plan` reads more than that (every
container's inspect, `ctr`, `dockerd --validate`) but reads the image configs from the
legacy store on disk instead of inspecting each image.
The sandbox is destroyed at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from migrate.commands.context import GlobalOptions
from migrate.commands.plan import PlanArgs, make_report
from migrate.preflight.render import render
from migrate.preflight.report import PlanReport
from migrate.sandbox import BASE_DIR, Sandbox, build_bulk_images, docker

# Goal (issue 12): plan as a CLI process under 3 s on 1,000 images and 300 containers on
# a 2-core machine, and at most 1.5x the docker CLI reading the same facts.
BUDGET_SECONDS = 3.0
MAX_RATIO = 1.5
VOLUMES = 5


def build_host(sandbox: Sandbox, images: int, containers: int) -> list[str]:
    tags = build_bulk_images(sandbox.host, images, workdir=sandbox.dir)
    for v in range(VOLUMES):
        docker(sandbox.host, "volume", "create", f"bench-vol-{v}")

    def create(i: int) -> None:
        docker(sandbox.host, "create", "--name", f"bench-ctr-{i:04d}",
               "-v", f"bench-vol-{i % VOLUMES}:/data", tags[i % len(tags)], "true")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, range(containers)))
    return tags


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


def docker_cli_inventory(host: str) -> int:
    ids = list(dict.fromkeys(docker(host, "image", "ls", "-q", "--no-trunc").stdout.split()))
    docker(host, "image", "inspect", *ids)
    docker(host, "ps", "-a", "--no-trunc")
    docker(host, "volume", "ls")
    return len(ids)


def describe(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["26", "28"], default="28")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the sandbox afterwards")
    args = parser.parse_args(argv)

    sandbox = Sandbox(BASE_DIR / f"bench-inv-{os.getpid()}", args.engine)
    try:
        start = time.perf_counter()
        sandbox.start()
        build_host(sandbox, args.images, args.containers)
        print(f"engine {args.engine}: {args.images} images, {args.containers} containers, "
              f"{VOLUMES} volumes built in {time.perf_counter() - start:.1f} s")

        with tempfile.TemporaryDirectory(prefix="cm-bench-") as tmp:
            state_dir = Path(tmp) / "state"
            report = plan_in_process(sandbox, state_dir)  # warm-up, and the counts
            in_process = timed(lambda: plan_in_process(sandbox, state_dir), args.repeat)
            counted = docker_cli_inventory(sandbox.host)
            # Interleaved, so that other load on the machine weighs on both alike.
            cli, baseline = [], []
            for _ in range(args.repeat):
                cli += timed(lambda: plan_cli(sandbox, state_dir), 1)
                baseline += timed(lambda: docker_cli_inventory(sandbox.host), 1)

        images, containers = len(report.images), len(report.containers)
        print(f"load average during the run: {os.getloadavg()[0]:.2f}")
        print(f"plan counted {images} images ({sum(len(i.tags) for i in report.images)} tags), "
              f"{containers} containers, {len(report.volumes)} volumes")
        print(f"plan --format json, in-process:   {describe(in_process)}")
        print(f"plan --format json, CLI process:  {describe(cli)}")
        print(f"docker CLI ({counted} images inspected): {describe(baseline)}")
        ratio = statistics.median(in_process) / statistics.median(baseline)
        cli_ratio = statistics.median(cli) / statistics.median(baseline)
        print(f"ratio plan (in-process) / docker CLI: {ratio:.2f}")
        print(f"ratio plan (CLI process) / docker CLI: {cli_ratio:.2f}")
        ok = (images == args.images and containers == args.containers
              and statistics.median(cli) < BUDGET_SECONDS and cli_ratio <= MAX_RATIO)
        print("OK" if ok else f"FAILED: expected {args.images} images, {args.containers} "
              f"containers, a plan under {BUDGET_SECONDS:g} s and at most {MAX_RATIO:g}x the "
              "docker CLI")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept: {sandbox.dir} (DOCKER_HOST={sandbox.host})")
        else:
            sandbox.destroy()


if __name__ == "__main__":
    sys.exit(main())
