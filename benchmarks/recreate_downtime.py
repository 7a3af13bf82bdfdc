"""Downtime per running container under `run --containers recreate`, against the docker CLI.

    .venv/bin/python benchmarks/recreate_downtime.py [--engine 28] [--containers 20]

Builds a host with N running containers (static busybox image, a named volume each, half of
them on a user-defined network with an alias) in a private sandbox engine, then measures:

1. the plain docker CLI doing the least a recreate needs, container by container, in the
   same store: `docker stop`, `docker rename` (to keep the old one), `docker create` with
   the same options, `docker start`; downtime = stop issued -> start returned;
2. `containerd-migrate run --containers recreate` on the same host: downtime = the moment
   quiesce stopped the container -> the moment recreate had it running again (both from
   reports/container-map.json and the journal). This spans the whole window (commit,
   switch, daemon restart, import, verify); the recreate phase's own share (phase start ->
   running again) is printed too.

The sandbox is destroyed at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from migrate.journal import replay
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


def tool_downtimes(sandbox: Sandbox, state: Path) -> tuple[list[float], list[float], float]:
    restart = f"{sys.executable} -m migrate.sandbox restart --dir {sandbox.dir}"
    argv = [sys.executable, "-m", "migrate", "-q", "--host", sandbox.host, "--daemon-config",
            str(sandbox.daemon_json), "--state-dir", str(state), "run", "--yes",
            "--containers", "recreate", "--restart-command", restart]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    total = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr}")
    rows = json.loads((state / "reports" / "container-map.json").read_text())
    phase_start = replay(state / "journal.jsonl").phase("recreate").started_at
    assert phase_start is not None
    window, share = [], []
    for row in rows.values():
        if row.get("downtime_seconds") is None:
            continue
        window.append(float(row["downtime_seconds"]))
        share.append((datetime.fromisoformat(row["running_again_at"]) - phase_start)
                     .total_seconds())
    return window, share, total


def _line(label: str, values: list[float]) -> str:
    return (f"{label:<44} median {statistics.median(values):6.2f} s   min {min(values):6.2f}"
            f"   max {max(values):6.2f}   (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="28", choices=["26", "28"])
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="bench-rc-", dir=BASE_DIR)), args.engine)
    BASE_DIR.mkdir(parents=True, exist_ok=True)
    try:
        sandbox.start()
        build_host(sandbox, args.containers)
        cli = docker_cli_downtimes(sandbox, args.containers)
        window, share, total = tool_downtimes(sandbox, sandbox.dir / "state")
        # Only the benchmark containers: the sample host's own running one is left out.
        print(f"engine {args.engine}, {args.containers} running containers")
        print(_line("docker CLI stop/rename/create/start", cli))
        print(_line("containerd-migrate: stopped -> running again", window))
        print(_line("  of which: recreate phase start -> running", share))
        print(f"containerd-migrate run in all: {total:.2f} s; median downtime ratio vs the "
              f"docker CLI: {statistics.median(window) / statistics.median(cli):.1f}x")
    finally:
        if not args.keep:
            sandbox.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
