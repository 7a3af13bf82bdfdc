"""Downtime per running container under `run --containers recreate`, against the docker CLI.

    .venv/bin/python benchmarks/recreate_downtime.py [--engine 28] [--containers 20] [--stage]
                                                     [--png benchmarks/recreate_downtime.png]

Builds a host with N running containers (static busybox image, a named volume each, half of
them on a user-defined network with an alias) in a private sandbox engine, then measures:

1. the plain docker CLI doing the least a recreate needs, container by container, in the
   same store: `docker stop`, `docker rename` (to keep the old one), `docker create` with
   the same options, `docker start`; downtime = stop issued -> start returned;
2. `containerd-migrate run --containers recreate` on the same host: downtime = the moment
   quiesce stopped the container -> the moment recreate had it running again (both from
   reports/container-map.json and the journal). This spans the whole window (commit,
   switch, daemon restart, import, verify); the recreate phase's own share (phase start ->
   running again) is printed too. With `--stage`, `containerd-migrate stage` runs first
   (before the window), so the window is the restart, verification and the recreate.

Between the two, the docker CLI stops every container in one `docker stop` (the CLI stops
50 at a time): the least a stop of the whole host costs on this daemon, which no tool that
stops containers through the daemon beats (printed next to the quiesce phase), then starts
them again (untimed).

Prints median, p95 and max, the daemon restart's own duration (issue 19's goal: every
container's downtime <= the restart + 2 s with stage), the load average, and with --png a
figure of each container's downtime in the order they were running again.

The sandbox is destroyed at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.harness import bench_parser, run_in_sandbox
from migrate.journal import PhaseName, replay
from migrate.sandbox import BASE_DIR, Sandbox, build_sample_host, docker

BUSY_LOOP = 'trap "exit 0" TERM; sleep 3600 & wait'
IMAGE = "cm-sample/base:1"


def _options(i: int) -> list[str]:
    opts = ["--name", f"bench-{i:02d}", "--restart", "unless-stopped", "-e", f"N={i}",
            "-v", f"bench-vol-{i:02d}:/data"]
    if i % 2 == 0:
        opts += ["--network", "benchnet", "--network-alias", f"svc{i}"]
    return opts


def build_host(sandbox: Sandbox, containers: int) -> None:
    build_sample_host(sandbox.host, big_layer_bytes=1024, workdir=sandbox.dir)
    docker(sandbox.host, "network", "create", "--subnet", "10.97.0.0/24", "benchnet")
    for i in range(containers):
        docker(sandbox.host, "run", "-d", *_options(i), IMAGE, "sh", "-c", BUSY_LOOP)


def docker_cli_downtimes(sandbox: Sandbox, containers: int) -> list[float]:
    downtimes = []
    for i in range(containers):
        name = f"bench-{i:02d}"
        start = time.perf_counter()
        docker(sandbox.host, "stop", "-t", "10", name)
        docker(sandbox.host, "rename", name, f"{name}-old")
        docker(sandbox.host, "create", *_options(i), IMAGE, "sh", "-c", BUSY_LOOP)
        docker(sandbox.host, "start", name)
        downtimes.append(time.perf_counter() - start)
        docker(sandbox.host, "rm", f"{name}-old")
    return downtimes


def docker_cli_stop_all(sandbox: Sandbox, containers: int) -> float:
    names = [f"bench-{i:02d}" for i in range(containers)]
    start = time.perf_counter()
    docker(sandbox.host, "stop", "-t", "10", *names)
    took = time.perf_counter() - start
    docker(sandbox.host, "start", *names)
    return took


WINDOW_PHASES: tuple[PhaseName, ...] = ("quiesce", "commit", "switch", "restart", "import",
                                        "verify", "recreate")


class ToolRun:
    def __init__(self, window: list[float], share: list[float], total: float,
                 phases: dict[str, float]):
        self.window, self.share, self.total, self.phases = window, share, total, phases
        self.restart = phases["restart"]


def _cli(sandbox: Sandbox, state: Path, *args: str) -> None:
    argv = [sys.executable, "-m", "migrate", "-q", "--host", sandbox.host, "--daemon-config",
            str(sandbox.daemon_json), "--state-dir", str(state), *args]
    # `stage` plans too, and a plan needs to know how this daemon restarts.
    env = {**os.environ, "CONTAINERD_MIGRATE_RESTART_COMMAND": _restart(sandbox)}
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({done.returncode}): {done.stderr}")


def _restart(sandbox: Sandbox) -> str:
    return f"{sys.executable} -m migrate.sandbox restart --dir {sandbox.dir}"


def tool_downtimes(sandbox: Sandbox, state: Path, stage: bool) -> ToolRun:
    restart = _restart(sandbox)
    if stage:  # before the window: not timed
        _cli(sandbox, state, "stage", "--containers", "recreate")
    started = time.perf_counter()
    _cli(sandbox, state, "run", "--yes", "--containers", "recreate", "--restart-command",
         restart)
    total = time.perf_counter() - started
    rows = json.loads((state / "reports" / "container-map.json").read_text())
    journal = replay(state / "journal.jsonl")
    phase_start = journal.phase("recreate").started_at
    assert phase_start is not None
    phases: dict[str, float] = {}
    for name in WINDOW_PHASES:
        phase = journal.phase(name)
        if phase.started_at and phase.finished_at:
            phases[name] = (phase.finished_at - phase.started_at).total_seconds()
    ordered = sorted((row for row in rows.values() if row.get("downtime_seconds") is not None),
                     key=lambda row: str(row["running_again_at"]))
    window = [float(row["downtime_seconds"]) for row in ordered]
    share = [(datetime.fromisoformat(row["running_again_at"]) - phase_start).total_seconds()
             for row in ordered]
    return ToolRun(window, share, total, phases)


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 \
        else values[0]


def plot(run: ToolRun, cli: list[float], title: str, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (a dev dependency, only for the figure)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(8, 4))
    axes.plot(range(1, len(run.window) + 1), run.window, "o-", markersize=3,
              label="containerd-migrate: stopped -> running again")
    axes.plot(range(1, len(cli) + 1), cli, "x", markersize=3,
              label="docker CLI stop/rename/create/start")
    axes.axhline(run.restart + 2, linestyle="--", color="grey",
                 label=f"daemon restart + 2 s ({run.restart + 2:.1f} s)")
    axes.set_xlabel("container, in the order it was running again")
    axes.set_ylabel("downtime (s)")
    axes.set_title(title)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _line(label: str, values: list[float]) -> str:
    return (f"{label:<44} median {statistics.median(values):6.2f} s   p95 {_p95(values):6.2f}"
            f"   max {max(values):6.2f}   (n={len(values)})")


def measure(sandbox: Sandbox, args: argparse.Namespace) -> int:
    """Builds the host, measures the docker CLI then the tool, and prints both."""
    build_host(sandbox, args.containers)
    cli = docker_cli_downtimes(sandbox, args.containers)
    stop_all = docker_cli_stop_all(sandbox, args.containers)
    run = tool_downtimes(sandbox, sandbox.dir / "state", args.stage)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    title = (f"engine {args.engine}, {args.containers} running containers, "
             f"{'with' if args.stage else 'without'} stage")
    print(f"{title}; load average {load}")
    print(_line("docker CLI stop/rename/create/start", cli))
    print(_line("containerd-migrate: stopped -> running again", run.window))
    print(_line("  of which: recreate phase start -> running", run.share))
    print("window phases: " + ", ".join(f"{name} {seconds:.2f} s"
                                        for name, seconds in run.phases.items()))
    print(f"docker CLI stopping all {args.containers} in one `docker stop`: {stop_all:.2f} s"
          f" (the tool's quiesce: {run.phases['quiesce']:.2f} s)")
    print(f"daemon restart {run.restart:.2f} s; containers within restart + 2 s: "
          f"{sum(d <= run.restart + 2 for d in run.window)}/{len(run.window)}")
    print(f"containerd-migrate run in all: {run.total:.2f} s; median downtime ratio vs "
          f"the docker CLI: {statistics.median(run.window) / statistics.median(cli):.1f}x")
    if args.png is not None:
        plot(run, cli, title, args.png)
    return 0


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--stage", action="store_true", help="stage before the window")
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    BASE_DIR.mkdir(parents=True, exist_ok=True)  # mkdtemp does not create its parent
    sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="bench-rc-", dir=BASE_DIR)), args.engine)
    # A failed command ends the script through SystemExit (`_cli`), not BenchError; a kept
    # sandbox is not reported (kept=None).
    return run_in_sandbox(sandbox, args.keep, lambda started: measure(started, args), kept=None)


if __name__ == "__main__":
    raise SystemExit(main())
