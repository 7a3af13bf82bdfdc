"""`containerd-migrate rehearse` (issue 20) against faults, on real engines 26 and 28.

- An image whose layer is damaged in the legacy store (a file of its overlay2 diff cut
  short: the daemon's own tar-split check refuses to save it): on either path the
  rehearsal names that image, moves every other one, exits 4, and leaves the live host
  as it was.
- `--staged` (the stage phase's `docker save` into `ctr import` of the throwaway engine's
  containerd) moves the sample host, plus containers the legacy store accepted with a
  foreign-platform image, a `--platform`, a bind mount with rshared propagation and a
  small /dev/shm: the containerd store takes them all (docs/engine-facts.md, "Containers
  the containerd store refuses").
- A rehearsal SIGKILLed at a seeded random moment (a failpoint along either path), then
  `rehearse` again and `cleanup`: no process the throwaway engine or the CLI started for
  it, no mount, no directory, no pending record.

    CONTAINERD_MIGRATE_REHEARSE_KILL_SEED=1234   replay one seed (printed by the test)
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from migrate.errors import ExitCode
from migrate.host.processes import alive_as
from migrate.host.throwaway import ThrowawayEngine, mounts_under
from migrate.sandbox import Sandbox, SandboxFactory, docker
from migrate.sandbox.layers import ArchiveImage, load_images, rootfs_layer
from migrate.sandbox.samples import BUSYBOX

from . import test_rehearse
from .cli import cli
from .test_rehearse import KILLED, _live_state, _nothing_left

pytestmark = pytest.mark.engine

# The fixture of test_rehearse.py: a directory short enough for the engine's sockets.
short_tmp = test_rehearse.short_tmp

DAMAGED = "cm-sample/big:1"
SEED_ENV = "CONTAINERD_MIGRATE_REHEARSE_KILL_SEED"
# Moments along each path where a kill leaves something different behind: the engine
# alone, archives half written, a `ctr import` child mid-stream, images in the throwaway
# store, containers created in it.
KILL_POINTS = {
    "export": ("rehearse:engine-started", "export:archive-written", "rehearse:saved",
               "rehearse:images-moved", "rehearse:containers-created"),
    "staged": ("rehearse:engine-started", "stage:streaming", "rehearse:images-moved",
               "rehearse:containers-created"),
}
PATH_FLAGS = {"export": (), "staged": ("--staged",)}


def _damage_a_layer(sandbox: Sandbox, ref: str) -> Path:
    """Cut short the one file of the image's own top layer in the overlay2 diff."""
    inspected = json.loads(docker(sandbox.host, "image", "inspect", ref).stdout)[0]
    upper = Path(inspected["GraphDriver"]["Data"]["UpperDir"])
    damaged = next(p for p in upper.rglob("*") if p.is_file())
    os.truncate(damaged, damaged.stat().st_size // 2)
    return damaged


@pytest.mark.parametrize("path", ["export", "staged"])
@pytest.mark.parametrize("engine", ["26", "28"])
def test_an_image_damaged_in_the_legacy_store_is_named_and_the_rest_moves(
        fresh_sandbox: SandboxFactory, short_tmp: Path, engine: str, path: str) -> None:
    sandbox = fresh_sandbox(engine, samples=True)
    state_dir = short_tmp / "state"
    _damage_a_layer(sandbox, DAMAGED)
    refused = docker(sandbox.host, "save", DAMAGED, "-o", str(short_tmp / "x.tar"), check=False)
    assert refused.returncode != 0 and "checksum" in refused.stderr  # the fault is real
    before = _live_state(sandbox)

    done = cli(sandbox, state_dir, "rehearse", "--format", "json", *PATH_FLAGS[path])

    assert done.returncode == ExitCode.VERIFY_FAILED, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["path"] == path and not report["ok"]
    named = [line for line in report["failures"] if DAMAGED in line]
    assert any(line.startswith(f"cannot save {DAMAGED}: ") and "checksum" in line
               for line in named), report["failures"]
    # Every failure is about that image: the others moved, the containers were created.
    assert len(named) == len(report["failures"]), report["failures"]
    assert report["containers_created"] == report["containers"] == 3
    _nothing_left(state_dir / "rehearsal", state_dir)
    assert _live_state(sandbox) == before


def _foreign_containers(sandbox: Sandbox, workdir: Path) -> int:
    """Containers the legacy store accepted that could trip the containerd store."""
    layer = rootfs_layer(workdir, BUSYBOX, ("sh",))
    load_images(sandbox.host, [ArchiveImage(tags=("cm-probe/arm64:1",), layers=(layer,),
                                            config=(("architecture", "arm64"),))])
    created = [
        ("cm-probe-arm64", "cm-probe/arm64:1"),
        ("cm-probe-platform", "--platform", "linux/arm64", "cm-probe/arm64:1"),
        ("cm-probe-rshared", "--mount",
         "type=bind,source=/proc,target=/x,bind-propagation=rshared", "cm-sample/base:1"),
        ("cm-probe-shm", "--shm-size", "1m", "cm-sample/base:1"),
    ]
    for name, *args in created:
        docker(sandbox.host, "create", "--name", name, *args)
    return len(created)


@pytest.mark.parametrize("engine", ["26", "28"])
def test_staged_rehearsal_moves_the_host_and_creates_every_container(
        fresh_sandbox: SandboxFactory, short_tmp: Path, engine: str) -> None:
    sandbox = fresh_sandbox(engine, samples=True)
    state_dir = short_tmp / "state"
    extra = _foreign_containers(sandbox, short_tmp)
    before = _live_state(sandbox)

    done = cli(sandbox, state_dir, "rehearse", "--staged", "--format", "json")

    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["path"] == "staged" and report["failures"] == []
    assert report["containers_created"] == report["containers"] == 3 + extra
    figures = report["figures"]
    # The stream is the staging rate; nothing is left to load in the window.
    assert figures["archive_bytes"] > 0 and figures["load_mbps"] > 0
    assert figures["load_seconds"] == 0
    assert figures["run_seconds"] >= figures["save_seconds"] + figures["window_seconds"] - 0.1
    text = cli(sandbox, state_dir, "rehearse", "--staged")
    assert text.returncode == ExitCode.OK and "; staged " in text.stdout, text.stdout
    _nothing_left(state_dir / "rehearsal", state_dir)
    assert _live_state(sandbox) == before


def _kill_at(sandbox: Sandbox, state_dir: Path, rehearsal: Path, path: str,
             point: str) -> tuple[int, list[tuple[int, int | None]]]:
    """A rehearsal SIGKILLed at `point`; returns its engine's pid and what it left running
    (pid, start time): a `ctr import` (recorded by the CLI before it streams; it may end
    on its own, its stream cut), the engine, its containerd."""
    killed = cli(sandbox, state_dir, "rehearse", "--dir", str(rehearsal),
                 *PATH_FLAGS[path], failpoints=f"{point}=kill")
    assert killed.returncode == KILLED, killed.stdout + killed.stderr
    left = ThrowawayEngine(rehearsal).owned_pids()
    engine = ThrowawayEngine(rehearsal).read_record()["pid"]
    assert engine in [pid for pid, _ in left], f"killed at {point}, the engine runs on"
    return engine, left


def _gone(processes: list[tuple[int, int | None]]) -> None:
    # An exited one may stay a zombie a moment, until whoever adopted it reaps it.
    alive = [pid for pid, started in processes if alive_as(pid, started)]
    assert alive == [], f"processes of the killed rehearsal still run: {alive}"


def test_a_rehearsal_killed_at_a_random_moment_leaves_nothing(
        fresh_sandbox: SandboxFactory, short_tmp: Path) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1 << 32))
    rng = random.Random(seed)
    moments = [(path, rng.choice(KILL_POINTS[path]))
               for path in (rng.choice(sorted(KILL_POINTS)) for _ in range(2))]
    print(f"\nrehearse kill seed {seed} ({SEED_ENV}={seed} replays it): {moments}")
    sandbox = fresh_sandbox(rng.choice(["26", "28"]), samples=True)
    state_dir = short_tmp / "state"
    rehearsal = short_tmp / "r"
    before = _live_state(sandbox)

    (path, point), (then_path, then_point) = moments
    engine, left = _kill_at(sandbox, state_dir, rehearsal, path, point)
    again = cli(sandbox, state_dir, "rehearse", "--dir", str(rehearsal),
                *PATH_FLAGS[then_path], "--format", "json")

    assert again.returncode == ExitCode.OK, again.stdout + again.stderr
    removed = json.loads(again.stdout)["leftovers_removed"]
    assert f"rehearsal leftovers: stopped process {engine}" in removed, (moments, removed)
    assert f"rehearsal leftovers: removed {rehearsal}" in removed
    _gone(left)
    _nothing_left(rehearsal, state_dir)

    engine, left = _kill_at(sandbox, state_dir, rehearsal, then_path, then_point)
    cleaned = cli(sandbox, state_dir, "cleanup", "--yes")

    assert cleaned.returncode == ExitCode.OK, cleaned.stdout + cleaned.stderr
    assert f"stopped process {engine}" in cleaned.stdout
    _gone(left)
    _nothing_left(rehearsal, state_dir)
    assert mounts_under(state_dir) == []
    assert _live_state(sandbox) == before
