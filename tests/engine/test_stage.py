"""Pre-staging against real engines: `stage`, then `run` (or `rollback`), on 26.1 and 28.5.

The containerd store is read with the engine's own `ctr`, as an operator would, so these
tests prove what dockerd will find after the switch, not what our journal says. Besides
the sample host on dockerd's managed containerd: a containerd of its own (`dockerd
--containerd`), a vfs host (native snapshotter), and builds and pulls while `stage` streams.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from migrate.archives.saved_tar import qualified_name
from migrate.engine.containerd import (
    DANGLING_PREFIX,
    Containerd,
    chain_id,
    find_ctr,
)
from migrate.journal import JournalState, replay
from migrate.models import DOCKERD_CONTAINERD_NAMESPACE
from migrate.phases.volume_guard import GUARD_IMAGE
from migrate.sandbox import (
    SampleHost,
    Sandbox,
    SandboxFactory,
    build_bulk_images,
    sandbox_samples,
)
from migrate.sandbox.fetch import engine_bin_dirs
from migrate.sandbox.layers import ArchiveImage, load_images, random_layer, rootfs_layer
from migrate.sandbox.samples import APPLETS, BUSY_LOOP, BUSYBOX, docker, image_id, inspect
from migrate.sandbox.system import mounts_under
from migrate.support.failpoints import PAUSE_TIMEOUT_ENV, RESUME_ENV, reached_path
from tests.engine.cli import cli, run_args, spawn, wait_for_file
from tests.engine.registry import RegistryImage, serve

pytestmark = pytest.mark.engine

ENGINES = ["26", "28"]
WEB = "cm-sample-web"
KILLED = -9
STAGE = ("stage", "--containers", "leave")


def _out(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-6000:]}"


def _ctr(sandbox: Sandbox, namespace: str = DOCKERD_CONTAINERD_NAMESPACE) -> Containerd:
    ctr = find_ctr(None, path=":".join(map(str, engine_bin_dirs(sandbox.engine))))
    assert ctr is not None
    return Containerd(ctr, str(sandbox.containerd_socket), namespace)


def _journal(state: Path) -> JournalState:
    return replay(state / "journal.jsonl")


def _stage_result(state: Path) -> dict[str, Any]:
    return dict(_journal(state).phase("stage").result or {})


def _store(client: Containerd) -> dict[str, str]:
    """The namespace's names, without the volume guard's image: the guard is the verify
    phase's (it stays in the store after a rollback, by its own rule), not staged."""
    return {n: d for n, d in client.images().items() if n != qualified_name(GUARD_IMAGE)}


def _legacy_view(sandbox: Sandbox) -> dict[str, str]:
    """tag (or `<none>@id`) -> image ID, as the legacy daemon lists them."""
    out = docker(sandbox.host, "images", "--no-trunc", "--format",
                 "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {(f"<none>@{i}" if ref == "<none>:<none>" else ref): i for ref, i in rows}


def _running(sandbox: Sandbox, name: str) -> bool:
    return bool(inspect(sandbox.host, "container", name)["State"]["Running"])


def _preexisting(sandbox: Sandbox) -> str:
    """An image in the containerd store before any staging: it must survive every purge."""
    tag = "cm-stage/preexisting:1"
    docker(sandbox.host, "tag", "cm-sample/base:1", tag)
    save = subprocess.run([str(engine_bin_dirs(sandbox.engine)[0] / "docker"), "-H", sandbox.host,
                           "save", tag], capture_output=True, check=True)
    client = _ctr(sandbox)
    subprocess.run([str(client.ctr), "--address", client.address, "-n", client.namespace,
                    "images", "import", "--local", "--snapshotter", "overlayfs", "-"],
                   input=save.stdout, capture_output=True, check=True)
    docker(sandbox.host, "rmi", tag)
    return f"docker.io/{tag}"


@pytest.fixture(params=ENGINES, ids=[f"engine{e}" for e in ENGINES])
def staged_host(request: pytest.FixtureRequest, fresh_sandbox: SandboxFactory,
                ) -> tuple[Sandbox, SampleHost, dict[str, str]]:
    sandbox = fresh_sandbox(str(request.param), samples=True)
    _preexisting(sandbox)
    return sandbox, sandbox_samples(sandbox), _ctr(sandbox).images()


def test_stage_then_run(staged_host: tuple[Sandbox, SampleHost, dict[str, str]],
                        tmp_path: Path) -> None:
    sandbox, samples, before = staged_host
    state = tmp_path / "state"
    legacy = _legacy_view(sandbox)
    client = _ctr(sandbox)

    staged = cli(sandbox, state, *STAGE)

    assert staged.returncode == 0, _out(staged)
    assert not sandbox.containerd_snapshotter() and _running(sandbox, WEB)
    assert _legacy_view(sandbox) == legacy  # invisible to the serving daemon
    names = client.images()
    for tag in samples.tags:
        assert f"docker.io/{tag}" in names or tag in names, tag
    dangling = [n for n in names if n.startswith(DANGLING_PREFIX)]
    assert len(dangling) == len(samples.dangling_ids)
    result = _stage_result(state)
    assert result["staged"] == len({*samples.image_ids.values(), *samples.dangling_ids})
    assert result["bytes_streamed"] >= samples.big_layer_bytes
    assert not list((state / "archives").glob("*.tar"))  # streamed: no archive on disk
    # Every layer chain is unpacked for the target snapshotter before the switch.
    big = inspect(sandbox.host, "image", samples.big_image)
    key = chain_id(tuple(big["RootFS"]["Layers"]))
    assert key in client.snapshots("overlayfs")

    again = cli(sandbox, state, *STAGE)  # idempotent: nothing new to stream
    assert again.returncode == 0, _out(again)
    assert _stage_result(state)["bytes_streamed_now"] == 0

    done = cli(sandbox, state, *run_args(sandbox))

    assert done.returncode == 0, _out(done)
    journal = _journal(state)
    assert (journal.phase("export").result or {})["written"] == []
    assert (journal.phase("import").result or {})["loaded"] == []
    assert (journal.phase("stage").result or {})["bytes_streamed_now"] == 0
    assert sandbox.containerd_snapshotter()
    id_map = json.loads((state / "reports" / "id-map.json").read_text())
    expected = {e["legacy_id"]: e["new_id"] for e in result["expected"]}
    assert {old: v["new_id"] for old, v in id_map.items()} == expected
    for tag in samples.tags:
        assert image_id(sandbox.host, tag) == expected[samples.image_ids[tag]]
    for old in samples.dangling_ids:
        assert inspect(sandbox.host, "image", expected[old])["RepoTags"] == []
    listed = docker(sandbox.host, "images", "-q", "--no-trunc", "-f", "dangling=true").stdout
    assert {expected[old] for old in samples.dangling_ids} <= set(listed.split())
    # The snapshot existed before the first run: starting a container unpacked nothing.
    snapshots_before = client.snapshots("overlayfs")
    ran = docker(sandbox.host, "run", "--rm", samples.big_image, "ls", "/data/big.bin")
    assert ran.stdout.strip() == "/data/big.bin"
    assert key in snapshots_before
    assert {k for k in client.snapshots("overlayfs") if k in snapshots_before} == snapshots_before

    rolled = cli(sandbox, state, "rollback", "--yes", "--purge-imported")

    assert rolled.returncode == 0, _out(rolled)
    assert _store(client) == before  # exactly what was staged is gone
    assert _legacy_view(sandbox) == legacy


def test_stage_then_changes_then_run(
        staged_host: tuple[Sandbox, SampleHost, dict[str, str]], tmp_path: Path) -> None:
    sandbox, samples, before = staged_host
    state = tmp_path / "state"
    client = _ctr(sandbox)
    staged = cli(sandbox, state, *STAGE)
    assert staged.returncode == 0, _out(staged)
    first = _stage_result(state)

    # Meanwhile the host keeps serving: a build, a retag, a removal.
    docker(sandbox.host, "tag", samples.base_image, "cm-stage/retagged:1")
    docker(sandbox.host, "rmi", "cm-sample/app:latest")
    docker(sandbox.host, "rmi", samples.imported_image)
    build = tmp_path / "ctx"
    build.mkdir()
    (build / "new.txt").write_text("appeared after staging\n")
    docker(sandbox.host, "build", "-q", "-t", "cm-stage/new:1", "-f", "-", str(build),
           stdin=f"FROM {samples.base_image}\nCOPY new.txt /new.txt\n")
    assert f"docker.io/{samples.imported_image}" in client.images()

    done = cli(sandbox, state, *run_args(sandbox))

    assert done.returncode == 0, _out(done)
    second = _stage_result(state)
    # Only the new image and the retagged one streamed again, not the whole host.
    assert second["staged_now"] == 2
    assert 0 < second["bytes_streamed_now"] < first["bytes_streamed_now"] / 2
    assert f"docker.io/{samples.imported_image}" in second["unstaged"]
    assert "docker.io/cm-sample/app:latest" in second["unstaged"]
    assert sandbox.containerd_snapshotter()
    assert docker(sandbox.host, "run", "--rm", "cm-stage/new:1", "cat", "/new.txt").stdout == (
        "appeared after staging\n")
    assert image_id(sandbox.host, "cm-stage/retagged:1") == image_id(sandbox.host,
                                                                     samples.base_image)
    gone = docker(sandbox.host, "image", "inspect", samples.imported_image, check=False)
    assert gone.returncode != 0  # removed before the window: not brought back
    assert docker(sandbox.host, "image", "inspect", "cm-sample/app:latest",
                  check=False).returncode != 0

    rolled = cli(sandbox, state, "rollback", "--yes", "--purge-imported")
    assert rolled.returncode == 0, _out(rolled)
    assert _store(client) == before


def test_kill_during_stage_resume_then_rollback(
        staged_host: tuple[Sandbox, SampleHost, dict[str, str]], tmp_path: Path) -> None:
    sandbox, samples, before = staged_host
    state = tmp_path / "state"
    legacy = _legacy_view(sandbox)
    client = _ctr(sandbox)

    killed = cli(sandbox, state, *STAGE, failpoints="stage:streaming=kill")

    assert killed.returncode == KILLED, _out(killed)
    journal = _journal(state)
    assert journal.phase("stage").status == "started"
    assert any("pid" in p for p in journal.phase("stage").progress)

    resumed = cli(sandbox, state, *STAGE)

    assert resumed.returncode == 0, _out(resumed)
    result = _stage_result(state)
    assert result["staged"] == len({*samples.image_ids.values(), *samples.dangling_ids})
    assert _running(sandbox, WEB) and not sandbox.containerd_snapshotter()
    status = json.loads(cli(sandbox, state, "status", "--format", "json").stdout)
    stage = next(p for p in status["phases"] if p["name"] == "stage")
    assert stage["status"] == "done" and stage["result"]["disk_bytes"] > 0

    rolled = cli(sandbox, state, "rollback", "--yes", "--purge-imported")

    assert rolled.returncode == 0, _out(rolled)
    assert "stage: removed" in rolled.stdout
    assert client.images() == before  # the pre-existing image is still there
    assert _legacy_view(sandbox) == legacy
    assert _running(sandbox, WEB)


def test_cleanup_after_rollback_removes_staged(fresh_sandbox: SandboxFactory,
                                               tmp_path: Path) -> None:
    sandbox = fresh_sandbox("28", samples=True)
    preexisting = _preexisting(sandbox)
    client = _ctr(sandbox)
    before = client.images()
    state = tmp_path / "state"
    assert cli(sandbox, state, *STAGE).returncode == 0
    rolled = cli(sandbox, state, "rollback", "--yes")  # no purge: staged images are kept
    assert rolled.returncode == 0, _out(rolled)
    assert len(client.images()) > len(before)

    cleaned = cli(sandbox, state, "cleanup")

    assert cleaned.returncode == 0, _out(cleaned)
    assert client.images() == before and preexisting in before


def _small_host(sandbox: Sandbox) -> tuple[list[str], set[str]]:
    """Two small images on a shared busybox base, and their snapshot keys (chain IDs)."""
    tags = build_bulk_images(sandbox.host, 2, prefix="cm-stage/small", workdir=sandbox.dir)
    keys = {chain_id(tuple(inspect(sandbox.host, "image", t)["RootFS"]["Layers"])) for t in tags}
    return tags, {k for k in keys if k is not None}


def _cmdline(pid: int | None) -> list[str]:
    assert pid is not None
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _processes_naming(directory: Path) -> list[str]:
    needle = (str(directory) + "/").encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if needle in cmdline:
            found.append(cmdline.decode(errors="replace"))
    return found


# How dockerd is pointed at a system containerd: `--containerd` alone (namespace `moby`),
# with `--containerd-namespace`, or both as daemon.json keys; staging must follow each.
ENDPOINTS = {"flags": (None, False), "namespace-flag": ("cm-ns", False),
             "daemon-json": ("cm-ns", True)}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("engine", ENGINES)
def test_stage_through_an_external_containerd(fresh_sandbox: SandboxFactory, engine: str,
                                              endpoint: str, tmp_path: Path) -> None:
    namespace, in_daemon_json = ENDPOINTS[endpoint]
    sandbox = fresh_sandbox(engine, external_containerd=True, containerd_namespace=namespace,
                            containerd_in_daemon_json=in_daemon_json)
    containerd = sandbox.own_containerd
    assert containerd is not None
    namespace = namespace or DOCKERD_CONTAINERD_NAMESPACE
    socket = str(containerd.socket_path)
    assert ("containerd" in json.loads(sandbox.daemon_json.read_text())) == in_daemon_json
    tags, keys = _small_host(sandbox)
    state = tmp_path / "state"
    client = _ctr(sandbox, namespace)
    assert client.address == socket
    plan = json.loads(cli(sandbox, state, "plan", "--format", "json").stdout)
    checks = {c["id"]: c["message"] for c in plan["checks"]}
    assert f"{socket} (namespace {namespace})" in checks["external-containerd"]
    assert f"{socket} (namespace {namespace}," in checks["staging-available"]

    staged = cli(sandbox, state, *STAGE)

    assert staged.returncode == 0, _out(staged)
    result = _stage_result(state)
    assert (result["address"], result["namespace"]) == (socket, namespace)
    # dockerd runs no containerd of its own: the content is in the external one's root.
    assert not (sandbox.exec_root / "containerd" / "containerd.sock").exists()
    names = client.images()
    assert {f"docker.io/{t}" for t in tags} <= set(names)
    blobs = containerd.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    assert (blobs / names[f"docker.io/{tags[0]}"].removeprefix("sha256:")).is_file()
    assert keys <= client.snapshots("overlayfs")
    containerd_pid, dockerd_pid = containerd.pid(), sandbox.pid()

    done = cli(sandbox, state, *run_args(sandbox))

    assert done.returncode == 0, _out(done)
    journal = _journal(state)
    assert journal.phase("verify").status == "done"
    assert (journal.phase("import").result or {})["loaded"] == []
    # The restart restarted dockerd only; it still uses the external containerd, named
    # where it was named (the switch kept daemon.json's endpoint keys).
    assert containerd.pid() == containerd_pid and sandbox.pid() != dockerd_pid
    argv = _cmdline(sandbox.pid())
    config = json.loads(sandbox.daemon_json.read_text())
    if in_daemon_json:
        assert "--containerd" not in argv
        assert (config["containerd"], config["containerd-namespace"]) == (socket, namespace)
    else:
        assert argv[argv.index("--containerd") + 1] == socket and "containerd" not in config
    assert sandbox.containerd_snapshotter()
    snapshots_before = client.snapshots("overlayfs")
    assert keys <= snapshots_before  # unpacked before the first run
    ran = docker(sandbox.host, "run", "--rm", tags[0])
    assert ran.stdout.strip() == "bulk image 0"
    assert snapshots_before <= client.snapshots("overlayfs")
    if namespace != DOCKERD_CONTAINERD_NAMESPACE:
        moby = _ctr(sandbox, DOCKERD_CONTAINERD_NAMESPACE)
        assert moby.images() == {} and moby.snapshots("overlayfs") == set()

    # destroy stops that containerd (by pid) and its shims, and leaves no mount behind.
    docker(sandbox.host, "run", "-d", "--name", "busy", tags[1], "sh", "-c", BUSY_LOOP)
    sandbox.destroy()
    assert containerd.pid() is None and not sandbox.dir.exists()
    assert _processes_naming(sandbox.dir) == [] and mounts_under(sandbox.dir) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_stage_on_vfs_unpacks_into_native(fresh_sandbox: SandboxFactory, engine: str,
                                          tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine, daemon_json={"storage-driver": "vfs"})
    info = sandbox.info()
    assert info["Driver"] == "vfs" and info["DriverStatus"] is None
    tags, keys = _small_host(sandbox)
    state = tmp_path / "state"
    client = _ctr(sandbox)

    staged = cli(sandbox, state, *STAGE)

    assert staged.returncode == 0, _out(staged)
    assert _stage_result(state)["snapshotter"] == "native"
    assert keys <= client.snapshots("native")
    assert not keys & client.snapshots("overlayfs")

    done = cli(sandbox, state, *run_args(sandbox))

    assert done.returncode == 0, _out(done)
    assert _journal(state).phase("verify").status == "done"
    assert (_journal(state).phase("import").result or {})["loaded"] == []
    assert json.loads(sandbox.daemon_json.read_text())["storage-driver"] == "native"
    info = sandbox.info()
    assert info["Driver"] == "native"
    assert ["driver-type", "io.containerd.snapshotter.v1"] in info["DriverStatus"]
    snapshots_before = client.snapshots("native")
    assert keys <= snapshots_before  # the first container unpacks nothing
    ran = docker(sandbox.host, "run", "--rm", tags[1])
    assert ran.stdout.strip() == "bulk image 1"
    assert snapshots_before <= client.snapshots("native")


@pytest.mark.parametrize("engine", ENGINES)
def test_builds_and_pulls_work_during_stage(fresh_sandbox: SandboxFactory, engine: str,
                                            tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine)
    tags, _ = _small_host(sandbox)
    state = tmp_path / "state"
    resume = tmp_path / "resume"
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "hello.txt").write_text("built during staging\n")
    pulled_image = RegistryImage.from_layer(
        "cm-pull/hello", "1", rootfs_layer(tmp_path, BUSYBOX, APPLETS).path,
        ["echo", "pulled during staging"])

    # Held in the middle of its first stream: `docker save` open, `ctr import` reading.
    stage = spawn(sandbox, state, *STAGE, failpoints="stage:streaming=pause",
                  env={RESUME_ENV: str(resume), PAUSE_TIMEOUT_ENV: "120"})
    try:
        wait_for_file(reached_path(resume), stage)
        importing = next(p for p in _journal(state).phase("stage").progress if "pid" in p)
        built = docker(sandbox.host, "build", "-q", "-t", "cm-stage/built:1", "-f", "-",
                       str(context), stdin=f"FROM {tags[0]}\nCOPY hello.txt /hello.txt\n",
                       check=False)
        with serve(pulled_image) as registry:
            pulled_ref = f"{registry}/cm-pull/hello:1"
            pull = docker(sandbox.host, "pull", pulled_ref, check=False)
        assert stage.poll() is None and Path(f"/proc/{importing['pid']}").exists()
    finally:
        resume.touch()
        out, err = stage.communicate(timeout=300)

    assert stage.returncode == 0, f"{out}\n{err[-6000:]}"
    assert built.returncode == 0, built.stderr
    assert pull.returncode == 0, pull.stderr
    assert image_id(sandbox.host, pulled_ref) == pulled_image.config_digest
    pinned = f"{pulled_ref.rsplit(':', 1)[0]}@{pulled_image.manifest_digest}"
    assert inspect(sandbox.host, "image", pulled_ref)["RepoDigests"] == [pinned]
    listed = docker(sandbox.host, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    assert {"cm-stage/built:1", pulled_ref} <= set(listed.split())
    legacy = {ref: image_id(sandbox.host, ref) for ref in ("cm-stage/built:1", pulled_ref)}

    done = cli(sandbox, state, *run_args(sandbox))

    assert done.returncode == 0, _out(done)
    assert _stage_result(state)["staged_now"] == 2  # what appeared during the first stage
    assert _journal(state).phase("verify").status == "done"
    id_map = json.loads((state / "reports" / "id-map.json").read_text())
    for ref, old in legacy.items():
        assert image_id(sandbox.host, ref) == id_map[old]["new_id"], ref
    assert docker(sandbox.host, "run", "--rm", "cm-stage/built:1", "cat", "/hello.txt"
                  ).stdout == "built during staging\n"
    assert docker(sandbox.host, "run", "--rm", pulled_ref).stdout == "pulled during staging\n"
    # The registry's digest does not survive the store change: a pinned reference is gone.
    assert pinned not in inspect(sandbox.host, "image", pulled_ref)["RepoDigests"]
    assert docker(sandbox.host, "image", "inspect", pinned, check=False).returncode != 0


# cachestat(2) (Linux 6.5+): how many of a file's cached pages are dirty or under writeback.
_CACHESTAT = 451


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in
                ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


def _unwritten_pages(paths: list[Path]) -> int:
    """Dirty + under-writeback page-cache pages of these files; skips without cachestat."""
    libc = ctypes.CDLL(None, use_errno=True)
    total = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            stat = _Cachestat()
            if libc.syscall(_CACHESTAT, fd, ctypes.byref(_CachestatRange(0, 0)),
                            ctypes.byref(stat), 0) != 0:
                pytest.skip(f"no cachestat(2) here: {os.strerror(ctypes.get_errno())}")
            total += stat.dirty + stat.writeback
        finally:
            os.close(fd)
    return total


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


@pytest.mark.parametrize("engine", ENGINES, ids=[f"engine{e}" for e in ENGINES])
def test_stage_leaves_nothing_dirty_for_the_first_container_stop(
        engine: str, fresh_sandbox: SandboxFactory, tmp_path: Path) -> None:
    """The window's first container stop would otherwise write back the staged snapshots:
    unmounting a legacy overlay2 rootfs syncs the whole filesystem under the data root."""
    sandbox = fresh_sandbox(engine)
    with tempfile.TemporaryDirectory(dir=sandbox.dir) as work:
        layers = (rootfs_layer(Path(work), BUSYBOX, APPLETS),
                  random_layer(Path(work), "payload", 24 * 1024 * 1024))
        load_images(sandbox.host, [ArchiveImage(tags=("cm-stage/flush:1",), layers=layers)])
    docker(sandbox.host, "run", "-d", "--name", WEB, "cm-stage/flush:1", "sh", "-c", BUSY_LOOP)
    state = tmp_path / "state"

    staged = cli(sandbox, state, *STAGE)

    assert staged.returncode == 0, _out(staged)
    assert _stage_result(state)["flushed"]["how"] == "syncfs"
    store = sandbox.data_root / "containerd" / "daemon"
    unpacked = _files(store / "io.containerd.snapshotter.v1.overlayfs" / "snapshots")
    blobs = _files(store / "io.containerd.content.v1.content" / "blobs")
    assert sum(p.stat().st_size for p in unpacked) >= 24 * 1024 * 1024
    assert _unwritten_pages(unpacked + blobs) == 0

    # The engine behaviour this guards against: a file left dirty on the data root's
    # filesystem is on disk once a container stop returns.
    dirty = sandbox.dir / "dirty.bin"
    dirty.write_bytes(os.urandom(8 * 1024 * 1024))
    if _unwritten_pages([dirty]) == 0:
        pytest.skip("the kernel wrote the probe file back before the stop (memory pressure)")
    docker(sandbox.host, "stop", WEB)
    assert _unwritten_pages([dirty]) == 0
