"""`--containers recreate` end to end (issue 8), on Engine 26.1 and 28.5, with the real compose.

One rich host per engine is built once and carries every assertion, in the order an operator
lives them: a run killed right after committing a writable layer and again right after
recreating the first container, resumed to completion; everything compared with what the
legacy store had (names, config, mounts with the same volume names, networks with aliases
and static IPs, states, files, volume data); `docker compose up -d` recreating nothing; a
container someone created on the new store listed by the rollback and kept; the rollback
bringing the legacy containers back running; then a second migration with recreate and
`cleanup --prune-legacy`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from migrate.errors import ExitCode
from migrate.journal import replay
from migrate.models import commit_ref
from migrate.phases.platform_check import PROBE_IMAGE
from migrate.phases.recreate import MIGRATION_LABEL, RECREATED_LABEL
from migrate.sandbox import Sandbox, SandboxFactory, docker, sandbox_samples
from migrate.sandbox.fetch import compose_cli

from .cli import cli, restart_command

pytestmark = pytest.mark.engine

KILLED = -9
BUSY_LOOP = 'trap "exit 0" TERM; sleep 3600 & wait'
BASE = "cm-sample/base:1"
PROJECT = "rcshop"
COMPOSE_FILE = f"""
name: {PROJECT}
services:
  db:
    image: {BASE}
    command: ["sh", "-c", '{BUSY_LOOP}']
    volumes: ["dbdata:/var/lib/db"]
  app:
    image: {BASE}
    command: ["sh", "-c", '{BUSY_LOOP}']
    depends_on: [db]
    environment: {{MODE: compose}}
volumes:
  dbdata: {{}}
"""
COMPOSE_CONTAINERS = (f"{PROJECT}-db-1", f"{PROJECT}-app-1")
RUNNING = ("svc", "net-a", "net-b", "layered", "anon", "sidecar", "cm-sample-web",
           *COMPOSE_CONTAINERS)
STOPPED = {"cm-sample-job": "exited", "cm-sample-created": "created"}


def _inspect(host: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(docker(host, "inspect", name).stdout)[0]
    return data


def _compose(sandbox: Sandbox, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_HOST"] = sandbox.host
    return subprocess.run([compose_cli(sandbox.engine), "-f", str(workdir / "compose.yaml"),
                           *args], capture_output=True, text=True, env=env, check=False,
                          timeout=180)


def _build_host(sandbox: Sandbox, workdir: Path) -> None:
    """The sample host plus every kind of container the issue names."""
    host = sandbox.host
    docker(host, "network", "create", "--subnet", "10.89.0.0/24", "rcnet")
    docker(host, "volume", "create", "rc-data")
    docker(host, "run", "-d", "--name", "svc", "--restart", "unless-stopped",
           "-e", "APP_ENV=prod", "-l", "tier=backend", "-v", "rc-data:/data",
           BASE, "sh", "-c", f"echo svc-data > /data/svc.txt; {BUSY_LOOP}")
    docker(host, "run", "-d", "--name", "net-a", "--network", "rcnet", "--ip", "10.89.0.10",
           "--network-alias", "alpha", BASE, "sh", "-c", BUSY_LOOP)
    docker(host, "run", "-d", "--name", "net-b", "--network", "rcnet",
           "--network-alias", "beta", BASE, "sh", "-c", BUSY_LOOP)
    docker(host, "run", "-d", "--name", "sidecar", "--network", "container:net-a",
           BASE, "sh", "-c", BUSY_LOOP)
    docker(host, "run", "-d", "--name", "layered", BASE, "sh", "-c",
           f"echo added > /added.txt; echo changed > /etc/os-release; rm /etc/group; "
           f"{BUSY_LOOP}")
    docker(host, "run", "-d", "--name", "anon", "-v", "/anon", BASE, "sh", "-c",
           f"echo anon-data > /anon/data.txt; {BUSY_LOOP}")
    (workdir / "compose.yaml").write_text(COMPOSE_FILE)
    up = _compose(sandbox, workdir, "up", "-d")
    assert up.returncode == 0, up.stderr
    for name in ("svc", "layered", "anon"):  # their first writes are done
        _wait_for_file(host, name)


def _wait_for_file(host: str, name: str) -> None:
    path = {"svc": "/data/svc.txt", "layered": "/added.txt", "anon": "/anon/data.txt"}[name]
    for _ in range(200):
        if docker(host, "exec", name, "cat", path, check=False).returncode == 0:
            return
    raise AssertionError(f"{name} never wrote {path}")


def _mounts(data: dict[str, Any]) -> set[tuple[str, str, str, bool]]:
    return {(m["Type"], m.get("Name", ""), m["Destination"], m["RW"]) for m in data["Mounts"]}


def _networks(data: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    short = data["Id"][:12]
    return {name: (tuple(sorted(a for a in ep.get("Aliases") or () if a != short)),
                   (ep.get("IPAMConfig") or {}).get("IPv4Address"),
                   ep["IPAddress"] if ep.get("IPAMConfig") else "")
            for name, ep in (data["NetworkSettings"]["Networks"] or {}).items()
            if name not in ("bridge", "none", "host")}


_CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "User", "WorkingDir", "StopSignal", "Tty",
                "OpenStdin", "Volumes", "ExposedPorts")
_HOST_KEYS = ("RestartPolicy", "Binds", "PortBindings", "CapAdd", "CapDrop", "Privileged",
              "LogConfig", "Dns", "ExtraHosts", "ShmSize", "Init", "SecurityOpt")


def _spec(data: dict[str, Any], image_map: dict[str, str]) -> dict[str, Any]:
    """What must be the same after recreate, with the expected changes undone."""
    labels = dict(data["Config"]["Labels"] or {})
    labels.pop(RECREATED_LABEL, None)
    labels.pop(MIGRATION_LABEL, None)
    if "com.docker.compose.image" in labels:
        labels["com.docker.compose.image"] = image_map.get(labels["com.docker.compose.image"],
                                                           labels["com.docker.compose.image"])
    mode = data["HostConfig"]["NetworkMode"]
    return {
        "name": data["Name"],
        "config": {k: data["Config"].get(k) for k in _CONFIG_KEYS},
        "labels": labels,
        "host": {k: data["HostConfig"].get(k) for k in _HOST_KEYS},
        "network_mode": "container" if mode.startswith("container:") else mode,
        "mounts": _mounts(data),
        "networks": _networks(data),
    }


def _all_names(host: str) -> list[str]:
    return sorted(docker(host, "ps", "-a", "--format", "{{.Names}}").stdout.split())


def _run(sandbox: Sandbox, state: Path, failpoint: str | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return cli(sandbox, state, "run", "--yes", "--containers", "recreate",
               "--restart-command", restart_command(sandbox), failpoints=failpoint)


@pytest.mark.parametrize("engine", ["26", "28"])
def test_recreate_end_to_end(fresh_sandbox: SandboxFactory, engine: str,
                             tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine, samples=True)
    samples = sandbox_samples(sandbox)
    host = sandbox.host
    _build_host(sandbox, tmp_path)
    names = sorted([*RUNNING, *STOPPED])
    before = {name: _inspect(host, name) for name in names}
    assert before["layered"]["State"]["Running"]
    state = tmp_path / "state"

    plan = cli(sandbox, state, "plan", "--containers", "recreate")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "layered (running): create from cm-sample/base:1; commit its writable layer " \
           "first (1 added, 2 changed, 1 deleted" in plan.stdout  # /etc counts too
    assert "attach to rcnet, aliases alpha, IP 10.89.0.10" in plan.stdout

    # Killed right after the first commit, then right after the first recreated container.
    assert _run(sandbox, state, "commit:container-committed=kill").returncode == KILLED
    assert _run(sandbox, state, "recreate:container-created=kill").returncode == KILLED
    assert sandbox.containerd_snapshotter()
    done = _run(sandbox, state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"containers: {len(names)} recreated in the containerd store" in done.stdout
    assert "running again: " in done.stdout and "(down " in done.stdout

    # No duplicates after two kills, nothing missing; the guard is gone (volumes in use).
    assert _all_names(host) == names
    id_map = json.loads((state / "reports" / "id-map.json").read_text())
    image_map = {old: entry["new_id"] for old, entry in id_map.items()}
    container_map = json.loads((state / "reports" / "container-map.json").read_text())
    assert {row["name"] for row in container_map.values()} == set(names)
    after = {name: _inspect(host, name) for name in names}
    for name in names:
        old, new = before[name], after[name]
        assert container_map[old["Id"]]["new_id"] == new["Id"]
        assert new["Config"]["Labels"][RECREATED_LABEL] == old["Id"]
        assert _spec(new, image_map) == _spec(old, image_map), name
        expected = "running" if name in RUNNING else "created"
        assert new["State"]["Status"] == expected, name
        if name in RUNNING:
            assert container_map[old["Id"]]["downtime_seconds"] > 0
    assert after["sidecar"]["HostConfig"]["NetworkMode"] == f"container:{after['net-a']['Id']}"
    assert after["net-a"]["NetworkSettings"]["Networks"]["rcnet"]["IPAddress"] == "10.89.0.10"
    # The writable layer: added, changed and deleted paths; volume data, anonymous too.
    assert docker(host, "exec", "layered", "cat", "/added.txt", "/etc/os-release"
                  ).stdout == "added\nchanged\n"
    assert docker(host, "exec", "layered", "ls", "/etc/group", check=False).returncode != 0
    assert after["layered"]["Config"]["Image"] == commit_ref(before["layered"]["Id"])
    assert docker(host, "exec", "anon", "cat", "/anon/data.txt").stdout == "anon-data\n"
    assert docker(host, "exec", "svc", "cat", "/data/svc.txt").stdout == "svc-data\n"
    assert after["cm-sample-web"]["Config"]["Image"] == "cm-sample/web:1"  # nothing to commit
    assert not docker(host, "ps", "-a", "-q", "--filter",
                      "label=io.containerd-migrate.volume-guard").stdout.strip()
    # Issue 19: the multi-platform check waited for the containers, not they for it; it ran
    # after the last start (in the resumed recreate) and left nothing behind.
    journal = replay(state / "journal.jsonl")
    verified, recreated = journal.phase("verify"), journal.phase("recreate")
    assert verified.result is not None and verified.result.get("multi_platform") is None
    assert recreated.result is not None and recreated.result.get("multi_platform") == "supported"
    assert "multi-platform: supported" in done.stdout
    assert "multi-platform: not checked (checked by the recreate phase" in (
        state / "reports" / "verification.txt").read_text()
    assert not docker(host, "ps", "-a", "-q", "--filter",
                      "label=io.containerd-migrate.multi-platform-check").stdout.strip()
    assert docker(host, "image", "inspect", PROBE_IMAGE, check=False).returncode != 0

    # Compose finds its project and, with the unchanged file, has nothing to do.
    ids = {name: after[name]["Id"] for name in COMPOSE_CONTAINERS}
    up = _compose(sandbox, tmp_path, "up", "-d")
    assert up.returncode == 0, up.stderr
    assert "Recreate" not in up.stderr and "Created" not in up.stderr, up.stderr
    assert {name: _inspect(host, name)["Id"] for name in COMPOSE_CONTAINERS} == ids
    ps = _compose(sandbox, tmp_path, "ps", "--format", "{{.Name}}")
    assert sorted(ps.stdout.split()) == sorted(COMPOSE_CONTAINERS)

    # Someone creates a container on the new store; rollback lists it and keeps it.
    docker(host, "create", "--name", "drifter", BASE)
    back = cli(sandbox, state, "rollback", "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "drifter" in back.stdout and "kept in the containerd store" in back.stdout
    assert "recreate: removed layered" in back.stdout
    assert not sandbox.containerd_snapshotter()
    for name in names:
        legacy = _inspect(host, name)
        assert legacy["Id"] == before[name]["Id"]
        assert legacy["State"]["Status"] == ("running" if name in RUNNING else STOPPED[name])
    assert "drifter" not in _all_names(host)
    assert docker(host, "image", "inspect", commit_ref(before["layered"]["Id"]),
                  check=False).returncode != 0
    assert docker(host, "exec", "layered", "cat", "/added.txt").stdout == "added\n"
    assert docker(host, "exec", "anon", "cat", "/anon/data.txt").stdout == "anon-data\n"

    # Again, to the end: cleanup --prune-legacy works after recreate.
    again = _run(sandbox, state)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "drifter" in _all_names(host)  # back at the next switch, untouched
    pruned = cli(sandbox, state, "cleanup", "--prune-legacy", "--yes")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert not (sandbox.data_root / "overlay2").exists()
    assert not (sandbox.data_root / "containers" / before["layered"]["Id"]).exists()
    assert docker(host, "exec", "layered", "cat", "/added.txt").stdout == "added\n"
    assert replay(state / "journal.jsonl").outcome == "completed"
    assert samples.compose_project  # the sample host's own compose-labelled container came too


def test_leave_then_prune_names_the_blocking_containers(fresh_sandbox: SandboxFactory,
                                                        tmp_path: Path) -> None:
    sandbox = fresh_sandbox("28", samples=True)
    state = tmp_path / "state"
    done = cli(sandbox, state, "run", "--yes", "--containers", "leave", "--restart-command",
               restart_command(sandbox))
    assert done.returncode == 0, done.stderr
    assert "stopped and left hidden in the legacy store, so they are DOWN now: " \
           "cm-sample-web" in done.stdout
    assert "containerd-migrate --host" in done.stdout and "rollback --yes" in done.stdout
    refused = cli(sandbox, state, "cleanup", "--prune-legacy", "--yes")
    assert refused.returncode == ExitCode.BLOCKED
    for name in ("cm-sample-created", "cm-sample-job", "cm-sample-web"):
        assert name in refused.stderr
    assert "--remove-legacy-containers" in refused.stderr
    assert (sandbox.data_root / "overlay2").exists()
    pruned = cli(sandbox, state, "cleanup", "--prune-legacy", "--remove-legacy-containers",
                 "--yes")
    assert pruned.returncode == 0, pruned.stderr
    assert not (sandbox.data_root / "overlay2").exists()
    assert not list((sandbox.data_root / "containers").glob("*/config.v2.json"))
