"""Nothing changed while a migration prepares is lost (hostile round 3, item 1).

An image tagged and a container created while `run` exports are caught once the containers
are stopped, before the switch: the run rolls back (exit 10) naming them, and the next run
carries them. `cleanup --prune-legacy` refuses while the legacy store holds a tag the
containerd store lacks.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from migrate.errors import ExitCode
from migrate.sandbox import Sandbox, SandboxFactory, build_bulk_images
from migrate.sandbox.samples import BUSY_LOOP, docker, inspect
from migrate.support.failpoints import PAUSE_TIMEOUT_ENV, RESUME_ENV, reached_path
from tests.engine.cli import cli, spawn, wait_for_file

pytestmark = pytest.mark.engine

RECREATE = ("run", "--yes", "--containers", "recreate")


def _out(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-6000:]}"


def _names(sandbox: Sandbox) -> set[str]:
    out = docker(sandbox.host, "ps", "-a", "--format", "{{.Names}}").stdout
    return set(out.split())


def _tags(sandbox: Sandbox) -> set[str]:
    out = docker(sandbox.host, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    return set(out.split())


@pytest.mark.parametrize("engine", ["26", "28"])
def test_changes_during_the_export_are_carried_not_dropped(
        fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine)
    (tag,) = build_bulk_images(sandbox.host, 1, prefix="cm-late/app", workdir=sandbox.dir)
    docker(sandbox.host, "run", "-d", "--name", "cm-late-web", tag, "sh", "-c", BUSY_LOOP)
    web = str(inspect(sandbox.host, "container", "cm-late-web")["Id"])
    state = tmp_path / "state"
    resume = tmp_path / "resume"

    run = spawn(sandbox, state, *RECREATE, "--restart-command", sandbox.restart_command,
                failpoints="after:export=pause",
                env={RESUME_ENV: str(resume), PAUSE_TIMEOUT_ENV: "120"})
    try:
        wait_for_file(reached_path(resume), run)
        docker(sandbox.host, "tag", tag, "cm-late/added:1")
        docker(sandbox.host, "create", "--name", "cm-late-created", tag, "true")
    finally:
        resume.touch()
        out, err = run.communicate(timeout=300)

    assert run.returncode == ExitCode.ROLLED_BACK, f"{out}\n{err[-4000:]}"
    assert "tag cm-late/added:1" in err and "container cm-late-created" in err, err
    # Nothing was switched and the stopped container runs again.
    assert str(inspect(sandbox.host, "container", "cm-late-web")["Id"]) == web
    assert inspect(sandbox.host, "container", "cm-late-web")["State"]["Running"]

    again = cli(sandbox, state, *RECREATE, "--restart-command", sandbox.restart_command)

    assert again.returncode == 0, _out(again)
    assert {"cm-late/added:1", tag} <= _tags(sandbox)
    assert {"cm-late-web", "cm-late-created"} <= _names(sandbox)

    # A tag the legacy store holds and the containerd store lacks blocks the prune.
    repositories = sandbox.data_root / "image" / "overlay2" / "repositories.json"
    data = json.loads(repositories.read_text())
    image_id = next(iter(data["Repositories"]["cm-late/added"].values()))
    data["Repositories"]["cm-late/ghost"] = {"cm-late/ghost:1": image_id}
    repositories.write_text(json.dumps(data))
    pruned = cli(sandbox, state, "cleanup", "--prune-legacy", "--yes")
    assert pruned.returncode == ExitCode.BLOCKED, _out(pruned)
    assert "cm-late/ghost:1" in pruned.stderr
    assert (sandbox.data_root / "image" / "overlay2").is_dir(), "nothing may be deleted"
