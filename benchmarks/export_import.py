"""Export + import throughput of containerd-migrate against plain `docker save` / `docker load`.

    .venv/bin/python benchmarks/export_import.py [--engine 28] [--gib 1.0] [--images 6]
                                                 [--shared-mib 64] [--rounds 6] [--keep]

Builds one host in a private sandbox engine (under /tmp/cm-sandbox/bench-*, destroyed at the
end): `--images` images on a shared base (a busybox root filesystem layer plus a shared
random layer of `--shared-mib` MiB), each with one random layer of its own, `--gib` GiB of
them in all. Then measures, on that same host and in one run, `--rounds` times each:

  (a) a shell-style loop: `docker save -o` per tag (legacy store), then, after the switch,
      `docker load -i` per archive (containerd store);
  (b) one `docker save -o` of every tag into one archive, then one `docker load -i`;
  ours: the real CLI, `containerd-migrate run --yes --containers leave --restart-command
      "<python> -m migrate.sandbox restart --dir D"` from a fresh state dir; the durations of
      its export and import phases and the bytes it wrote come from the journal
      (`status --format json`).

Fairness:
- Every load goes into an EMPTY containerd store: whenever the daemon is restarted (before
  each save, each load and each `run`) the managed containerd's state (DATA_ROOT/containerd)
  is deleted while it is stopped, so no method finds blobs or snapshots another one left
  behind (removing images in cd mode may keep content until containerd's garbage collector
  runs). Legacy images are untouched. Doing it before the saves too gives every timed step
  the same start: a fresh daemon, just after the same kind of deletion. (Without it, on this
  VM, a `docker save` right after a cd-mode load was often 50-60% slower, the extra being
  system CPU in the writing process; most likely memory the hypervisor had reclaimed from
  the guest's page cache being faulted back in. Ours always ran after such a deletion.)
- Switching store (daemon.json `{}` <-> the containerd-snapshotter flag, then a restart) and
  emptying the store are never timed; ours' own switch and restart are outside its total.
- All archives go under the sandbox directory: one filesystem.
- Dirty pages are flushed (`sync`, untimed) before every timed step, so no method pays for
  the previous one's writeback. Both the docker CLI (`save -o`) and ours fsync the archive.
- The page cache is not dropped: the host was just built, its layers are hot for everyone.
- Order: the methods rotate (ours, a, b / a, b, ours / b, ours, a ...), so over 6 rounds
  each is first, second and last twice; before each method the previous one's archives are
  deleted. Methods are compared on medians over the rounds and on the median of per-round
  ratios.
- "client CPU" is the CPU time of the client processes (docker CLI, or containerd-migrate
  and its restart hook); the daemon's own CPU is not in it.

Exit status is 0 whatever the targets say (a benchmark, not a test); 1 if a step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchError, bench_parser, own_path, run_in_sandbox
from migrate.sandbox import Sandbox, docker
from migrate.sandbox.fetch import docker_cli
from migrate.sandbox.layers import ArchiveImage, load_images, random_layer, rootfs_layer
from migrate.sandbox.samples import APPLETS, BUSYBOX

GIB = 1024**3
MIB = 1024**2
LEGACY: dict[str, Any] = {}
CONTAINERD: dict[str, Any] = {"features": {"containerd-snapshotter": True}}
# Targets: ours against the single-archive baseline (b), and against the per-tag loop (a).
BYTES_TARGET = 1.05
TIME_TARGET = 1.10
LABELS = {"a": "(a) per-tag save/load", "b": "(b) one save/load", "ours": "ours (run)"}


@dataclass
class Result:
    method: str
    save_s: float
    load_s: float
    bytes_written: int
    cpu_s: float
    note: str = ""
    total: float | None = None  # set for medians, where total != median save + median load
    detail: dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.total if self.total is not None else self.save_s + self.load_s


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Timing:
    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Timing]:
    """Wall time and children CPU of the block; dirty pages flushed (untimed) before it."""
    os.sync()
    timing = Timing()
    cpu, started = _children_cpu(), time.perf_counter()
    try:
        yield timing
    finally:
        timing.wall = time.perf_counter() - started
        timing.cpu = _children_cpu() - cpu


# --- host -------------------------------------------------------------------------------------

def build_host(sandbox: Sandbox, total_bytes: int, count: int, shared_bytes: int) -> list[str]:
    """`count` images: busybox base + one shared layer + one unique random layer each."""
    per_image = max(total_bytes // max(count, 1), 1)
    with tempfile.TemporaryDirectory(prefix="cm-bench-layers-", dir=sandbox.dir) as tmp:
        work = Path(tmp)
        base = rootfs_layer(work, BUSYBOX, APPLETS)
        shared = random_layer(work, "shared-runtime", shared_bytes)
        images = [
            ArchiveImage(
                tags=(f"cm-bench/app-{i:02d}:1",),
                layers=(base, shared, random_layer(work, f"app-{i:02d}", per_image)),
                cmd=("sh",),
            )
            for i in range(count)
        ]
        load_images(sandbox.host, images)
    return [tag for image in images for tag in image.tags]


def unique_layer_bytes(sandbox: Sandbox, tags: list[str]) -> int:
    """Sum of each distinct layer's size (diff_id -> size from `docker history`)."""
    seen: dict[str, int] = {}
    for tag in tags:
        inspect = json.loads(docker(sandbox.host, "image", "inspect", tag).stdout)[0]
        history = docker(sandbox.host, "history", "--no-trunc", "--human=false",
                         "--format", "{{.Size}}", tag).stdout
        sized = [int(size) for size in reversed(history.split()) if int(size) > 0]
        for diff_id, size in zip(inspect["RootFS"]["Layers"], sized, strict=False):
            seen.setdefault(diff_id, size)
    return sum(seen.values())


# --- daemon modes -----------------------------------------------------------------------------

def set_mode(sandbox: Sandbox, config: dict[str, Any]) -> None:
    """Write daemon.json and restart, emptying the managed containerd while it is stopped."""
    sandbox.stop()
    sandbox.daemon_json.write_text(json.dumps(config) + "\n")
    shutil.rmtree(sandbox.data_root / "containerd", ignore_errors=True)
    sandbox.start()
    want = bool(config)
    if sandbox.containerd_snapshotter() != want:
        raise BenchError(f"the daemon did not come up on the "
                         f"{'containerd' if want else 'legacy'} store")
    if want and sandbox.api("/images/json"):
        raise BenchError("the containerd store is not empty before a load")


def run_docker(sandbox: Sandbox, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    done = subprocess.run([docker_cli(), "-H", sandbox.host, *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr}")


def check_loaded(sandbox: Sandbox, tags: list[str]) -> None:
    present = {t for image in sandbox.api("/images/json") for t in image.get("RepoTags") or ()}
    missing = sorted(set(tags) - present)
    if missing:
        raise BenchError(f"after the load the store lacks {missing}")


def archive_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.tar"))


# --- the baselines ----------------------------------------------------------------------------

def docker_method(sandbox: Sandbox, tags: list[str], out: Path, per_tag: bool,
                  between: Callable[[], None]) -> Result:
    """`docker save -o` (per tag, or all tags at once), `between()`, `docker load -i` each."""
    out.mkdir()
    with timed() as save:
        if per_tag:
            for i, tag in enumerate(tags):
                run_docker(sandbox, "save", "-o", str(out / f"{i:02d}.tar"), tag)
        else:
            run_docker(sandbox, "save", "-o", str(out / "all.tar"), *tags)
    between()
    with timed() as load:
        for archive in sorted(out.glob("*.tar")):
            run_docker(sandbox, "load", "-q", "-i", str(archive))
    check_loaded(sandbox, tags)
    count = len(list(out.glob("*.tar")))
    return Result("a" if per_tag else "b", save.wall, load.wall, archive_bytes(out),
                  save.cpu + load.cpu, f"{count} archive{'s' if count > 1 else ''}")


# --- ours -------------------------------------------------------------------------------------

def cli(sandbox: Sandbox, state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "migrate", "--host", sandbox.host,
            "--daemon-config", str(sandbox.daemon_json), "--state-dir", str(state_dir), *args]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOCKER_", "CONTAINERD_MIGRATE_"))}
    return subprocess.run(argv, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, check=False)


def _phase_seconds(phase: dict[str, Any]) -> float:
    # `seconds` in the status is rounded to 0.1 s; the timestamps are exact.
    if phase["started_at"] and phase["finished_at"]:
        start = datetime.fromisoformat(phase["started_at"])
        return (datetime.fromisoformat(phase["finished_at"]) - start).total_seconds()
    return float(phase["seconds"] or 0.0)


def run_ours(sandbox: Sandbox, tags: list[str], state_dir: Path) -> Result:
    restart = f"{sys.executable} -m migrate.sandbox restart --dir {sandbox.dir}"
    with timed() as run:
        done = cli(sandbox, state_dir, "--log-format", "json", "run", "--yes",
                   "--containers", "leave", "--restart-command", restart)
    if done.returncode != 0:
        raise BenchError(f"containerd-migrate run exited {done.returncode}:\n"
                         f"{done.stderr[-3000:]}")
    check_loaded(sandbox, tags)
    status = cli(sandbox, state_dir, "status", "--format", "json")
    if status.returncode != 0:
        raise BenchError(f"status exited {status.returncode}: {status.stderr}")
    phases = {p["name"]: p for p in json.loads(status.stdout)["phases"]}
    seconds = {name: _phase_seconds(p) for name, p in phases.items()}
    export = phases["export"]["result"]
    on_disk = archive_bytes(state_dir / "archives")
    if on_disk != export["bytes_written"]:
        raise BenchError(f"the journal says {export['bytes_written']} bytes were written, "
                         f"the archives hold {on_disk}")
    # Inside the phases: time spent streaming each archive, from the JSON log lines.
    streamed = {"save": 0.0, "load": 0.0}
    for line in done.stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind = {"archive written": "save", "archive loaded": "load"}.get(event.get("event"))
        if kind:
            streamed[kind] += float(event.get("duration") or 0.0)
    detail = {
        **{f"phase:{name}": value for name, value in seconds.items()},
        "export:streamed": streamed["save"], "export:rest": seconds["export"] - streamed["save"],
        "import:streamed": streamed["load"], "import:rest": seconds["import"] - streamed["load"],
        "run:wall": run.wall,
    }
    count = len(export["archives"])
    return Result("ours", seconds["export"], seconds["import"], int(export["bytes_written"]),
                  run.cpu, f"{count} archive{'s' if count > 1 else ''}", detail=detail)


# --- rounds and report ------------------------------------------------------------------------

# Round r runs the methods in ORDERS[r % 3]: each method is first, second and last equally
# often over a multiple of 3 rounds.
ORDERS = (("ours", "a", "b"), ("a", "b", "ours"), ("b", "ours", "a"))


def one_round(sandbox: Sandbox, tags: list[str], index: int) -> list[Result]:
    """One measurement of every method; returns them as [a, b, ours]."""
    work = sandbox.dir / f"round-{index}"
    work.mkdir()

    def ours() -> Result:
        # From the legacy store with an empty containerd store and a fresh state dir.
        return run_ours(sandbox, tags, work / "state")

    def baseline(per_tag: bool) -> Result:
        return docker_method(sandbox, tags, work / ("a" if per_tag else "b"), per_tag,
                             lambda: set_mode(sandbox, CONTAINERD))

    methods: dict[str, Callable[[], Result]] = {
        "a": lambda: baseline(per_tag=True), "b": lambda: baseline(per_tag=False), "ours": ours}
    results: dict[str, Result] = {}
    for method in ORDERS[index % len(ORDERS)]:
        set_mode(sandbox, LEGACY)
        log(f"round {index + 1}: {LABELS[method]}")
        results[method] = methods[method]()
        # Every method starts just after the previous one's archives were deleted.
        for leftover in work.iterdir():
            shutil.rmtree(leftover)
    work.rmdir()
    return [results["a"], results["b"], results["ours"]]


def print_table(title: str, results: list[Result]) -> None:
    print(f"\n{title}")
    print(f"{'method':<22} {'save/export s':>13} {'load/import s':>13} {'total s':>8} "
          f"{'bytes written':>14} {'client CPU s':>12}")
    for r in results:
        print(f"{LABELS[r.method]:<22} {r.save_s:>13.2f} {r.load_s:>13.2f} {r.total_s:>8.2f} "
              f"{r.bytes_written:>14,} {r.cpu_s:>12.2f}  {r.note}")
    sys.stdout.flush()


def medians(rounds: list[list[Result]]) -> list[Result]:
    out = []
    for column in zip(*rounds, strict=True):
        first = column[0]
        keys = set().union(*(r.detail for r in column))
        out.append(Result(
            first.method,
            statistics.median(r.save_s for r in column),
            statistics.median(r.load_s for r in column),
            int(statistics.median(r.bytes_written for r in column)),
            statistics.median(r.cpu_s for r in column),
            first.note,
            total=statistics.median(r.total_s for r in column),
            detail={k: statistics.median(r.detail.get(k, 0.0) for r in column) for k in keys},
        ))
    return out


def print_ours_detail(ours: Result) -> None:
    d = ours.detail
    print(f"\nours, inside the phases (medians): export = `docker save` streamed to disk "
          f"{d['export:streamed']:.2f} s + the rest {d['export:rest']:.2f} s; import = "
          f"`docker load` + presence check {d['import:streamed']:.2f} s + the rest (checksum "
          f"of archives not streamed first, ...) {d['import:rest']:.2f} s")
    print(f"ours, phases outside the total (medians): snapshot {d['phase:snapshot']:.2f} s, "
          f"quiesce+switch+restart "
          f"{d['phase:quiesce'] + d['phase:switch'] + d['phase:restart']:.2f} s, "
          f"verify {d['phase:verify']:.2f} s; the whole `run` {d['run:wall']:.2f} s")


def print_targets(summary: list[Result], rounds: list[list[Result]]) -> None:
    by = {r.method: r for r in summary}
    ours, a, b = by["ours"], by["a"], by["b"]

    def paired(base: str) -> float:
        ratios = [row[2].total_s / next(r for r in row if r.method == base).total_s
                  for row in rounds]
        return float(statistics.median(ratios))

    print()
    checks = [
        ("bytes written ours/(b)", ours.bytes_written / b.bytes_written, None,
         BYTES_TARGET, "<="),
        ("total time    ours/(b)", ours.total_s / b.total_s, paired("b"), TIME_TARGET, "<="),
        ("total time    ours/(a)", ours.total_s / a.total_s, paired("a"), 1.0, "<"),
    ]
    for name, ratio, per_round, target, op in checks:
        ok = ratio <= target if op == "<=" else ratio < target
        extra = "" if per_round is None else f"  (median of per-round ratios {per_round:.3f})"
        print(f"{name}: {ratio:.3f}  target {op} {target:.2f}  {'PASS' if ok else 'MISS'}"
              f"{extra}")
    print(f"bytes written (a)/(b):  {a.bytes_written / b.bytes_written:.3f}")


def measure_all(sandbox: Sandbox, args: argparse.Namespace, begun: float) -> int:
    """Builds the host, runs every round and prints the tables and the targets."""
    log(f"building {args.images} images: {args.gib:g} GiB own layers + {args.shared_mib} "
        "MiB shared")
    tags = build_host(sandbox, int(args.gib * GIB), args.images, args.shared_mib * MIB)
    unique = unique_layer_bytes(sandbox, tags)
    version = sandbox.api("/version")
    print(f"engine {version['Version']} on {os.cpu_count()} CPUs: {len(tags)} tags on a "
          f"shared base, {unique:,} bytes of unique layer data ({unique / GIB:.2f} GiB); "
          f"built in {time.perf_counter() - begun:.1f} s; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    rounds = []
    for index in range(args.rounds):
        rounds.append(one_round(sandbox, tags, index))
        order = ", ".join(ORDERS[index % len(ORDERS)])
        print_table(f"round {index + 1} (order: {order}; load average "
                    f"{os.getloadavg()[0]:.2f})", rounds[-1])
    summary = medians(rounds)
    print_table(f"median of {args.rounds} rounds (total = median of the per-round totals)",
                summary)
    print_ours_detail(summary[2])
    print_targets(summary, rounds)
    print(f"\nbenchmark wall time {time.perf_counter() - begun:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--gib", type=float, default=1.0,
                        help="GiB of random layer data of the images' own layers (in all)")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--shared-mib", type=int, default=64,
                        help="MiB of the random layer every image shares (on top of busybox)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="measure every method this often; medians are compared")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox afterwards")
    args = parser.parse_args(argv)

    begun = time.perf_counter()
    return run_in_sandbox(Sandbox(own_path("bench-ei"), args.engine), args.keep,
                          lambda sandbox: measure_all(sandbox, args, begun))


if __name__ == "__main__":
    sys.exit(main())
