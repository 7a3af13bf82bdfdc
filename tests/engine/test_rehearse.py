"""`containerd-migrate rehearse` (issue 20) on real engines 26 and 28.

The sample host (an image with a VOLUME, a dangling image, a container on a named volume,
a created one, a running one) rehearses with exit 0 on a throwaway engine made from the
sandbox dockerd's own binaries, and afterwards the live host is what it was: daemon.json
bytes, image IDs, container IDs and states, network interfaces, mounts, processes (on 28
with `--start` too). A rehearsal killed right after its engine answered leaves that engine
running; `cleanup`, and the next `rehearse`, stop it (by its recorded pid), unmount and
remove it. A store that cannot run the images fails with `run`'s words and exit 4.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.commands.rehearse import DEFAULT_DIR_NAME, PENDING_NAME, REPORT_NAME
from migrate.errors import ExitCode
from migrate.host.throwaway import RECORD_NAME, ThrowawayEngine, mounts_under
from migrate.sandbox import Sandbox, SandboxFactory, docker

from .cli import cli

pytestmark = pytest.mark.engine

KILLED = -9


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: the throwaway engine's sockets must fit in 108 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="cm-rh-", dir="/tmp"))
    yield folder
    # A failed test may leave a rehearsal's engine running: stopped by its recorded pid.
    for record in [*folder.glob(f"*/{RECORD_NAME}"), *folder.glob(f"*/*/{RECORD_NAME}")]:
        ThrowawayEngine(record.parent).destroy()
    shutil.rmtree(folder, ignore_errors=True)


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline and b"pytest" not in cmdline:
            found.append(int(entry.name))
    return found


def _link_names(ip_link_output: str) -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in ip_link_output.splitlines()}


def _rehearse_in_own_namespaces(sandbox: Sandbox, state_dir: Path, out: Path,
                                *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI (and so the throwaway engine it starts) in network and mount namespaces of
    its own, which list their interfaces and mounts before and after the CLI (in `out`):
    other tests on this machine add and remove interfaces and mounts in the host's
    namespaces all the time, and none of theirs shows in these (private propagation)."""
    script = ('cut -d" " -f5 /proc/self/mountinfo | sort > "$OUT/mounts-before"; "$@"; rc=$?; '
              'cut -d" " -f5 /proc/self/mountinfo | sort > "$OUT/mounts-after"; '
              'ip -o link show > "$OUT/links"; exit $rc')
    argv = ["unshare", "--net", "--mount", "--", "sh", "-c", script, "sh", sys.executable,
            "-m", "migrate", "--host", sandbox.host, "--daemon-config",
            str(sandbox.daemon_json), "--state-dir", str(state_dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "OUT": str(out)}, stdin=subprocess.DEVNULL)


def _live_state(sandbox: Sandbox) -> dict[str, Any]:
    host = sandbox.host
    images = docker(host, "images", "-a", "--no-trunc", "--format",
                    "{{.ID}} {{.Repository}}:{{.Tag}}").stdout
    containers = docker(host, "ps", "-a", "--no-trunc", "--format",
                        "{{.ID}} {{.Names}} {{.State}}").stdout
    volumes = docker(host, "volume", "ls", "-q").stdout
    return {
        "daemon.json": sandbox.daemon_json.read_bytes(),
        "images": sorted(images.splitlines()),
        "containers": sorted(containers.splitlines()),
        "volumes": sorted(volumes.splitlines()),
        "mounts under the sandbox": mounts_under(sandbox.dir),
    }


@pytest.mark.parametrize(("engine", "start"), [("26", False), ("28", True)])
def test_rehearse_moves_everything_and_leaves_the_live_host_as_it_was(
        fresh_sandbox: SandboxFactory, short_tmp: Path, engine: str, start: bool) -> None:
    sandbox = fresh_sandbox(engine, samples=True)
    state_dir = short_tmp / "state"
    before = _live_state(sandbox)
    done = _rehearse_in_own_namespaces(sandbox, state_dir, short_tmp, "rehearse", "--format",
                                       "json", *(["--start"] if start else []))

    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["failures"] == []
    assert report["containers_created"] == report["containers"] == 3
    # --start: the one that runs on the live daemon ran in the throwaway engine too.
    assert report["containers_started"] == (1 if start else None)
    assert report["dockerd"] == str(Path(f"/proc/{sandbox.pid()}/exe").readlink())
    figures = report["figures"]
    assert figures["engine_start_seconds"] > 0 and figures["archive_bytes"] > 0
    assert figures["window_seconds"] >= figures["engine_start_seconds"]
    saved = state_dir / "reports" / REPORT_NAME
    assert json.loads(saved.read_text())["figures"] == figures
    assert saved.stat().st_mode & 0o777 == 0o600
    # Nothing of the live host changed, nothing of the rehearsal is left.
    assert _live_state(sandbox) == before
    assert _link_names((short_tmp / "links").read_text()) == {"lo"}
    # No new mount anywhere (a mount can go: the kernel detaches the copy of one whose
    # mount point another test removed in the host's namespace).
    mounts_before = set((short_tmp / "mounts-before").read_text().splitlines())
    assert set((short_tmp / "mounts-after").read_text().splitlines()) - mounts_before == set()
    rehearsal = state_dir / DEFAULT_DIR_NAME
    assert not rehearsal.exists()
    assert not (state_dir / PENDING_NAME).exists()
    assert _processes_naming(str(rehearsal)) == []
    assert mounts_under(state_dir) == []
    # Rehearsal is not a migration: the journal does not know of it.
    assert not (state_dir / "journal.jsonl").exists() or \
        "migration" not in (state_dir / "journal.jsonl").read_text()


def _kill_a_rehearsal(sandbox: Sandbox, state_dir: Path, rehearsal: Path,
                      point: str = "rehearse:engine-started") -> int:
    """A rehearsal SIGKILLed at `point` once its engine answered: that engine runs on."""
    killed = cli(sandbox, state_dir, "rehearse", "--dir", str(rehearsal),
                 failpoints=f"{point}=kill")
    assert killed.returncode == KILLED, killed.stderr
    pid = json.loads((rehearsal / RECORD_NAME).read_text())["pid"]
    assert isinstance(pid, int) and pid in _processes_naming(str(rehearsal))
    return pid


def _nothing_left(rehearsal: Path, state_dir: Path) -> None:
    assert not rehearsal.exists()
    assert not (state_dir / PENDING_NAME).exists()
    assert _processes_naming(str(rehearsal)) == []
    assert mounts_under(rehearsal.parent) == []


def test_a_killed_rehearsal_is_cleaned_up_by_cleanup_or_the_next_rehearsal(
        fresh_sandbox: SandboxFactory, short_tmp: Path) -> None:
    sandbox = fresh_sandbox("26", samples=True)
    state_dir = short_tmp / "state"
    rehearsal = short_tmp / "r"
    before = _live_state(sandbox)

    pid = _kill_a_rehearsal(sandbox, state_dir, rehearsal)
    cleaned = cli(sandbox, state_dir, "cleanup", "--yes")

    assert cleaned.returncode == ExitCode.OK, cleaned.stdout + cleaned.stderr
    assert f"stopped process {pid}" in cleaned.stdout
    _nothing_left(rehearsal, state_dir)

    pid = _kill_a_rehearsal(sandbox, state_dir, rehearsal)
    again = cli(sandbox, state_dir, "rehearse", "--dir", str(rehearsal))

    assert again.returncode == ExitCode.OK, again.stdout + again.stderr
    assert f"stopped process {pid}" in again.stdout
    assert ": OK (" in again.stdout  # the text report

    # Killed in the middle of the save, its first archive written.
    pid = _kill_a_rehearsal(sandbox, state_dir, rehearsal, "export:archive-written")
    as_json = cli(sandbox, state_dir, "rehearse", "--dir", str(rehearsal), "--format", "json")

    assert as_json.returncode == ExitCode.OK, as_json.stdout + as_json.stderr
    assert f"rehearsal leftovers: stopped process {pid}" in \
        json.loads(as_json.stdout)["leftovers_removed"]
    _nothing_left(rehearsal, state_dir)
    assert _live_state(sandbox) == before


def test_a_store_that_cannot_take_the_images_fails_with_runs_words_and_exit_4(
        fresh_sandbox: SandboxFactory, short_tmp: Path) -> None:
    """The btrfs snapshotter on a filesystem that is not btrfs: containerd does not load
    it, so the images load (content only) but nothing can be created from them; the
    rehearsal says so in the words of `run`'s verify and recreate, exits 4, and leaves the
    live host as it was."""
    sandbox = fresh_sandbox("28", samples=True)
    state_dir = short_tmp / "state"
    before = _live_state(sandbox)

    done = cli(sandbox, state_dir, "rehearse", "--snapshotter", "btrfs", "--format", "json")

    assert done.returncode == ExitCode.VERIFY_FAILED, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert not report["ok"] and report["failures"], report
    failures = "\n".join(report["failures"])
    # verify's own words for a store that cannot run its images, then recreate's per container.
    assert "cannot create a container from" in failures
    assert "snapshotter not loaded: btrfs" in failures
    for name in ("cm-sample-created", "cm-sample-job", "cm-sample-web"):
        assert f"cannot recreate container {name}: " in failures
    _nothing_left(state_dir / DEFAULT_DIR_NAME, state_dir)
    assert _live_state(sandbox) == before
