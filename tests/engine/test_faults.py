"""Fault-injection suite (issue 4): the rollback and failure side, on real engines 26 and 28.

Every scenario drives the real CLI in a subprocess against one private dockerd per engine
(module-scoped, reused: each scenario leaves the host back on the legacy store, and a
scenario that did not finish makes the next one scrub the host first). Each one ends by
checking that the daemon runs, every original image is reachable (the legacy store after a
rollback: every snapshotted image ID and tag; the containerd store after completion: every
tag on its new ID from id-map.json), daemon.json is byte-identical to the original (or to
what the switch wrote, after completion), the journal replays, and `status --format json`
says the same as the journal. The scenarios are listed in README.md, "Fault-injection
suite"; a table of them is printed at the end of the session.

Moments are hit exactly with failpoints (`kill`, `sigint`, and `pause`, which holds the CLI
until the test creates a resume file), never with sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.archives.manifest import ArchiveManifest, read_manifest
from migrate.cli import main
from migrate.errors import ExitCode
from migrate.journal import JournalState, JsonDict, PhaseName, replay
from migrate.models import Inventory
from migrate.phases.runner import RUN_PHASES
from migrate.phases.volume_guard import GUARD_IMAGE
from migrate.sandbox import (
    BASE_DIR,
    SampleHost,
    Sandbox,
    docker,
    engine_bin_dirs,
    populate_sandbox,
)
from migrate.support.failpoints import ENV as FAILPOINTS_ENV
from migrate.support.failpoints import PAUSE_TIMEOUT_ENV, RESUME_ENV, reached_path

from .cli import child_signals, cli, run_args
from .faults_report import FaultReport, Row, registered

pytestmark = pytest.mark.engine

ENGINES = ["26", "28"]
SKIP_ENV = "CONTAINERD_MIGRATE_SKIP_ENGINE"
KILLED = -signal.SIGKILL
MIB = 1024 * 1024
POLL = 0.05
WAIT = 120.0
# A pause that nobody releases fails the CLI instead of hanging the suite.
PAUSE_TIMEOUT = "120"
# The CLI with the export free-space pre-check switched off: the only way to get a real
# ENOSPC in the middle of an archive write deterministically (the pre-check keeps 256 MiB
# of head-room, so otherwise only a writer racing the export could fill the disk).
NO_ROOM_CHECK = ("import migrate.archives.writing as writing; "
                 "writing._ensure_room = lambda *args, **kwargs: None; "
                 "from migrate.cli import main; main()")


# ---------------------------------------------------------------------------- the host


@dataclass
class Host:
    sandbox: Sandbox
    samples: SampleHost
    original: bytes  # daemon.json before any scenario
    # An image that was in the containerd store before any migration: no rollback,
    # with or without --purge-imported, may remove it.
    foreign: str = ""
    foreign_digest: str = ""
    # True while a scenario runs; still True afterwards when it did not finish.
    dirty: bool = False


@dataclass
class Recorder:
    """Rows for the summary table; `done()` marks the scenario finished."""

    report: FaultReport
    engine: str
    scenario: str
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    rows: int = 0

    def row(self, outcome: str, images: str, scenario: str | None = None) -> None:
        self.report.add(Row(scenario or self.scenario, self.engine, outcome, images,
                            time.monotonic() - self.started))
        self.started = time.monotonic()
        self.rows += 1

    def done(self, outcome: str, images: str) -> None:
        self.row(outcome, images)
        self.finished = True

    def skip(self, reason: str) -> None:
        self.done(f"skipped: {reason}", "-")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def report(request: pytest.FixtureRequest) -> FaultReport:
    return registered(request.config)


@pytest.fixture(scope="module", params=ENGINES, ids=[f"engine{k}" for k in ENGINES])
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         ) -> Iterator[Host]:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1")
    engine = str(request.param)
    # The pid prefix lets tests/conftest.py reap it if this session crashes.
    sandbox = Sandbox(BASE_DIR / f"pt-{os.getpid()}-faults{engine}", engine)
    try:
        sandbox.start()
        samples = populate_sandbox(sandbox)
        host = Host(sandbox, samples, sandbox.daemon_json.read_bytes())
        _stage_foreign_image(host, tmp_path_factory.mktemp(f"foreign{engine}"))
        yield host
    finally:
        sandbox.destroy()


@pytest.fixture
def rec(request: pytest.FixtureRequest, host: Host, report: FaultReport) -> Iterator[Recorder]:
    """A host in its known legacy state, and the scenario's summary rows."""
    _reset(host)
    host.dirty = True
    name = request.node.originalname.removeprefix("test_").replace("_", " ")
    recorder = Recorder(report, host.sandbox.engine, name)
    yield recorder
    if recorder.finished:
        host.dirty = False
    elif not recorder.rows:
        recorder.row("FAILED (see the test report)", "-")


def _reset(host: Host) -> None:
    """Back to: legacy store, original daemon.json, no extra dockerd flags, web running,
    and (after a scenario that did not finish) a containerd store holding only the
    foreign image, so that imports of later scenarios really load."""
    sandbox = host.sandbox
    restart = not sandbox.is_running()
    if sandbox.extra_args_file.exists():
        sandbox.extra_args_file.unlink()
        restart = True
    if sandbox.daemon_json.read_bytes() != host.original:
        sandbox.daemon_json.write_bytes(host.original)
        restart = True
    if restart or _on_containerd(sandbox):
        sandbox.restart()
    if host.dirty:
        stale = [ref for ref in containerd_images(host) if ref != host.foreign]
        if stale:
            _ctr(host, "images", "rm", *stale)
    for name, state in host.samples.containers.items():
        if state == "running" and _container_state(sandbox, name) != "running":
            docker(sandbox.host, "start", name)


def _ctr(host: Host, *args: str) -> str:
    """ctr on the daemon's own containerd, namespace moby: the containerd image store,
    readable while the daemon runs on the legacy store (docs/engine-facts.md, pre-staging)."""
    sandbox = host.sandbox
    argv = [str(engine_bin_dirs(sandbox.engine)[0] / "ctr"), "--address",
            str(sandbox.containerd_socket), "-n", "moby", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"ctr {' '.join(args)}: {done.stderr}"
    return done.stdout


def containerd_images(host: Host) -> dict[str, str]:
    """Image name -> target digest in the containerd image store."""
    rows = [line.split() for line in _ctr(host, "images", "ls").splitlines()[1:]]
    return {row[0]: row[2] for row in rows if len(row) > 2}


def _stage_foreign_image(host: Host, folder: Path) -> None:
    """Put an image into the containerd store that no migration imported."""
    sandbox = host.sandbox
    data, archive, saved = folder / "foreign.txt", folder / "foreign.tar", folder / "saved.tar"
    data.write_text("not imported by containerd-migrate\n")
    with tarfile.open(archive, "w") as tar:
        tar.add(data, arcname="foreign.txt")
    docker(sandbox.host, "import", str(archive), "cm-fault/foreign:1")
    docker(sandbox.host, "save", "-o", str(saved), "cm-fault/foreign:1")
    docker(sandbox.host, "rmi", "cm-fault/foreign:1")  # not part of the legacy inventory
    local = ["--local"] if sandbox.engine == "28" else []  # containerd 2.x
    _ctr(host, "images", "import", *local, "--snapshotter", "overlayfs", str(saved))
    host.foreign = "docker.io/cm-fault/foreign:1"
    host.foreign_digest = containerd_images(host)[host.foreign]


GUARD_REF = f"docker.io/{GUARD_IMAGE}"


def assert_containerd_store_exact(host: Host) -> None:
    """After every rollback: nothing a migration imported is left (they all purge or
    never imported), and the foreign image is still there. The volume guard's own 1 KiB
    image stays: the guard is never removed before the daemon is back on legacy
    (phases/volume_guard.py)."""
    images = {ref: digest for ref, digest in containerd_images(host).items()
              if ref != GUARD_REF}
    assert images == {host.foreign: host.foreign_digest}


def _set_store(host: Host, *, containerd: bool) -> None:
    """Switch the sandbox by hand (not with the tool)."""
    sandbox = host.sandbox
    if containerd:
        data = json.loads(host.original or b"{}")
        data.setdefault("features", {})["containerd-snapshotter"] = True
        sandbox.daemon_json.write_text(json.dumps(data) + "\n")
    else:
        sandbox.daemon_json.write_bytes(host.original)
    sandbox.restart()
    assert _on_containerd(sandbox) is containerd


def _lines(text: str) -> list[str]:
    return [line for line in text.split() if line]


def _on_containerd(sandbox: Sandbox) -> bool:
    return sandbox.containerd_snapshotter()


def _container_state(sandbox: Sandbox, name: str) -> str | None:
    status, body = sandbox.request("GET", f"/containers/{name}/json")
    return str(json.loads(body)["State"]["Status"]) if status == 200 else None


def _image_id(sandbox: Sandbox, ref: str) -> str | None:
    status, body = sandbox.request("GET", f"/images/{ref}/json")
    return str(json.loads(body)["Id"]) if status == 200 else None


# ----------------------------------------------------------------------- the CLI


def _argv(sandbox: Sandbox, state: Path, args: tuple[str, ...], code: str | None) -> list[str]:
    head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "migrate"]
    return [*head, "--host", sandbox.host, "--daemon-config", str(sandbox.daemon_json),
            "--state-dir", str(state), *args]


def _env(failpoints: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (FAILPOINTS_ENV, RESUME_ENV)}
    env.update(extra or {})
    if failpoints:
        env[FAILPOINTS_ENV] = failpoints
    return env


def spawn(sandbox: Sandbox, state: Path, *args: str, failpoints: str | None = None,
          env: Mapping[str, str] | None = None, code: str | None = None,
          ) -> subprocess.Popen[str]:
    """The CLI started in the background (for pauses); `finish()` collects it."""
    return subprocess.Popen(_argv(sandbox, state, args, code), env=_env(failpoints, env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=child_signals)  # noqa: PLW1509  (no threads here)


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _show(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def expect(result: subprocess.CompletedProcess[str], code: int) -> str:
    """Assert the exit code; returns stdout + stderr for message checks."""
    assert result.returncode == code, _show(result)
    return result.stdout + result.stderr


class Pause:
    """`<point>=pause`: the CLI waits at the point until `release()`."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.resume = folder / "resume"
        self.reached = reached_path(self.resume)

    @property
    def env(self) -> dict[str, str]:
        return {RESUME_ENV: str(self.resume), PAUSE_TIMEOUT_ENV: PAUSE_TIMEOUT}

    def wait(self, proc: subprocess.Popen[str], timeout: float = WAIT) -> tuple[str, int]:
        """(point, pid) once the CLI sits at the pause point."""
        deadline = time.monotonic() + timeout
        while not self.reached.exists():
            if proc.poll() is not None:
                pytest.fail("the CLI ended before its pause point:\n" + _show(finish(proc)))
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the CLI did not reach its pause point:\n" + _show(finish(proc)))
            time.sleep(POLL)
        point, pid = self.reached.read_text().split()
        return point, int(pid)

    def release(self) -> None:
        self.resume.touch()


@contextlib.contextmanager
def paused(sandbox: Sandbox, state: Path, point: str, *args: str, code: str | None = None,
           ) -> Iterator[tuple[Pause, subprocess.Popen[str]]]:
    """Start the CLI with `point=pause`; never leaves it behind, whatever the test does."""
    pause = Pause(state.parent / f"pause-{state.name}-{time.monotonic_ns()}")
    proc = spawn(sandbox, state, *args, failpoints=f"{point}=pause", env=pause.env, code=code)
    try:
        yield pause, proc
    finally:
        pause.release()
        if proc.poll() is None:
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(POLL)


# --------------------------------------------------------------------- assertions


def _inventory(state: Path) -> Inventory | None:
    path = state / "inventory.json"
    return Inventory.model_validate_json(path.read_bytes()) if path.exists() else None


def journal(state: Path) -> JournalState:
    replayed = replay(state / "journal.jsonl")
    assert not replayed.torn_tail
    return replayed


def status_json(sandbox: Sandbox, state: Path) -> dict[str, Any]:
    """`status --format json` through the real CLI entry point, in-process: it only reads
    the journal, and a Python start-up per call would double the suite's run time."""
    result = CliRunner().invoke(main, ["--host", sandbox.host, "--daemon-config",
                                       str(sandbox.daemon_json), "--state-dir", str(state),
                                       "status", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def assert_status_truthful(sandbox: Sandbox, state: Path) -> tuple[JournalState, dict[str, Any]]:
    """`status --format json` says what the journal says."""
    replayed = journal(state)
    doc = status_json(sandbox, state)
    assert doc["migration_id"] == replayed.last_migration_id
    assert doc["outcome"] == replayed.outcome
    assert doc["active"] is (replayed.migration_id is not None)
    assert doc["runs"] == len(replayed.runs)
    assert [(p["name"], p["status"], p["attempts"]) for p in doc["phases"]] == [
        (p.name, p.status, p.attempts) for p in replayed.phases]
    undo = [p.name for p in replayed.phases_to_undo()] if replayed.outcome != "rolled_back" else []
    assert doc["rollback_would_undo"] == undo
    return replayed, doc


def phase_status(state: Path) -> dict[str, str]:
    return {p.name: p.status for p in journal(state).phases}


def assert_legacy_images(host: Host, state: Path) -> str:
    """Every snapshotted image by ID and every tag on its ID, in the legacy store."""
    sandbox = host.sandbox
    inventory = _inventory(state)
    expected: dict[str, tuple[str, ...]]
    if inventory is not None:
        expected = {image.id: image.tags for image in inventory.images}
    else:  # stopped before the snapshot: the sample host is the truth
        expected = {i: () for i in host.samples.dangling_ids}
        for tag, image_id in host.samples.image_ids.items():
            expected[image_id] = (*expected.get(image_id, ()), tag)
    for image_id, tags in expected.items():
        assert _image_id(sandbox, image_id) == image_id, f"image {image_id} is missing"
        for tag in tags:
            assert _image_id(sandbox, tag) == image_id, f"{tag} does not name {image_id}"
    if inventory is not None:
        for container in inventory.containers:
            now = _container_state(sandbox, container.name)
            assert now is not None, f"container {container.name} is missing"
            if container.running:
                assert now == "running", f"{container.name} was running, now {now}"
    tag_count = sum(len(t) for t in expected.values())
    return f"{len(expected)} ({tag_count} tags)"


def assert_rolled_back(host: Host, state: Path) -> str:
    """Daemon up on the legacy store with everything, daemon.json as it was, journal says so."""
    sandbox = host.sandbox
    assert sandbox.is_running()
    assert not _on_containerd(sandbox)
    assert sandbox.daemon_json.read_bytes() == host.original
    checked = assert_legacy_images(host, state)
    replayed, doc = assert_status_truthful(sandbox, state)
    assert replayed.outcome == "rolled_back" and doc["active"] is False
    assert all(p.status in ("pending", "undone") for p in replayed.phases), replayed.phases
    assert not any(p.undo_error for p in replayed.phases)
    assert not list((state / "archives").glob("*.partial"))
    assert_containerd_store_exact(host)
    return checked


def assert_untouched(host: Host, state: Path) -> str:
    """A run that failed before the switch: the host is exactly as it was."""
    sandbox = host.sandbox
    assert sandbox.is_running()
    assert not _on_containerd(sandbox)
    assert sandbox.daemon_json.read_bytes() == host.original
    assert not list((state / "archives").glob("*.partial"))
    assert_status_truthful(sandbox, state)
    return assert_legacy_images(host, state)


def assert_completed(host: Host, state: Path) -> str:
    """Daemon up on the containerd store with every tag on its new ID, the switched
    daemon.json exactly as journaled, the migration completed."""
    sandbox = host.sandbox
    assert sandbox.is_running()
    assert _on_containerd(sandbox)
    replayed, doc = assert_status_truthful(sandbox, state)
    assert replayed.outcome == "completed" and doc["active"] is False and doc["remaining"] == []
    assert all(p.status == "done" for p in replayed.phases if p.name in RUN_PHASES), (
        replayed.phases)
    switched = replayed.phase("switch").undo or {}
    target = base64.b64decode(str(switched["written_b64"]))
    assert sandbox.daemon_json.read_bytes() == target
    assert json.loads(target)["features"]["containerd-snapshotter"] is True
    id_map = json.loads((state / "reports" / "id-map.json").read_text())
    inventory = _inventory(state)
    assert inventory is not None
    for image in inventory.images:
        new_id = id_map[image.id]["new_id"]
        assert _image_id(sandbox, new_id) == new_id, f"{image.id} -> {new_id} is missing"
        for tag in image.tags:
            assert _image_id(sandbox, tag) == new_id, f"{tag} does not name {new_id}"
    assert doc["volume_guard"] is True
    tags = sum(len(image.tags) for image in inventory.images)
    return f"{len(inventory.images)} ({tags} tags)"


def complete_then_roll_back(host: Host, state: Path) -> str:
    """After a completed run: check it, then purge-roll back to the known legacy state."""
    checked = assert_completed(host, state)
    expect(cli(host.sandbox, state, "rollback", "--yes", "--purge-imported"), 0)
    assert_rolled_back(host, state)
    return checked


def _dead(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _kill_daemon(sandbox: Sandbox) -> None:
    """SIGKILL this sandbox's dockerd (only that pid) and wait until it is dead; its
    managed containerd dies with it."""
    pid = sandbox.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(f"dockerd {pid} is dead", lambda: _dead(pid))
    wait_until("the daemon socket stops answering", lambda: not sandbox.ping())
    # Orphans are reaped by pid 1, which may take its time; until then dockerd takes a
    # zombie named in a pidfile for a live daemon (refusing to start) or a live containerd
    # (waiting ~10 s for it to stop). A dead process's pidfile is stale: remove it.
    for pidfile in (sandbox.pidfile, sandbox.exec_root / "containerd" / "containerd.pid"):
        with contextlib.suppress(OSError, ValueError):
            if _dead(int(pidfile.read_text().strip())):
                pidfile.unlink()


def _strings(value: object) -> list[str]:
    assert isinstance(value, list), value
    return [str(item) for item in value]


def _imported(replayed: JournalState) -> list[JsonDict]:
    value = (replayed.phase("import").result or {}).get("imported")
    assert isinstance(value, list), value
    return [item for item in value if isinstance(item, dict)]


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _biggest(manifest: ArchiveManifest) -> str:
    return max(manifest.archives, key=lambda entry: entry.bytes).file


def _mount_tmpfs(target: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(target)], check=True, capture_output=True)


def _umount(target: Path) -> None:
    if subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def _free(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _fill(path: Path, leave: int) -> Path:
    """A filler file that leaves `leave` bytes free on the filesystem of `path`."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, _free(path) - leave)
    finally:
        os.close(fd)
    return filler


# ---------------------------------------------------------------------- scenarios

# Where the CLI is SIGKILLed before `rollback --yes`; the phase it stops in (or after),
# and that phase's journal status at that moment.
KILL_POINTS: tuple[tuple[str, PhaseName, str], ...] = (
    ("export:archive-written", "export", "started"),
    ("after:export", "export", "done"),
    ("after:quiesce", "quiesce", "done"),
    ("done-unrecorded:switch", "switch", "started"),
    ("after:switch", "switch", "done"),
    ("after:restart", "restart", "done"),
    ("import:archive-loaded", "import", "started"),
    ("after:verify", "verify", "done"),
)


def test_kill_then_rollback(host: Host, rec: Recorder, tmp_path: Path) -> None:
    """1. SIGKILL of the CLI at phase boundaries, then `rollback --yes`."""
    sandbox = host.sandbox
    for index, (point, phase, status) in enumerate(KILL_POINTS):
        state = tmp_path / f"state{index}"
        expect(cli(sandbox, state, *run_args(sandbox), failpoints=f"{point}=kill"), KILLED)
        replayed, doc = assert_status_truthful(sandbox, state)
        assert doc["active"] is True and replayed.outcome is None
        assert replayed.phase(phase).status == status, (point, replayed.phases)
        assert doc["rollback_would_undo"][0] == phase
        # Imported images go too, so later imports on this daemon really load.
        purge = ("--purge-imported",) if phase in ("import", "verify") else ()
        out = expect(cli(sandbox, state, "rollback", "--yes", *purge), 0)
        assert "ok: daemon answers on the legacy store" in out
        rec.row("killed -> rolled back", assert_rolled_back(host, state),
                scenario=f"kill at {point}")
    rec.finished = True


@pytest.mark.parametrize("flag", ["storage-driver", "feature"])
def test_daemon_refuses_to_start(host: Host, rec: Recorder, tmp_path: Path, flag: str) -> None:
    """2. dockerd refuses the switched daemon.json: a flag added to its command line (as in
    a unit drop-in not yet applied) conflicts with a key the switch writes."""
    sandbox = host.sandbox
    if flag == "feature" and sandbox.engine == "26":
        rec.skip("Engine 26 has no --feature flag")
    state = tmp_path / "state"
    if flag == "feature":
        # Engine 28: any --feature flag conflicts with any `features` key in daemon.json.
        extra, args = ["--feature", "containerd-snapshotter=false"], run_args(sandbox)
        conflict = "features"
    else:
        # Both engines: the flag conflicts with the `storage-driver` key --snapshotter writes.
        extra = ["--storage-driver", "overlay2"]
        args = run_args(sandbox, "--snapshotter", "overlayfs")
        conflict = "storage-driver"
    sandbox.extra_args_file.write_text(json.dumps(extra))  # used from the next start on
    try:
        out = expect(cli(sandbox, state, *args), ExitCode.ROLLED_BACK)
        assert "the restart command" in out and "exited with status" in out
        assert "specified both as a flag and in the configuration file" in out
        assert conflict in out
        assert "rolled back automatically" in out
        assert "back on the legacy image store" in out
        statuses = phase_status(state)
        assert statuses["restart"] == "undone" and statuses["switch"] == "undone"
        assert journal(state).phase("import").status == "pending"
        # The restored daemon.json has no conflicting key, so legacy started with the flag.
        checked = assert_rolled_back(host, state)
        assert extra[0] in (Path(f"/proc/{sandbox.pid()}/cmdline").read_text())
    finally:
        sandbox.extra_args_file.unlink(missing_ok=True)
        sandbox.restart()
    rec.done(f"exit 10, rolled back ({flag} flag)", checked)


def test_daemon_comes_back_legacy(host: Host, rec: Recorder, tmp_path: Path) -> None:
    """3. dockerd starts but ignores the flag: it really reads another config file, one with
    the feature name misspelt (`containerd-snapshoter`), so it comes back legacy."""
    sandbox = host.sandbox
    state = tmp_path / "state"
    typo = tmp_path / "daemon-typo.json"
    typo.write_text(json.dumps({"features": {"containerd-snapshoter": True}}) + "\n")
    # dockerd takes the last --config-file; applied at the next start (the tool's restart).
    sandbox.extra_args_file.write_text(json.dumps(["--config-file", str(typo)]))
    try:
        out = expect(cli(sandbox, state, *run_args(sandbox)), ExitCode.ROLLED_BACK)
        assert "came back in the legacy image store, not the containerd store" in out
        assert "rolled back automatically" in out and "back on the legacy image store" in out
        replayed = journal(state)
        assert "came back in the legacy" in (replayed.phase("restart").error or "")
        assert replayed.phase("import").status == "pending"
        checked = assert_rolled_back(host, state)
    finally:
        sandbox.extra_args_file.unlink(missing_ok=True)
        sandbox.restart()
    rec.done("exit 10, rolled back (flag ignored)", checked)


def test_disk_full_during_export(host: Host, rec: Recorder, tmp_path: Path) -> None:
    """4. The state dir's filesystem is too small (plan refuses), fills up before the
    export (pre-check refuses), fills up during an archive write (ENOSPC); then space is
    freed and the same state dir resumes to completion."""
    sandbox = host.sandbox
    state = tmp_path / "state"
    state.mkdir()
    _mount_tmpfs(state, "8m")  # the sample archives need ~12 MB
    try:
        # a) The snapshot's plan check: blocker disk-state-dir, nothing written.
        out = expect(cli(sandbox, state, *run_args(sandbox)), ExitCode.BLOCKED)
        assert re.search(r"disk-state-dir: \S+: \d+\.\d MiB free, \d+\.\d MiB needed for the "
                         r"export archives \(most of it the fixed 256\.0 MiB reserve\)", out), out
        # Refused before the journal knew of it: no migration is left behind.
        assert journal(state).last_migration_id is None
        assert_untouched(host, state)
        rec.row("exit 3, plan blocker disk-state-dir", "-", scenario="disk too small (plan)")

        # b) Room for the plan, then the disk fills up right before the export.
        subprocess.run(["mount", "-o", "remount,size=300m", str(state)], check=True)
        with paused(sandbox, state, "before:export", *run_args(sandbox)) as (pause, proc):
            assert pause.wait(proc)[0] == "before:export"
            filler = _fill(state, leave=2 * MIB)
            pause.release()
            out = expect(finish(proc), ExitCode.DISK_FULL)
        assert "needs about" in out and "are free" in out
        assert journal(state).phase("export").exit_code == ExitCode.DISK_FULL
        assert not list((state / "archives").glob("batch-*"))
        rec.row("exit 9, export pre-check", assert_untouched(host, state),
                scenario="disk full before export")

        # c) ENOSPC while an archive is being written (pre-check off, see NO_ROOM_CHECK).
        # The snapshot's plan check runs again on every run before the export, so the
        # disk is filled after it, again.
        filler.unlink()
        with paused(sandbox, state, "before:export", *run_args(sandbox),
                    code=NO_ROOM_CHECK) as (pause, proc):
            pause.wait(proc)
            filler = _fill(state, leave=2 * MIB)
            pause.release()
            out = expect(finish(proc), ExitCode.DISK_FULL)
        assert "no space left on the filesystem holding" in out and "while saving" in out
        export = journal(state).phase("export")
        assert export.status == "failed" and export.exit_code == ExitCode.DISK_FULL
        assert not list((state / "archives").glob("*.partial"))
        rec.row("exit 9, ENOSPC mid-write, no .partial", assert_untouched(host, state),
                scenario="disk full during write")

        # d) Space freed: the same state dir resumes and completes.
        filler.unlink()
        expect(cli(sandbox, state, *run_args(sandbox)), 0)
        assert journal(state).phase("export").attempts == 3
        checked = complete_then_roll_back(host, state)
    finally:
        _umount(state)
    rec.done("resumed -> completed -> rolled back", checked)


def test_corrupted_archive(host: Host, rec: Recorder, tmp_path: Path) -> None:
    """5. Archives damaged after `export`: the next run writes a corrupted one again; one
    truncated after the export phase of a run is caught by the import's checksum."""
    sandbox = host.sandbox
    state = tmp_path / "state"
    expect(cli(sandbox, state, "export", "--containers", "leave"), 0)
    damaged = _biggest(read_manifest(state / "archives"))
    _flip_byte(state / "archives" / damaged, 4096)
    # The run's export phase re-exports the damaged archive and reuses the others.
    expect(cli(sandbox, state, *run_args(sandbox), failpoints="after:restart=kill"), KILLED)
    export = journal(state).phase("export").result or {}
    assert _strings(export["written"]) == [damaged]
    assert damaged not in _strings(export["reused"]) and export["reused"]
    assert _on_containerd(sandbox)
    # Damaged between the export and the import: the import must refuse before loading.
    manifest = read_manifest(state / "archives")
    path = state / "archives" / damaged
    os.truncate(path, path.stat().st_size // 2)
    # After the switch a failure never leaves the services down: rolled back at once.
    out = expect(cli(sandbox, state, *run_args(sandbox)), ExitCode.ROLLED_BACK)
    assert f"the archive {path} is missing, truncated or corrupted" in out
    assert "nothing was loaded from it" in out and "rolled back automatically" in out
    assert journal(state).phase("import").status == "undone"
    for entry in manifest.archives:  # checked before any load: nothing at all came in
        for image in entry.images:
            assert _image_id(sandbox, image.new_id) is None, f"{image.new_id} was loaded"
    assert_status_truthful(sandbox, state)
    expect(cli(sandbox, state, "rollback", "--yes"), 0)  # nothing left to roll back
    rec.done("exit 10 naming the archive, rolled back automatically",
             assert_rolled_back(host, state))


def test_daemon_dies_during_import(host: Host, rec: Recorder, tmp_path: Path) -> None:
    """6. dockerd is killed while the import runs: a clear "unreachable" error; once the
    daemon is back, `run` resumes and completes."""
    sandbox = host.sandbox
    state = tmp_path / "state"
    # By default the host is rolled back at once (the rollback restarts the daemon).
    with paused(sandbox, state, "import:archive-loaded", *run_args(sandbox)) as (pause, proc):
        pause.wait(proc)
        _kill_daemon(sandbox)
        pause.release()
        out = expect(finish(proc), ExitCode.ROLLED_BACK)
    assert "cannot reach the Docker daemon" in out and "rolled back automatically" in out
    expect(cli(sandbox, state, "cleanup"), 0)  # the imports it kept leave the store too
    assert_rolled_back(host, state)
    # With --no-auto-rollback the operator keeps the choice: resume once it answers.
    state = tmp_path / "state-no-auto"
    with paused(sandbox, state, "import:archive-loaded", *run_args(sandbox),
                "--no-auto-rollback") as (pause, proc):
        pause.wait(proc)
        _kill_daemon(sandbox)
        pause.release()
        out = expect(finish(proc), ExitCode.ENGINE_UNREACHABLE)
    assert "cannot reach the Docker daemon" in out
    replayed, doc = assert_status_truthful(sandbox, state)
    assert replayed.phase("import").status == "failed"
    assert replayed.phase("import").exit_code == ExitCode.ENGINE_UNREACHABLE
    assert doc["remaining"] == ["import", "verify", "recreate"]
    sandbox.start()  # the switched daemon.json: back on the containerd store
    expect(cli(sandbox, state, *run_args(sandbox)), 0)
    assert journal(state).phase("import").attempts == 2
    rec.done("exit 10 rolled back; with --no-auto-rollback exit 5 -> resumed -> completed "
             "-> rolled back",
             complete_then_roll_back(host, state))


def test_concurrent_run_is_locked_out(host: Host, rec: Recorder, tmp_path: Path) -> None:
    """7. A second `run` (and a `rollback`) while one holds the state dir lock: exit 8."""
    sandbox = host.sandbox
    state = tmp_path / "state"
    with paused(sandbox, state, "after:snapshot", *run_args(sandbox)) as (pause, first):
        _, pid = pause.wait(first)
        for args in (run_args(sandbox), ("rollback", "--yes")):
            out = expect(cli(sandbox, state, *args), ExitCode.LOCKED)
            assert f"is locked by pid {pid}" in out
        # status needs no lock and tells the truth mid-run
        replayed, doc = assert_status_truthful(sandbox, state)
        assert doc["active"] is True and replayed.phase("snapshot").status == "done"
        pause.release()
        expect(finish(first), 0)
    rec.done("exit 8; first run completed", complete_then_roll_back(host, state))


def test_drifted_daemon_json_blocks_rollback(host: Host, rec: Recorder, tmp_path: Path) -> None:
    """8. daemon.json edited by someone else after the switch: `rollback` shows the diff and
    changes nothing; `rollback --force` restores the original."""
    sandbox = host.sandbox
    state = tmp_path / "state"
    expect(cli(sandbox, state, *run_args(sandbox)), 0)
    edited = json.loads(sandbox.daemon_json.read_text())
    edited["debug"] = True
    sandbox.daemon_json.write_text(json.dumps(edited, indent=2) + "\n")
    before = sandbox.daemon_json.read_bytes()
    records = journal(state).record_count
    guard = _container_state(sandbox, "containerd-migrate-volume-guard")
    assert guard is not None
    out = expect(cli(sandbox, state, "rollback", "--yes"), ExitCode.BLOCKED)
    assert "was changed after the switch" in out and '+  "debug": true' in out
    assert "--force" in out
    # Nothing changed: file, store, volume guard, and no undo in the journal.
    assert sandbox.daemon_json.read_bytes() == before
    assert _on_containerd(sandbox)
    assert _container_state(sandbox, "containerd-migrate-volume-guard") == guard
    replayed, doc = assert_status_truthful(sandbox, state)
    assert replayed.outcome == "completed" and all(
        p.status == "done" for p in replayed.phases if p.name in RUN_PHASES)
    assert replayed.record_count == records + 1  # the refused rollback's run_started only
    assert len(doc["rollback_would_undo"]) == len(RUN_PHASES)
    out = expect(cli(sandbox, state, "rollback", "--yes", "--force", "--purge-imported"), 0)
    assert "restored the original" in out
    rec.done("exit 3 + diff, unchanged; --force rolled back", assert_rolled_back(host, state))


def test_sigint_during_export(host: Host, rec: Recorder, tmp_path: Path) -> None:
    """9. Ctrl-C during the export: exit 130, journaled as interrupted; `run` resumes.

    pytest itself runs with SIGINT ignored here, as it does when started from a background
    job: the child must still take the failpoint's SIGINT (tests/engine/cli.py
    child_signals)."""
    sandbox = host.sandbox
    state = tmp_path / "state"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = cli(sandbox, state, *run_args(sandbox),
                     failpoints="export:archive-written=sigint")
    finally:
        signal.signal(signal.SIGINT, previous)
    out = expect(result, ExitCode.INTERRUPTED)
    assert "interrupted" in out and "run the same command again" in out
    replayed = journal(state)
    assert replayed.phase("export").status == "interrupted"
    written = [str(p["archive"]) for p in replayed.phase("export").progress]
    assert len(written) == 1
    assert_untouched(host, state)
    expect(cli(sandbox, state, *run_args(sandbox)), 0)
    export = journal(state).phase("export").result or {}
    assert written[0] in _strings(export["reused"])
    assert written[0] not in _strings(export["written"])
    rec.done("exit 130 -> resumed -> completed -> rolled back",
             complete_then_roll_back(host, state))


def test_purge_imported_removes_exactly_the_imports(host: Host, rec: Recorder,
                                                    tmp_path: Path) -> None:
    """`rollback --purge-imported` after a completed migration removes what the import
    brought into the containerd store, and nothing that was there before. (Every rollback
    of the suite checks the store through ctr; this one also looks through dockerd.)"""
    sandbox = host.sandbox
    state = tmp_path / "state"
    expect(cli(sandbox, state, *run_args(sandbox)), 0)
    imported = _imported(journal(state))
    assert {str(image["id"]) for image in imported} <= set(containerd_images(host).values())
    checked = assert_completed(host, state)
    out = expect(cli(sandbox, state, "rollback", "--yes", "--purge-imported"), 0)
    assert "import: removed" in out and "FAILED" not in out
    assert_rolled_back(host, state)
    _set_store(host, containerd=True)  # by hand: what does dockerd show now?
    try:
        listed = json.loads(sandbox.request("GET", "/images/json?all=1")[1])
        assert [image["Id"] for image in listed
                if GUARD_IMAGE not in (image.get("RepoTags") or ())] == [host.foreign_digest]
        for image in imported:
            assert _image_id(sandbox, str(image["id"])) is None, image
            for ref in _strings(image["refs"]):
                assert _image_id(sandbox, ref) is None, ref
    finally:
        _set_store(host, containerd=False)
    rec.done(f"purged {len(imported)} imported, kept the foreign one", checked)
