"""Containers that join another container's namespaces, and paused ones, across a migration
and its rollback (hostile round 3, items 4 and 5), on 26.1 and 28.5."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from migrate.sandbox import Sandbox, SandboxFactory, build_bulk_images
from migrate.sandbox.samples import BUSY_LOOP, docker, inspect
from tests.engine.cli import cli

pytestmark = pytest.mark.engine


def _out(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-6000:]}"


def _host(sandbox: Sandbox) -> None:
    (tag,) = build_bulk_images(sandbox.host, 1, prefix="cm-ns/app", workdir=sandbox.dir)
    loop = ("sh", "-c", BUSY_LOOP)
    # Named so that name order differs from dependency order: the joiner sorts first.
    docker(sandbox.host, "run", "-d", "--name", "zz-owner", "--ipc", "shareable", tag, *loop)
    owner = str(inspect(sandbox.host, "container", "zz-owner")["Id"])
    docker(sandbox.host, "run", "-d", "--name", "a-joiner", "--ipc", f"container:{owner}",
           "--pid", f"container:{owner}", "--network", f"container:{owner}", tag, *loop)
    docker(sandbox.host, "run", "-d", "--name", "m-paused", tag, *loop)
    docker(sandbox.host, "pause", "m-paused")


def _states(sandbox: Sandbox) -> dict[str, str]:
    return {name: str(inspect(sandbox.host, "container", name)["State"]["Status"])
            for name in ("zz-owner", "a-joiner", "m-paused")}


@pytest.mark.parametrize("engine", ["26", "28"])
def test_shared_namespaces_and_paused_containers_survive_migration_and_rollback(
        fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine)
    _host(sandbox)
    before = _states(sandbox)
    assert before == {"zz-owner": "running", "a-joiner": "running", "m-paused": "paused"}
    state = tmp_path / "state"

    ran = cli(sandbox, state, "run", "--yes", "--containers", "recreate", "--restart-command",
              sandbox.restart_command)

    assert ran.returncode == 0, _out(ran)
    assert _states(sandbox) == before
    owner = str(inspect(sandbox.host, "container", "zz-owner")["Id"])
    joiner = inspect(sandbox.host, "container", "a-joiner")["HostConfig"]
    assert joiner["IpcMode"] == f"container:{owner}" and joiner["PidMode"] == \
        f"container:{owner}"

    # The rollback starts the owner before the joiner (name order would fail it) and
    # pauses again what was paused.
    rolled = cli(sandbox, state, "rollback", "--yes")
    assert rolled.returncode == 0, _out(rolled)
    assert _states(sandbox) == before

    # The same with `--containers leave`: quiesce stops the joiner before its owner.
    state2 = tmp_path / "state2"
    left = cli(sandbox, state2, "run", "--yes", "--containers", "leave", "--restart-command",
               sandbox.restart_command)
    assert left.returncode == 0, _out(left)
    rolled = cli(sandbox, state2, "rollback", "--yes")
    assert rolled.returncode == 0, _out(rolled)
    assert _states(sandbox) == before


def test_volumes_from_is_recreated_with_volumes_from_only(fresh_sandbox: SandboxFactory,
                                                          tmp_path: Path) -> None:
    """Hostile round 3, item 15: no explicit mounts of the source's volumes appear."""
    sandbox = fresh_sandbox("28")
    (tag,) = build_bulk_images(sandbox.host, 1, prefix="cm-vf/app", workdir=sandbox.dir)
    docker(sandbox.host, "run", "-d", "--name", "vf-src", "-v", "vf-data:/data", "-v", "/anon",
           tag, "sh", "-c", BUSY_LOOP)
    docker(sandbox.host, "run", "-d", "--name", "vf-reader", "--volumes-from", "vf-src:ro",
           tag, "sh", "-c", BUSY_LOOP)
    before = inspect(sandbox.host, "container", "vf-reader")
    modes = sorted((m["Destination"], m["Mode"], m["RW"]) for m in before["Mounts"])

    ran = cli(sandbox, tmp_path / "state", "run", "--yes", "--containers", "recreate",
              "--restart-command", sandbox.restart_command)

    assert ran.returncode == 0, _out(ran)
    after = inspect(sandbox.host, "container", "vf-reader")
    assert not after["HostConfig"].get("Mounts"), after["HostConfig"]["Mounts"]
    assert after["HostConfig"]["VolumesFrom"] == ["vf-src:ro"]
    assert sorted((m["Destination"], m["Mode"], m["RW"]) for m in after["Mounts"]) == modes
