"""The maintenance window with and without pre-staging, against the image volume.

    .venv/bin/python benchmarks/staging.py [--engine 28] [--sizes 0.5,1,2] [--busy 20]
                                           [--running 1] [--recreate] [--methods abc]
                                           [--png benchmarks/staging.png] [--keep]

For each size, one private sandbox engine (under /tmp/cm-sandbox/bench-stage-*, destroyed at
the end) with 5 images on a shared base holding that many GiB of unique random layer data,
and `--running` running containers (1). One more host of the smallest size runs `--busy`
containers (0: none).
On each host, in one run, three methods from a fresh state dir and an empty containerd
store (the store is emptied and the daemon put back on the legacy store between methods,
untimed; see benchmarks/export_import.py for why the store is emptied):

  (a) `run` alone;
  (b) `export`, then `run`;
  (c) `stage`, then `run`.

The window is what the journal says (its own timestamps: `status` rounds to the second):
from the start of the quiesce phase (the first container stop) to the end of the verify
phase; each phase inside it is printed too. With `--recreate` every method runs with
`--containers recreate` instead of `leave` (issue 19, goal 3: the window with 100
containers recreated): the end of the recreate phase (every container running again) and
each container's downtime are printed as well, and between methods the containerd store's
containers go too. `--methods c` runs (c) alone. Total work adds the preparation command
(export or stage). During (c) on the second host the script also samples the disk use of
the data root's containerd and tmp dirs (peak extra disk against unique layer bytes) and
times a CPU-bound loop inside the running container (`docker exec`) against the same loop
before staging (the slowdown of a busy container). Goal: (c) within restart + verify + 3 s
and flat (largest / smallest size <= 1.2). Exit status 0 whatever the goals say; 1 if a
step failed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.busy import Sampler, idle, probe
from benchmarks.export_import import (
    build_host,
    cli,
    log,
    run_docker,
    set_mode,
    unique_layer_bytes,
)
from benchmarks.harness import (
    BenchError,
    bench_parser,
    bench_sandbox,
    own_path,
    remove_tree,
    run_main,
)
from migrate.journal import PhaseName, PhaseState, StateDir
from migrate.sandbox import BASE_DIR, Sandbox
from migrate.sandbox.samples import BUSY_LOOP

GIB = 1024**3
MIB = 1024**2
IMAGES = 5
SHARED_MIB = 32
GOAL_SLACK_S = 3.0
FLAT_GOAL = 1.2
SAMPLE_EVERY = 0.25
_HOSTS = itertools.count()
WINDOW_PHASES: tuple[PhaseName, ...] = ("quiesce", "commit", "switch", "restart", "import",
                                        "verify", "recreate")


@dataclass
class Outcome:
    method: str
    prepare_s: float
    window_s: float
    phases: dict[str, float]
    load: float
    extra: dict[str, float] = field(default_factory=dict)
    # With --recreate: quiesce start -> recreate end, and each running container's downtime.
    until_running_s: float | None = None
    downtimes: list[float] = field(default_factory=list)

    @property
    def restart_s(self) -> float:
        return self.phases["restart"]

    @property
    def verify_s(self) -> float:
        return self.phases["verify"]

    @property
    def total_s(self) -> float:
        return self.prepare_s + self.window_s


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        raise BenchError("a phase has no start or end time in the journal")
    return (end - start).total_seconds()


def _window_phases(state: Path) -> dict[str, PhaseState]:
    with StateDir(state).journal() as journal:
        return {p.name: p for p in journal.state().phases}


def _flush_seconds(stage_result: dict[str, Any] | None) -> float:
    return float(((stage_result or {}).get("flushed") or {}).get("seconds", 0.0))


@dataclass
class Window:
    seconds: float
    phases: dict[str, float]
    staged: dict[str, Any]
    until_running: float


def _window(state: Path) -> Window:
    """The window, each window phase's seconds, the stage result, and quiesce start ->
    recreate end, from the journal."""
    phases = _window_phases(state)
    inside: dict[str, float] = {
        name: _seconds(phases[name].started_at, phases[name].finished_at)
        for name in WINDOW_PHASES if phases[name].started_at is not None}
    return Window(_seconds(phases["quiesce"].started_at, phases["verify"].finished_at), inside,
                  dict(phases["stage"].result or {}),
                  _seconds(phases["quiesce"].started_at, phases["recreate"].finished_at))


def _downtimes(state: Path) -> list[float]:
    rows = json.loads((state / "reports" / "container-map.json").read_text())
    return [float(row["downtime_seconds"]) for row in rows.values()
            if row.get("downtime_seconds") is not None]


def _checked(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        raise BenchError(f"{what} exited {done.returncode}: {done.stderr[-2000:]}")


def _reset(sandbox: Sandbox, containers: list[str]) -> None:
    if sandbox.containerd_snapshotter():
        # What a recreate made: left there, the next method's recreate would find containers
        # of that name it did not create (and the store is emptied below).
        for found in sandbox.api("/containers/json", all="1"):
            run_docker(sandbox, "rm", "-f", found["Id"])
    set_mode(sandbox, {})
    if containers:
        run_docker(sandbox, "start", *containers)


def _du(paths: list[Path]) -> int:
    total = 0
    for root in paths:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def method(sandbox: Sandbox, name: str, state: Path, containers: list[str],
           measure: bool = False, policy: str = "leave") -> Outcome:
    _reset(sandbox, containers)
    restart = f"{sys.executable} -m migrate.sandbox restart --dir {sandbox.dir}"
    prepare = {"a": None, "b": "export", "c": "stage"}[name]
    extra: dict[str, float] = {}
    prepare_s = 0.0
    if prepare:
        if measure:
            once = probe(sandbox, containers[0])
            calm = idle({"cpu": once}).median("cpu")
            disk_paths = [sandbox.data_root / "containerd", sandbox.data_root / "tmp"]
            disk_before = _du(disk_paths)
            disk = Sampler(lambda: float(_du(disk_paths)), SAMPLE_EVERY)
            busy = Sampler(once)
            disk.start()
            busy.start()
        started = time.perf_counter()
        _checked(cli(sandbox, state, prepare, "--containers", policy,
                     "--restart-command", restart), prepare)
        prepare_s = time.perf_counter() - started
        if prepare == "stage":
            extra["stage_flush_s"] = _flush_seconds(_window_phases(state)["stage"].result)
        if measure:
            during = busy.stop()
            peaks = disk.stop()
            extra |= {"probe_idle_s": calm, "probe_during_s": statistics.median(during),
                     "probes": len(during), "disk_peak": max(peaks) - disk_before,
                     "disk_after": _du(disk_paths) - disk_before}
    _checked(cli(sandbox, state, "run", "--yes", "--containers", policy,
                 "--restart-command", restart), f"run after {prepare or 'nothing'}")
    window = _window(state)
    if prepare == "stage":
        extra["run_flush_s"] = _flush_seconds(window.staged)
    recreated = policy == "recreate"
    return Outcome(method=name, prepare_s=prepare_s, window_s=window.seconds,
                   phases=window.phases, load=os.getloadavg()[0], extra=extra,
                   until_running_s=window.until_running if recreated else None,
                   downtimes=_downtimes(state) if recreated else [])


@dataclass
class Host:
    label: str
    gib: float
    unique: int
    containers: int
    outcomes: dict[str, Outcome]

    @property
    def plain(self) -> bool:
        """One of the size hosts (not the extra busy one)."""
        return not self.label.endswith("(busy)")


@dataclass(frozen=True)
class Plan:
    engine: str
    workdir: Path
    keep: bool
    methods: str
    policy: str


def measure_host(plan: Plan, gib: float, containers: int, measure: bool, busy: bool = False,
                 ) -> Host:
    # One name per host of this run: a reused name would also reuse a finished state dir.
    sandbox = Sandbox(BASE_DIR / f"bench-stage-{os.getpid()}-{next(_HOSTS)}", plan.engine)
    with bench_sandbox(sandbox, plan.keep, kept=lambda sandbox: f"kept: {sandbox.dir}"):
        tags = build_host(sandbox, int(gib * GIB), IMAGES, SHARED_MIB * MIB)
        unique = unique_layer_bytes(sandbox, tags)
        names = [f"cm-bench-run-{i:02d}" for i in range(containers)]
        for i, name in enumerate(names):
            run_docker(sandbox, "run", "-d", "--restart", "always", "--name", name,
                       tags[i % len(tags)], "sh", "-c", BUSY_LOOP)
        outcomes = {}
        for key in plan.methods:
            state = plan.workdir / f"{sandbox.dir.name}-{key}"
            if state.exists():
                raise BenchError(f"{state} exists already: each method needs a fresh state dir")
            outcomes[key] = method(sandbox, key, state, names, measure=measure and key == "c",
                                   policy=plan.policy)
            o = outcomes[key]
            log(f"{gib:g} GiB, {containers} container(s), ({key}): prepare {o.prepare_s:.1f} s, "
                f"window {o.window_s:.2f} s ({_inside(o)}); load average {o.load:.2f}")
        label = f"{unique / GIB:.2f} GiB" + (f", {containers} running" if containers > 1 else "")
        return Host(label + (" (busy)" if busy else ""), gib, unique, containers, outcomes)


def _inside(o: Outcome) -> str:
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in o.phases.items()
                     if seconds >= 0.005)


def _cell(h: Host, key: str, what: str) -> str:
    o = h.outcomes.get(key)
    return "-" if o is None else f"{getattr(o, what):.1f}s"


def report(hosts: list[Host]) -> None:
    print(f"\n{'host':<30} {'(a) run':>8} {'(b) window':>10} {'(c) window':>10} "
          f"{'restart+verify+3s':>18} {'(b) total':>9} {'(c) total':>9}")
    for h in hosts:
        c = h.outcomes["c"]
        goal = c.restart_s + c.verify_s + GOAL_SLACK_S
        print(f"{h.label:<30} {_cell(h, 'a', 'window_s'):>8} {_cell(h, 'b', 'window_s'):>10} "
              f"{c.window_s:>9.2f}s {goal:>17.1f}s {_cell(h, 'b', 'total_s'):>9} "
              f"{c.total_s:>8.1f}s")
        versus = "".join(f", (c)/({k}) window {c.window_s / h.outcomes[k].window_s:.2f}"
                         for k in "ab" if k in h.outcomes)
        print(f"    {'PASS' if c.window_s <= goal else 'MISS'} (c) window within restart + "
              f"verify + 3 s{versus}")
        flush = (f"; final flush of `stage` {c.extra['stage_flush_s']:.2f} s, of the re-stage "
                 f"in `run` {c.extra['run_flush_s']:.2f} s" if "run_flush_s" in c.extra else "")
        print(f"    (c) window {c.window_s:.2f} s = {_inside(c)} (s){flush}; load average "
              f"{c.load:.2f}")
        if c.until_running_s is not None and c.downtimes:
            within = sum(d <= c.restart_s + 2 for d in c.downtimes)
            print(f"    (c) every container running again {c.until_running_s:.2f} s after the "
                  f"first stop; downtime median {statistics.median(c.downtimes):.2f} s, max "
                  f"{max(c.downtimes):.2f} s; within restart + 2 s: {within}/{len(c.downtimes)}")
    plain = [h for h in hosts if h.plain]
    if len(plain) >= 2:
        small, large = plain[0], plain[-1]
        for key in small.outcomes:
            ratio = large.outcomes[key].window_s / small.outcomes[key].window_s
            verdict = f" ({'PASS' if ratio <= FLAT_GOAL else 'MISS'} <= {FLAT_GOAL})" if (
                key == "c") else ""
            print(f"window ({key}) {large.label} / {small.label}: {ratio:.2f}{verdict}")
    for h in hosts:
        extra = h.outcomes["c"].extra
        if "probe_idle_s" in extra:
            slowdown = extra["probe_during_s"] / extra["probe_idle_s"]
            print(f"\nduring `stage` on {h.label}: a CPU loop in a running container took "
                  f"{extra['probe_during_s'] * 1000:.0f} ms (median of {extra['probes']:.0f}) "
                  f"vs {extra['probe_idle_s'] * 1000:.0f} ms idle: {slowdown:.2f}x")
            print(f"disk: peak extra {extra['disk_peak'] / GIB:.2f} GiB = "
                  f"{extra['disk_peak'] / h.unique:.2f}x the unique layer bytes; after staging "
                  f"{extra['disk_after'] / GIB:.2f} GiB = {extra['disk_after'] / h.unique:.2f}x")


def plot(hosts: list[Host], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (a dev dependency, only for the figure)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plain = [h for h in hosts if h.plain]
    gib = [h.unique / GIB for h in plain]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    labels = {"a": "(a) run alone", "b": "(b) export, then run", "c": "(c) stage, then run"}
    for key, marker in zip("abc", "os^", strict=True):
        if key not in plain[0].outcomes:
            continue
        ax.plot(gib, [h.outcomes[key].window_s for h in plain], marker=marker, label=labels[key])
    ax.plot(gib, [h.outcomes["c"].restart_s + h.outcomes["c"].verify_s + GOAL_SLACK_S
                  for h in plain], linestyle=":", color="grey",
            label="goal: restart + verify + 3 s")
    ax.set_xlabel("unique layer data (GiB)")
    ax.set_ylabel("window: first container stop to verified (s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Maintenance window against image volume (Engine 28.5, 2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nfigure: {path}")


def measure_all(plan: Plan, args: argparse.Namespace, sizes: list[float], begun: float) -> int:
    """Measures every host, one sandbox each, then prints the report and draws the figure."""
    hosts = [measure_host(plan, gib, args.running, measure=i == 1)
             for i, gib in enumerate(sizes)]
    if args.busy > 1:
        hosts.append(measure_host(plan, sizes[0], args.busy, measure=False, busy=True))
    print(f"\nengine {args.engine} on {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; containers {plan.policy}")
    report(hosts)
    plot(hosts, args.png)
    print(f"\nbenchmark wall time {time.perf_counter() - begun:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--sizes", default="0.5,1,2", help="GiB of unique data per host")
    parser.add_argument("--running", type=int, default=1,
                        help="running containers on each size host")
    parser.add_argument("--busy", type=int, default=20,
                        help="running containers on the extra host of the smallest size "
                             "(0: no such host)")
    parser.add_argument("--recreate", action="store_true",
                        help="--containers recreate instead of leave")
    parser.add_argument("--methods", default="abc", help="which of (a), (b), (c); c always")
    parser.add_argument("--png", type=Path, default=Path(__file__).with_name("staging.png"))
    parser.add_argument("--keep", action="store_true", help="keep the sandboxes afterwards")
    args = parser.parse_args(argv)
    if not set(args.methods) <= set("abc") or "c" not in args.methods:
        parser.error("--methods takes some of a, b, c, and c")
    sizes = [float(s) for s in args.sizes.split(",")]
    begun = time.perf_counter()
    plan = Plan(args.engine, own_path("bench-stage-state"), args.keep,
                "".join(k for k in "abc" if k in args.methods),
                "recreate" if args.recreate else "leave")
    try:
        return run_main(lambda: measure_all(plan, args, sizes, begun))
    finally:
        remove_tree(plan.workdir)


if __name__ == "__main__":
    sys.exit(main())
