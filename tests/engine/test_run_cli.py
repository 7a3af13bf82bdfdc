"""Issue 3 acceptance through the real CLI: `python -m migrate ...` subprocesses against a
private dockerd with the sample host, on Engine 26.1 and 28.5.

Each test starts its own sandbox (`fresh_sandbox`), so these tests migrate, kill and restart
freely. To keep the file fast, tests share sandboxes between acceptance items: every
migrating test also covers one daemon.json case (overlay2 plus other keys: end to end;
absent: crash during export; other keys only: pre-staged export; vfs from the start: the
three later crash points, chained in one migration). Every completed run is checked by
the same `_assert_migrated`, i.e. against what an uninterrupted run leaves behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker as docker_sdk
import pytest

from migrate.archives.manifest import read_manifest
from migrate.journal import PHASE_ORDER, JournalState, PhaseName, replay
from migrate.journal.state_dir import StateDir
from migrate.phases.runner import RUN_PHASES
from migrate.phases.volume_guard import GUARD_IMAGE, GUARD_LABEL, GUARD_NAME
from migrate.sandbox import (
    SampleHost,
    Sandbox,
    SandboxFactory,
    docker,
    populate_sandbox,
    sandbox_samples,
)

from .cli import cli, restart_command, run_args

pytestmark = pytest.mark.engine

ENGINES = ["26", "28"]
KILLED = -9  # subprocess returncode of a process that died of SIGKILL
WEB = "cm-sample-web"  # the sample container that runs; quiesce must stop it
PROBE_IMAGE = "cm-sample/base:1"  # static busybox with PATH=/bin
BUSYBOX = Path("/usr/bin/busybox")
NEW_TAG = "cm-run-cli/new:1"
FLAG = {"containerd-snapshotter": True}


def _rendered(data: dict[str, Any]) -> bytes:
    """daemon.json as the switch writes it: two-space JSON, keys in their original order."""
    return (json.dumps(data, indent=2) + "\n").encode()


@dataclass(frozen=True)
class DaemonJson:
    """One daemon.json case: the file before the migration and the bytes it must end with."""

    name: str
    original: bytes | None  # None: no daemon.json at all
    expected: bytes
    legacy_driver: str


ABSENT = DaemonJson("absent", None, _rendered({"features": FLAG}), "overlay2")
OTHER_KEYS = DaemonJson(
    "other-keys",
    b'{"log-level": "info", "labels": ["cm-test=other-keys"]}\n',
    _rendered({"log-level": "info", "labels": ["cm-test=other-keys"], "features": FLAG}),
    "overlay2",
)
OVERLAY2 = DaemonJson(
    "overlay2",
    b'{\n  "log-opts": {"max-size": "10m", "max-file": "3"},\n'
    b'  "registry-mirrors": ["https://mirror.example.com"],\n'
    b'  "storage-driver": "overlay2"\n}\n',
    # overlay2 must become overlayfs: kept as is, every container create would fail.
    _rendered({"log-opts": {"max-size": "10m", "max-file": "3"},
               "registry-mirrors": ["https://mirror.example.com"],
               "storage-driver": "overlayfs", "features": FLAG}),
    "overlay2",
)
VFS = DaemonJson("vfs", b'{"storage-driver": "vfs"}\n',
                 _rendered({"storage-driver": "native", "features": FLAG}), "vfs")


@contextmanager
def _client(sandbox: Sandbox) -> Iterator[Any]:
    client = docker_sdk.DockerClient(base_url=sandbox.host, timeout=60)
    try:
        yield client
    finally:
        client.close()


def _out(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-6000:]}"


def _journal(state: Path) -> JournalState:
    return replay(state / "journal.jsonl")


def _result(journal: JournalState, phase: PhaseName) -> dict[str, Any]:
    result: dict[str, Any] = dict(journal.phase(phase).result or {})
    return result


def _statuses(journal: JournalState) -> dict[str, str]:
    return {phase.name: phase.status for phase in journal.phases}


def _running(sandbox: Sandbox, name: str) -> bool:
    with _client(sandbox) as client:
        return bool(client.containers.get(name).attrs["State"]["Running"])


def _prepare(factory: SandboxFactory, engine: str, config: DaemonJson) -> tuple[
        Sandbox, SampleHost]:
    """A sample host on the legacy store described by `config`, with WEB running."""
    if config.legacy_driver == "vfs":
        # The legacy store must BE vfs: switch the driver before any image exists.
        sandbox = factory(engine)
        assert config.original is not None
        sandbox.daemon_json.write_bytes(config.original)
        sandbox.restart()
        populate_sandbox(sandbox)
    else:
        sandbox = factory(engine, samples=True)
        if config.original != sandbox.daemon_json.read_bytes():
            if config.original is None:
                sandbox.daemon_json.unlink()
            else:
                sandbox.daemon_json.write_bytes(config.original)
            sandbox.restart()
            with _client(sandbox) as client:
                client.containers.get(WEB).start()  # the restart killed it
    info = sandbox.info()
    assert info["Driver"] == config.legacy_driver, info["Driver"]
    assert not sandbox.containerd_snapshotter()
    assert _running(sandbox, WEB)
    return sandbox, sandbox_samples(sandbox)


def _daemon_json(sandbox: Sandbox) -> bytes | None:
    try:
        return sandbox.daemon_json.read_bytes()
    except FileNotFoundError:
        return None


def _legacy_ids(samples: SampleHost, extra: dict[str, str]) -> set[str]:
    return {*samples.image_ids.values(), *samples.dangling_ids, *extra.values()}


def _assert_migrated(sandbox: Sandbox, state: Path, samples: SampleHost, config: DaemonJson,
                     extra: dict[str, str] | None = None) -> dict[str, str]:
    """The end state of a completed run; returns legacy ID -> new ID."""
    extra = extra or {}
    journal = _journal(state)
    assert journal.finished and journal.outcome == "completed", _statuses(journal)
    assert all(phase.status == "done" for phase in journal.phases
               if phase.name in RUN_PHASES), _statuses(journal)
    assert sandbox.containerd_snapshotter(), sandbox.info()["DriverStatus"]
    assert _daemon_json(sandbox) == config.expected

    id_map = json.loads((state / "reports" / "id-map.json").read_text())
    assert set(id_map) == _legacy_ids(samples, extra)
    new_ids = {legacy: str(entry["new_id"]) for legacy, entry in id_map.items()}
    assert all(new.startswith("sha256:") for new in new_ids.values()), id_map
    # The IDs predicted from the archives at export time are the ones that arrived.
    manifest = read_manifest(state / "archives")
    predicted = {image.legacy_id: image.new_id for entry in manifest.archives
                 for image in entry.images}
    assert predicted == new_ids
    tags = {**samples.image_ids, **extra}
    for tag, legacy in tags.items():
        assert tag in id_map[legacy]["tags"], (tag, id_map[legacy])

    with _client(sandbox) as client:
        for tag, legacy in tags.items():
            image = client.images.get(tag)
            assert image.id == new_ids[legacy], tag
            assert tag in image.tags
        for legacy in samples.dangling_ids:
            assert client.images.get(new_ids[legacy]).id == new_ids[legacy]
        # Nothing loaded twice, nothing left over: exactly the migrated images, and the
        # one-file image of the running volume guard.
        guard_image = client.images.get(GUARD_IMAGE).id
        assert {image.id for image in client.images.list(all=True)} == (
            set(new_ids.values()) | {guard_image})
        # The legacy containers are hidden, not deleted; the only visible container is the
        # (running) volume guard that keeps their volumes from looking unused.
        visible = client.containers.list(all=True)
        assert [(c.name, c.labels.get(GUARD_LABEL), c.status) for c in visible] == [
            (GUARD_NAME, "1", "running")]
        assert len(list((sandbox.data_root / "containers").iterdir())) == (
            len(samples.containers) + 1)
        for volume in samples.volumes:
            assert client.volumes.get(volume).name == volume
        # The new store can run what it loaded: create, start, wait for exit 0.
        probe = client.containers.create(PROBE_IMAGE, ["true"], name="cm-run-cli-probe")
        try:
            probe.start()
            assert probe.wait(timeout=60)["StatusCode"] == 0
        finally:
            probe.remove(force=True)

    status = cli(sandbox, state, "status", "--format", "json")
    assert status.returncode == 0, _out(status)
    doc = json.loads(status.stdout)
    assert doc["outcome"] == "completed" and not doc["active"] and doc["remaining"] == []
    assert [(p["name"], p["status"]) for p in doc["phases"]] == [
        (name, "done" if name in RUN_PHASES else "pending") for name in PHASE_ORDER]
    return new_ids


def _assert_json_logs(stderr: str) -> list[dict[str, Any]]:
    lines = stderr.splitlines()
    assert lines, "no log output"
    events = []
    for line in lines:
        event = json.loads(line)  # raises on any non-JSON line (console text, bars, traces)
        assert isinstance(event, dict) and {"event", "level", "timestamp"} <= set(event), line
        events.append(event)
    return events


@pytest.mark.parametrize("engine", ENGINES)
def test_run_end_to_end(fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path) -> None:
    sandbox, samples = _prepare(fresh_sandbox, engine, OVERLAY2)
    state = tmp_path / "state"

    done = cli(sandbox, state, "--log-format", "json", *run_args(sandbox))

    assert done.returncode == 0, _out(done)
    assert "completed" in done.stdout
    events = _assert_json_logs(done.stderr)
    finished = [e["phase"] for e in events if e["event"] == "phase done"]
    assert finished == list(RUN_PHASES)
    new_ids = _assert_migrated(sandbox, state, samples, OVERLAY2)
    assert len(set(new_ids.values())) == len(new_ids)
    journal = _journal(state)
    assert _result(journal, "quiesce")["stopped"] == [WEB]
    assert _result(journal, "restart")["restarted"] is True
    assert _result(journal, "verify")["multi_platform"] == "supported"
    assert "multi-platform: supported" in done.stdout

    verify = cli(sandbox, state, "verify")
    assert verify.returncode == 0, _out(verify)
    assert "FAIL" not in verify.stdout and "OK" in verify.stdout.splitlines()[0]
    assert ("multi-platform: supported (linux/amd64 and linux/arm64 under one name"
            in verify.stdout)
    report = json.loads((state / "reports" / "verification.json").read_text())
    assert report["multi_platform"]["supported"] is True


def _run(sandbox: Sandbox, state: Path, failpoint: str | None = None) -> JournalState:
    """One `run`; with a failpoint it must die of SIGKILL and leave a replayable journal of
    an unfinished migration, without one it must complete."""
    done = cli(sandbox, state, *run_args(sandbox), failpoints=failpoint)
    journal = _journal(state)
    if failpoint is None:
        assert done.returncode == 0, _out(done)
        assert journal.finished and journal.outcome == "completed"
    else:
        assert done.returncode == KILLED, _out(done)
        assert journal.migration_id is not None and not journal.finished
    assert not journal.torn_tail  # every record was fsynced before the kill
    assert len({run.migration_id for run in journal.runs}) == 1  # resumed, not restarted
    return journal


def _archives(state: Path) -> dict[str, int]:
    """Complete archive name -> mtime (ns)."""
    return {path.name: path.stat().st_mtime_ns for path in (state / "archives").glob("*.tar")}


@pytest.mark.parametrize("engine", ENGINES)
def test_kill_during_export_then_resume(fresh_sandbox: SandboxFactory, engine: str,
                                        tmp_path: Path) -> None:
    sandbox, samples = _prepare(fresh_sandbox, engine, ABSENT)
    state = tmp_path / "state"

    killed = _run(sandbox, state, "export:archive-written=kill")

    statuses = _statuses(killed)
    assert statuses["snapshot"] == "done" and statuses["export"] == "started"
    assert statuses["quiesce"] == "pending"
    first = _archives(state)
    assert len(first) == 1, first
    progress = killed.phase("export").progress
    assert [(p["archive"], p["reused"]) for p in progress] == [(next(iter(first)), False)]
    assert not list((state / "archives").glob("*.partial"))
    # Nothing on the host changed.
    assert _daemon_json(sandbox) is None
    assert not sandbox.containerd_snapshotter()
    assert _running(sandbox, WEB)

    journal = _run(sandbox, state)

    assert len(journal.runs) == 2
    result = _result(journal, "export")
    assert journal.phase("export").attempts == 2
    assert set(first) <= set(result["reused"]) and not set(first) & set(result["written"])
    assert len(result["written"]) == len(result["archives"]) - 1
    after = _archives(state)
    assert {name: after[name] for name in first} == first  # not written again
    _assert_migrated(sandbox, state, samples, ABSENT)


@pytest.mark.parametrize("engine", ENGINES)
def test_kills_after_switch_restart_and_import_then_resume(
        fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path) -> None:
    """Three crashes in one migration, each resumed by the next `run`: after the switch was
    journaled, after the restart happened but before it was journaled, and after the first
    archive was loaded. The last `run` completes and must leave what an uninterrupted one
    leaves. (The vfs host is the slowest to build, so it hosts all three.)"""
    sandbox, samples = _prepare(fresh_sandbox, engine, VFS)
    state = tmp_path / "state"
    legacy_dockerd = sandbox.pid()

    # 1. SIGKILL right after the switch phase recorded its result.
    killed = _run(sandbox, state, "after:switch=kill")

    assert [_statuses(killed)[name] for name in RUN_PHASES] == [
        "done", "done", "done", "done", "done", "pending", "pending", "pending", "pending"]
    assert _daemon_json(sandbox) == VFS.expected
    assert not sandbox.containerd_snapshotter()  # switched on disk, not restarted yet
    assert sandbox.pid() == legacy_dockerd
    assert not _running(sandbox, WEB)

    # 2. Resumed; SIGKILL after the restart happened, before the journal says so.
    killed = _run(sandbox, state, "done-unrecorded:restart=kill")

    assert len(killed.runs) == 2
    assert all(killed.phase(name).attempts == 1
               for name in ("snapshot", "export", "quiesce", "commit", "switch"))
    assert _statuses(killed)["restart"] == "started"
    assert sandbox.containerd_snapshotter()
    assert _daemon_json(sandbox) == VFS.expected
    dockerd = sandbox.pid()
    assert dockerd is not None and dockerd != legacy_dockerd

    # 3. Resumed; SIGKILL after the first archive was loaded.
    killed = _run(sandbox, state, "import:archive-loaded=kill")

    assert len(killed.runs) == 3
    assert killed.phase("restart").attempts == 2
    assert _result(killed, "restart")["restarted"] is False  # no second restart: downtime
    assert sandbox.pid() == dockerd
    assert _statuses(killed)["import"] == "started"
    archives = _result(killed, "export")["archives"]
    assert len(archives) >= 2
    loaded = [str(p["archive"]) for p in killed.phase("import").progress]
    assert len(loaded) == 1, loaded
    entry = read_manifest(state / "archives").entry(loaded[0])
    assert entry is not None
    with _client(sandbox) as client:
        present = {image.id for image in client.images.list(all=True)}
    assert {image.new_id for image in entry.images} <= present

    # 4. Resumed to the end.
    journal = _run(sandbox, state)

    assert len(journal.runs) == 4
    result = _result(journal, "import")
    assert loaded[0] in result["skipped"] and loaded[0] not in result["loaded"]
    assert sorted(result["loaded"]) == sorted(set(archives) - {loaded[0]})
    assert sandbox.pid() == dockerd
    _assert_migrated(sandbox, state, samples, VFS)


def _build_new_image(sandbox: Sandbox, context: Path) -> str:
    context.mkdir()
    shutil.copy2(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\nCMD ["true"]\n')
    # migrate.sandbox.docker runs `DOCKER_BUILDKIT=0 docker -H HOST ...` (legacy builder).
    built = docker(sandbox.host, "build", "-q", "-t", NEW_TAG, str(context), check=False)
    assert built.returncode == 0, built.stderr
    with _client(sandbox) as client:
        return str(client.images.get(NEW_TAG).id)


@pytest.mark.parametrize("engine", ENGINES)
def test_prestaged_export_then_run(fresh_sandbox: SandboxFactory, engine: str,
                                   tmp_path: Path) -> None:
    sandbox, samples = _prepare(fresh_sandbox, engine, OTHER_KEYS)
    state = tmp_path / "state"

    exported = cli(sandbox, state, "export", "--containers", "leave")

    assert exported.returncode == 0, _out(exported)
    journal = _journal(state)
    assert [journal.phase(name).status for name in RUN_PHASES] == [
        "done", "done", "pending", "pending", "pending", "pending", "pending", "pending",
        "pending"]
    first = _result(journal, "export")
    assert first["archives"] and first["written"] == first["archives"]
    staged = _archives(state)
    assert set(staged) == set(first["archives"])
    assert not sandbox.containerd_snapshotter()
    assert _daemon_json(sandbox) == OTHER_KEYS.original
    assert _running(sandbox, WEB)

    new_legacy = _build_new_image(sandbox, tmp_path / "context")
    done = cli(sandbox, state, *run_args(sandbox))

    assert done.returncode == 0, _out(done)
    journal = _journal(state)
    assert journal.phase("snapshot").attempts == 2 and journal.phase("export").attempts == 2
    second = _result(journal, "export")
    assert sorted(second["reused"]) == sorted(first["archives"])
    assert len(second["written"]) == 1
    assert second["written"][0] not in first["archives"]
    assert sorted(second["archives"]) == sorted([*first["archives"], *second["written"]])
    entry = read_manifest(state / "archives").entry(second["written"][0])
    assert entry is not None and entry.refs == (NEW_TAG,) and entry.image_ids == (new_legacy,)
    # Only the new image was saved: about one busybox, far less than the first export.
    assert 0 < second["bytes_written"] < BUSYBOX.stat().st_size + 1024 * 1024
    assert second["bytes_written"] < first["bytes_written"] / 4
    after = _archives(state)
    assert {name: after[name] for name in staged} == staged  # reused, not rewritten

    new_ids = _assert_migrated(sandbox, state, samples, OTHER_KEYS, extra={NEW_TAG: new_legacy})
    report = json.loads((state / "reports" / "verification.json").read_text())
    assert report["ok"] is True
    checked = {check["legacy_id"]: check for check in report["images"]}
    assert checked[new_legacy]["new_id"] == new_ids[new_legacy]
    assert checked[new_legacy]["problems"] == []
    with _client(sandbox) as client:
        assert client.containers.run(NEW_TAG, remove=True) == b""  # busybox true, exit 0
    verify = cli(sandbox, state, "verify")
    assert verify.returncode == 0, _out(verify)


def _assert_untouched(sandbox: Sandbox, state: Path, daemon_json: bytes | None,
                      dockerd: int | None) -> None:
    journal = _journal(state)
    assert journal.runs == () and journal.migration_id is None
    assert all(phase.status == "pending" for phase in journal.phases)
    assert _daemon_json(sandbox) == daemon_json
    assert sandbox.pid() == dockerd  # never restarted
    assert not sandbox.containerd_snapshotter()
    assert list((state / "archives").glob("*")) == []  # no archive (maybe no state dir)


@pytest.mark.parametrize("engine", ENGINES)
def test_refusals_change_nothing(fresh_sandbox: SandboxFactory, engine: str,
                                 tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine)
    before, dockerd = _daemon_json(sandbox), sandbox.pid()
    state = tmp_path / "state"

    # No --yes and no terminal (stdin is /dev/null): refuse instead of hanging.
    unconfirmed = cli(sandbox, state, "run", "--containers", "leave",
                      "--restart-command", restart_command(sandbox))
    assert unconfirmed.returncode == 2, _out(unconfirmed)
    assert "--yes" in unconfirmed.stderr and "Traceback" not in unconfirmed.stderr
    _assert_untouched(sandbox, state, before, dockerd)

    # A second, concurrent run: the state dir lock is held by "the first one" (this test).
    with StateDir(state).lock():
        locked = cli(sandbox, state, *run_args(sandbox))
    assert locked.returncode == 8, _out(locked)
    assert "locked" in locked.stderr and "Traceback" not in locked.stderr
    _assert_untouched(sandbox, state, before, dockerd)


def test_unreachable_daemon_is_one_paragraph(tmp_path: Path) -> None:
    nowhere = Sandbox(tmp_path / "no-sandbox", "28")  # never started: only its paths are used
    # The later --host wins over the one cli() passes.
    done = cli(nowhere, tmp_path / "state", "--host", "unix:///nonexistent.sock", "plan")

    assert done.returncode == 5, _out(done)
    assert done.stdout == ""
    text = done.stderr.strip()
    assert text.startswith("error: ") and "/nonexistent.sock" in text
    assert "Traceback" not in text and "\n\n" not in text
    assert len(text.splitlines()) <= 3, text
