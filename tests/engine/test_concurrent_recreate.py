"""Quiesce and recreate a dependency level at a time, each level at once (issue 19), on a
host of 13 running containers that link to, join, read the volumes of and compose-depend on
each other: a run killed right after its first create resumes without a duplicate, every
container runs again, stops went dependents first and starts owners first, and three
containers that ignore SIGTERM cost their own stop timeout once, not once each."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from migrate.phases.recreate import RECREATED_LABEL
from migrate.sandbox import Sandbox, SandboxFactory, build_bulk_images
from migrate.sandbox.samples import BUSY_LOOP, docker, inspect
from tests.engine.cli import cli

pytestmark = pytest.mark.engine

KILLED = -9
STUBBORN = ("stub-1", "stub-2", "stub-3")
STUBBORN_TIMEOUT = 2
COMPOSE = {"com.docker.compose.project": "cc"}
# dependent -> what it depends on
DEPENDS = {"app-1": {"db"}, "app-2": {"db", "cache"}, "reader": {"db"}, "joiner": {"owner"},
           "cc-worker": {"cc-web"}, "front": {"app-1"}}
NAMES = sorted({"db", "cache", "owner", "cc-web", *STUBBORN, *DEPENDS})


def _out(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-6000:]}"


def _host(sandbox: Sandbox) -> None:
    (tag,) = build_bulk_images(sandbox.host, 1, prefix="cm-cc/app", workdir=sandbox.dir)
    loop = ("sh", "-c", BUSY_LOOP)

    def run(name: str, *args: str, command: tuple[str, ...] = loop) -> None:
        docker(sandbox.host, "run", "-d", "--name", name, *args, tag, *command)

    run("db", "-v", "cc-db:/var/lib/db")
    run("cache")
    run("owner")
    for name in STUBBORN:  # PID 1 without a TERM handler: only SIGKILL ends it
        run(name, "--stop-timeout", str(STUBBORN_TIMEOUT), command=("sleep", "3600"))
    run("cc-web", *_labels({**COMPOSE, "com.docker.compose.service": "web"}))
    run("app-1", "--link", "db:database")
    run("app-2", "--link", "db", "--link", "cache")
    run("reader", "--volumes-from", "db")
    run("joiner", "--network", "container:owner")
    run("cc-worker", *_labels({**COMPOSE, "com.docker.compose.service": "worker",
                               "com.docker.compose.depends_on": "web:service_started:false"}))
    run("front", "--link", "app-1")


def _labels(labels: dict[str, str]) -> list[str]:
    return [arg for key, value in labels.items() for arg in ("-l", f"{key}={value}")]


def _journal(state: Path) -> list[dict[str, Any]]:
    lines = (state / "journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _progress(records: list[dict[str, Any]], phase: str, key: str) -> dict[str, int]:
    """Container name -> the position of its first `key` progress record of `phase`."""
    found: dict[str, int] = {}
    for index, record in enumerate(records):
        if record.get("event") == "progress" and record.get("phase") == phase:
            item = record["data"].get(key)
            if isinstance(item, dict):
                found.setdefault(str(item["name"]), index)
    return found


@pytest.mark.parametrize("engine", ["26", "28"])
def test_levels_at_once_resume_without_duplicates(fresh_sandbox: SandboxFactory, engine: str,
                                                  tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine)
    _host(sandbox)
    before = {name: str(inspect(sandbox.host, "container", name)["Id"]) for name in NAMES}
    state = tmp_path / "state"
    argv = ("run", "--yes", "--containers", "recreate", "--restart-command",
            sandbox.restart_command)

    killed = cli(sandbox, state, *argv, failpoints="recreate:container-created=kill")
    assert killed.returncode == KILLED, _out(killed)
    done = cli(sandbox, state, *argv)
    assert done.returncode == 0, _out(done)

    # Every container once, recreated from its legacy one, running again.
    listed = docker(sandbox.host, "ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert sorted(listed) == NAMES
    after = {name: inspect(sandbox.host, "container", name) for name in NAMES}
    for name, data in after.items():
        assert data["Config"]["Labels"][RECREATED_LABEL] == before[name], name
        assert data["State"]["Status"] == "running", name
    assert after["joiner"]["HostConfig"]["NetworkMode"] == f"container:{after['owner']['Id']}"

    records = _journal(state)
    stopped = _progress(records, "quiesce", "stopped")
    starting = _progress(records, "recreate", "starting")
    started = _progress(records, "recreate", "started")
    assert set(stopped) == set(started) == set(NAMES)
    for dependent, needs in DEPENDS.items():
        for need in needs:
            # Stopped before what it depends on; started only once that one runs.
            assert stopped[dependent] < stopped[need], (dependent, need)
            assert started[need] < starting[dependent], (dependent, need)

    # The three stubborn ones stopped together: one stop timeout (their own), not three.
    stopped_at = {item["name"]: datetime.fromisoformat(item["stopped_at"])
                  for record in records if record.get("event") == "progress"
                  and record.get("phase") == "quiesce"
                  for item in [record["data"].get("stopped")] if isinstance(item, dict)}
    times = sorted(stopped_at[name] for name in STUBBORN)
    assert (times[-1] - times[0]).total_seconds() < STUBBORN_TIMEOUT * 0.75, times
