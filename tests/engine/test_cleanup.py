"""Finalising a migration: cleanup of archives, the volume guard, pruning the legacy data,
and `rollback --purge-imported`. Real engine, through the real CLI."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from migrate.commands.cleanup import CleanupArgs, cleanup
from migrate.commands.context import GlobalOptions
from migrate.errors import ExitCode, UsageError
from migrate.host.fs import tree_bytes
from migrate.phases.volume_guard import GUARD_NAME
from migrate.sandbox import SandboxFactory
from migrate.sandbox.daemon import Sandbox
from migrate.sandbox.samples import build_bulk_images, docker, inspect, sandbox_samples
from migrate.support.sizes import human_bytes
from tests.engine.cli import cli, run_args

pytestmark = pytest.mark.engine

CD_CONFIG = b'{"features": {"containerd-snapshotter": true}}\n'


@dataclass
class _Answering:
    answer: bool
    asked: list[str] = field(default_factory=list)

    def emit(self, text: str) -> None:
        pass

    def ask(self, question: str) -> bool:
        self.asked.append(question)
        return self.answer


def _names(sandbox: Sandbox) -> set[str]:
    out = docker(sandbox.host, "ps", "-a", "--format", "{{.Names}}").stdout
    return set(out.split())


def _tags(sandbox: Sandbox) -> set[str]:
    out = docker(sandbox.host, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    return {line for line in out.split() if "<none>" not in line}


@pytest.mark.parametrize("engine", ["26", "28"])
def test_cleanup_deletes_archives_and_guard_and_refuses_to_prune_live_containers(
    fresh_sandbox: SandboxFactory, tmp_path: Path, engine: str
) -> None:
    sandbox = fresh_sandbox(engine, samples=True)
    state = tmp_path / "state"
    early = cli(sandbox, state, "cleanup")
    assert early.returncode == ExitCode.BLOCKED, early.stderr
    assert cli(sandbox, state, *run_args(sandbox)).returncode == 0
    assert GUARD_NAME in _names(sandbox)
    # PID 1 ignores SIGTERM: stopped with it, the guard held every daemon shutdown for the
    # full 10 s stop timeout. It is stopped by SIGKILL at once, and `restart always` brings
    # it back (also after a daemon restart).
    guard = inspect(sandbox.host, "container", GUARD_NAME)
    assert guard["Config"]["StopSignal"] == "SIGKILL"
    asked = time.monotonic()
    docker(sandbox.host, "stop", "--time", "30", GUARD_NAME)
    assert time.monotonic() - asked < 20, "the stop waited for its timeout: SIGTERM was sent"
    assert inspect(sandbox.host, "container", GUARD_NAME)["State"]["ExitCode"] == 137
    docker(sandbox.host, "start", GUARD_NAME)
    archives = list((state / "archives").glob("*.tar"))
    assert archives
    size = sum(p.stat().st_size for p in archives)

    prune = cli(sandbox, state, "cleanup", "--prune-legacy", "--yes")
    assert prune.returncode == ExitCode.BLOCKED
    assert "legacy container(s)" in prune.stderr
    assert list((state / "archives").glob("*.tar")), "a refused cleanup deleted archives"

    done = cli(sandbox, state, "cleanup")
    assert done.returncode == 0, done.stderr
    assert f"{human_bytes(size)} freed" in done.stdout, done.stdout
    assert not list((state / "archives").glob("*.tar"))
    assert GUARD_NAME not in _names(sandbox)
    # The migrated images are untouched by cleanup.
    assert set(sandbox_samples(sandbox).tags) <= _tags(sandbox)
    # The archives are gone, but the legacy store is intact: rollback still works.
    back = cli(sandbox, state, "rollback", "--yes")
    assert back.returncode == 0, back.stderr
    assert set(sandbox_samples(sandbox).tags) <= _tags(sandbox)


def test_prune_legacy_deletes_the_old_driver_data_and_ends_rollback(
    fresh_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    sandbox = fresh_sandbox("28")
    tags = build_bulk_images(sandbox.host, 3)
    state = tmp_path / "state"
    assert cli(sandbox, state, *run_args(sandbox)).returncode == 0
    legacy = [sandbox.data_root / "image" / "overlay2", sandbox.data_root / "overlay2"]
    assert all(p.exists() for p in legacy)

    unconfirmed = cli(sandbox, state, "cleanup", "--prune-legacy")
    assert unconfirmed.returncode == ExitCode.USAGE
    assert "deleting the legacy data (no rollback after it) needs confirmation, and there " \
           "is no terminal" in unconfirmed.stderr
    assert all(p.exists() for p in legacy)
    # On a terminal the question says how much goes; a "no" deletes nothing.
    console = _Answering(answer=False)
    opts = GlobalOptions(host=sandbox.host, daemon_config=sandbox.daemon_json, state_dir=state,
                         console=console, interactive=True)
    with pytest.raises(UsageError, match="not confirmed"):
        cleanup(opts, CleanupArgs(prune_legacy=True))
    size = human_bytes(tree_bytes(legacy))
    assert console.asked == [f"delete the legacy overlay2 data, {size} ({legacy[0]}, "
                             f"{legacy[1]})? After this, rollback is no longer possible"]
    assert all(p.exists() for p in legacy)

    pruned = cli(sandbox, state, "cleanup", "--prune-legacy", "--yes")
    assert pruned.returncode == 0, pruned.stderr
    assert not any(p.exists() for p in legacy)
    assert f"cleanup: deleted the legacy overlay2 data ({legacy[0]}, {legacy[1]}), {size} " \
           "freed; rollback is no longer possible" in pruned.stdout
    assert set(tags) <= _tags(sandbox)
    assert cli(sandbox, state, "verify").returncode == 0

    refused = cli(sandbox, state, "rollback", "--yes")
    assert refused.returncode == ExitCode.BLOCKED
    assert "pruned" in refused.stderr


def test_rollback_purge_imported_removes_exactly_what_was_imported(
    fresh_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    sandbox = fresh_sandbox("26")
    tags = build_bulk_images(sandbox.host, 3)
    state = tmp_path / "state"
    assert cli(sandbox, state, *run_args(sandbox)).returncode == 0
    # Something the migration did not import must survive the purge.
    docker(sandbox.host, "tag", tags[0], "keep/me:1")
    back = cli(sandbox, state, "rollback", "--yes", "--purge-imported")
    assert back.returncode == 0, back.stderr
    assert set(tags) <= _tags(sandbox), "legacy images must be back"
    assert "import: removed" in back.stdout

    sandbox.stop()
    sandbox.daemon_json.write_bytes(CD_CONFIG)
    sandbox.start()
    left = _tags(sandbox)
    assert not set(tags) & left, f"purged images still in the containerd store: {left}"
    assert "keep/me:1" in left
    status = json.loads(cli(sandbox, state, "status", "--format", "json").stdout)
    assert status["outcome"] == "rolled_back"
