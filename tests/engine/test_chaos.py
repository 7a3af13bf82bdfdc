"""Seeded random interrupts (issue 11): whatever signal hits `run` or `rollback` at
whatever moment, the host ends fully migrated after `run` or fully restored after
`rollback`.

Each round draws, from one seed: which command is interrupted (a fresh `run`, or the
`rollback` of a completed migration), the journal event to wait for (the phase whose start
is polled in the journal: synchronisation), a delay after it (the experiment, not
synchronisation), the signal (SIGINT, SIGTERM, SIGKILL) and whether it goes to the pid or
the whole process group (which includes a running restart command or docker CLI).

    CONTAINERD_MIGRATE_CHAOS_SEED=1234        replay one seed (printed on failure)
    CONTAINERD_MIGRATE_CHAOS_ROUNDS=8         rounds per engine (default 6)
    CONTAINERD_MIGRATE_CHAOS_ENGINES=26,28    engines (default 28)
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from migrate.journal import replay
from migrate.sandbox import BASE_DIR, SampleHost, Sandbox, populate_sandbox

from .cli import child_signals, cli, run_args

pytestmark = pytest.mark.engine

SEED_ENV = "CONTAINERD_MIGRATE_CHAOS_SEED"
ROUNDS = int(os.environ.get("CONTAINERD_MIGRATE_CHAOS_ROUNDS") or 6)
ENGINES = (os.environ.get("CONTAINERD_MIGRATE_CHAOS_ENGINES") or "28").split(",")
RUN_MOMENTS = ("snapshot", "export", "quiesce", "switch", "restart", "import", "verify")
# The rollback undoes in reverse order; its undo_started records are the moments.
ROLLBACK_MOMENTS = ("verify", "import", "switch", "quiesce")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
WAIT = 240.0


@dataclass
class Host:
    sandbox: Sandbox
    samples: SampleHost
    original: bytes


@pytest.fixture(scope="module", params=ENGINES, ids=[f"engine{e}" for e in ENGINES])
def host(request: pytest.FixtureRequest) -> Iterator[Host]:
    if os.environ.get("CONTAINERD_MIGRATE_SKIP_ENGINE") == "1":
        pytest.skip("CONTAINERD_MIGRATE_SKIP_ENGINE=1")
    sandbox = Sandbox(BASE_DIR / f"pt-{os.getpid()}-chaos{request.param}", str(request.param))
    try:
        sandbox.start()
        samples = populate_sandbox(sandbox)
        yield Host(sandbox, samples, sandbox.daemon_json.read_bytes())
    finally:
        sandbox.destroy()


def _image_id(sandbox: Sandbox, ref: str) -> str | None:
    status, body = sandbox.request("GET", f"/images/{ref}/json")
    return str(json.loads(body)["Id"]) if status == 200 else None


def assert_restored(host: Host, state: Path) -> None:
    sandbox = host.sandbox
    assert sandbox.ping() and not sandbox.containerd_snapshotter()
    assert sandbox.daemon_json.read_bytes() == host.original
    for tag, image_id in host.samples.image_ids.items():
        assert _image_id(sandbox, tag) == image_id, tag
    for name, expected in host.samples.containers.items():
        status, body = sandbox.request("GET", f"/containers/{name}/json")
        assert status == 200, f"container {name} is missing"
        if expected == "running":
            assert json.loads(body)["State"]["Status"] == "running", name
    volumes = {v["Name"] for v in sandbox.api("/volumes")["Volumes"] or ()}
    assert set(host.samples.volumes) <= volumes
    replayed = replay(state / "journal.jsonl")
    assert replayed.outcome in ("rolled_back", None), replayed.outcome


def assert_migrated(host: Host, state: Path) -> None:
    sandbox = host.sandbox
    assert sandbox.ping() and sandbox.containerd_snapshotter()
    assert replay(state / "journal.jsonl").outcome == "completed"
    id_map = json.loads((state / "reports" / "id-map.json").read_text())
    for tag, legacy in host.samples.image_ids.items():
        assert _image_id(sandbox, tag) == id_map[legacy]["new_id"], tag


def _moment_reached(state: Path, kind: str, phase: str) -> bool:
    try:
        replayed = replay(state / "journal.jsonl")
    except Exception:
        return False
    if kind == "run":
        return replayed.phase(phase).status != "pending"  # type: ignore[arg-type]
    return replayed.phase(phase).status == "undone" or bool(  # type: ignore[arg-type]
        replayed.outcome == "rolled_back")


def _interrupt(host: Host, state: Path, args: tuple[str, ...], kind: str,
               rng: random.Random, log: list[str]) -> int:
    """Start the CLI, wait for a drawn moment, send a drawn signal; its exit status."""
    moments = RUN_MOMENTS if kind == "run" else ROLLBACK_MOMENTS
    phase = rng.choice(moments)
    delay = round(rng.uniform(0.0, 1.5), 2)
    sig = rng.choice(SIGNALS)
    group = rng.random() < 0.3
    log.append(f"{kind}: at {phase} +{delay}s {sig.name} to {'group' if group else 'pid'}")
    sandbox = host.sandbox
    argv = [sys.executable, "-m", "migrate", "--host", sandbox.host, "--daemon-config",
            str(sandbox.daemon_json), "--state-dir", str(state), *args]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=child_signals)  # noqa: PLW1509  (no threads here)
    deadline = time.monotonic() + WAIT
    while proc.poll() is None and not _moment_reached(state, kind, phase):
        assert time.monotonic() < deadline, f"{kind} never reached {phase}"
        time.sleep(0.05)
    if proc.poll() is None:
        time.sleep(delay)
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
    _out, err = proc.communicate(timeout=WAIT)
    log.append(f"  exit {proc.returncode}")
    assert "Traceback" not in err, err
    return proc.returncode


def _settle(host: Host, state: Path, *args: str) -> None:
    """Run a command to its end; it may need a second go after a SIGKILLed restart."""
    for _ in range(2):
        result = cli(host.sandbox, state, *args)
        if result.returncode == 0:
            return
    raise AssertionError(f"{' '.join(args)}: exit {result.returncode}\n{result.stdout}\n"
                         f"{result.stderr}")


def test_random_interrupts_end_migrated_or_restored(host: Host, tmp_path: Path) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1 << 32))
    rng = random.Random(seed)
    log: list[str] = []
    sandbox = host.sandbox
    try:
        for number in range(ROUNDS):
            state = tmp_path / f"state{number}"
            log.append(f"round {number}")
            if rng.random() < 0.65:
                _interrupt(host, state, run_args(sandbox), "run", rng, log)
                if rng.random() < 0.5:
                    _settle(host, state, *run_args(sandbox))
                    assert_migrated(host, state)
            else:
                _settle(host, state, *run_args(sandbox))
                assert_migrated(host, state)
                _interrupt(host, state, ("rollback", "--yes", "--purge-imported"), "rollback",
                           rng, log)
            _settle(host, state, "rollback", "--yes", "--purge-imported")
            assert_restored(host, state)
    except BaseException:
        print(f"\nchaos seed {seed} ({SEED_ENV}={seed} replays it):\n  " + "\n  ".join(log))
        raise
