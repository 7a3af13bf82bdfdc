"""quiesce, switch and restart (and their undo) against real throwaway dockerd sandboxes."""

from __future__ import annotations

import base64
import json
import stat
import sys
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from migrate.engine.client import Engine
from migrate.errors import BlockedError, RestartFailed
from migrate.journal.state_dir import StateDir
from migrate.models import Store
from migrate.phases import quiesce, restart, switch
from migrate.phases.base import JSONDict, PhaseContext, RunOptions, UndoContext
from migrate.phases.records import PhaseRecords, read_record
from migrate.sandbox import Sandbox, SandboxFactory
from migrate.sandbox.samples import docker

pytestmark = pytest.mark.engine

ENGINES = ["26", "28"]
BUSYBOX = Path("/usr/bin/busybox")
IMAGE = "cm-switch/busybox:1"
# Exits on SIGTERM at once, so a graceful stop does not wait for the stop timeout.
LOOP = 'trap "exit 0" TERM; sleep 3600 & wait'


def _docker(host: str, *args: str) -> str:
    # The sandbox's CLI: the machine's own docker, else the fetched Debian one.
    return docker(host, *args).stdout.strip()


def _import_busybox(host: str, workdir: Path, ref: str = IMAGE) -> None:
    """A FROM-scratch image with a static busybox; works in both stores, no registry."""
    archive = workdir / "busybox-rootfs.tar"
    if not archive.exists():
        with tarfile.open(archive, "w") as tar:
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in ("sh", "sleep", "true"):
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
    _docker(host, "import", "-c", 'CMD ["/bin/sh"]', str(archive), ref)


def _store(host: str) -> Store:
    with Engine(host) as engine:
        return engine.info().store


def _restart_argv(sandbox: Sandbox) -> tuple[str, ...]:
    return (sys.executable, "-m", "migrate.sandbox", "restart", "--dir", str(sandbox.dir))


class Harness:
    """Contexts for running phases by hand the way the runner does (intent, run, undo)."""

    def __init__(self, sandbox: Sandbox, state: Path, **options: Any) -> None:
        self.sandbox = sandbox
        self.options = RunOptions(
            host=sandbox.host, daemon_config=sandbox.daemon_json, state_dir=state,
            restart_command=_restart_argv(sandbox), restart_timeout=60.0, stop_timeout=5,
            **options,
        )  # fmt: skip
        self.state_dir = StateDir(state).ensure()
        self.inventory_path = self.state_dir.inventory_path
        self.progress: dict[str, list[JSONDict]] = {}
        self.done: dict[str, JSONDict] = {}

    def snapshot(self) -> None:
        with Engine(self.sandbox.host) as engine:
            self.inventory_path.write_text(engine.inventory().model_dump_json())

    def context(self, phase: str) -> PhaseContext:
        progress = self.progress.setdefault(phase, [])
        return PhaseContext(
            options=self.options,
            connect=lambda: Engine(self.options.host),
            checkpoint=lambda data: progress.append(dict(data)),
            state_dir=self.state_dir,
            previous_progress=tuple(progress),
            records=PhaseRecords(dict(self.done), {}),
        )

    def run(self, phase: Any) -> tuple[JSONDict, JSONDict, JSONDict]:
        """The intent, undo record and result as the journal stores them."""
        ctx = self.context(phase.name)
        intent = phase.intent(ctx).to_json()
        # The journal stores JSON: records must survive the round trip unchanged.
        assert json.loads(json.dumps(intent)) == intent
        outcome = phase.run(self.context(phase.name))
        undo, result = outcome.undo.to_json(), outcome.result.to_json()
        assert phase.undo_model.model_validate(undo) == outcome.undo
        self.done[phase.name] = undo
        return intent, undo, result

    def undo(self, phase: Any, record: JSONDict, force: bool = False) -> list[str]:
        """The phase's undo from a journaled record, read as the runner reads it."""
        ctx = UndoContext(options=self.options, connect=lambda: Engine(self.options.host),
                          state_dir=self.state_dir, force=force)  # fmt: skip
        report = phase.undo(ctx, read_record(phase.undo_model, record))
        assert report.ok, report.failed
        lines = list(report.did)
        return lines


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("engine", ENGINES)
def test_forward_and_rollback_with_drift_guard(
    fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path
) -> None:
    sandbox = fresh_sandbox(engine)
    host = sandbox.host
    original = (
        b'{\n  "log-opts": {"max-size": "10m", "max-file": "3"},\n'
        b'  "registry-mirrors": ["https://mirror.example.com"],\n'
        b'  "storage-driver": "overlay2"\n}\n'
    )
    sandbox.daemon_json.write_bytes(original)
    sandbox.daemon_json.chmod(0o640)
    _import_busybox(host, tmp_path)
    legacy_id = _docker(host, "image", "inspect", "-f", "{{.Id}}", IMAGE)
    running = _docker(host, "run", "-d", "--name", "worker", IMAGE, "sh", "-c", LOOP)
    frozen = _docker(host, "run", "-d", "--name", "frozen", IMAGE, "sh", "-c", LOOP)
    _docker(host, "pause", "frozen")
    _docker(host, "create", "--name", "idle", IMAGE, "true")
    h = Harness(sandbox, tmp_path, containers="leave")
    h.snapshot()

    q_intent, q_undo, _ = h.run(quiesce.PHASE)
    assert [c["name"] for c in q_intent["containers"]] == ["frozen", "worker"]
    # The undo record also says when each container was stopped (recreate's downtime).
    assert _without_stop_times(q_undo["containers"]) == _without_stop_times(
        q_intent["containers"])
    assert all(c.get("stopped_at") for c in q_undo["containers"])
    assert _docker(host, "inspect", "-f", "{{.State.Running}}", running) == "false"
    assert _docker(host, "inspect", "-f", "{{.State.Status}}", "frozen") == "exited"
    # Resume: already stopped is fine, and the record still names it.
    _, q_undo_again, result = h.run(quiesce.PHASE)
    assert _without_stop_times(q_undo_again["containers"]) == _without_stop_times(
        q_undo["containers"]) and result["stopped"] == []

    s_intent, s_undo, s_result = h.run(switch.PHASE)
    assert s_result["rewritten"] is True
    assert base64.b64decode(s_intent["original_b64"]) == original
    assert s_undo["restart_command"] == list(_restart_argv(sandbox))
    written = json.loads(sandbox.daemon_json.read_bytes())
    assert written["features"] == {"containerd-snapshotter": True}
    assert written["storage-driver"] == "overlayfs"
    assert written["log-opts"] == {"max-size": "10m", "max-file": "3"}
    assert written["registry-mirrors"] == ["https://mirror.example.com"]
    assert _mode(sandbox.daemon_json) == 0o640
    # Resume after the write: same record, no rewrite.
    s_intent_again, _, s_result_again = h.run(switch.PHASE)
    assert s_result_again["rewritten"] is False
    assert s_intent_again["original_b64"] == s_intent["original_b64"]

    _, _, r_result = h.run(restart.PHASE)
    assert r_result["restarted"] is True and r_result["store"] == "containerd"
    assert _store(host) is Store.CONTAINERD
    # Legacy containers are hidden; with overlayfs mapped, new containers work.
    _import_busybox(host, tmp_path, "cm-switch/cd:1")
    assert _docker(host, "run", "--rm", "cm-switch/cd:1", "sh", "-c", "echo ok") == "ok"
    # Resume after the restart: no second restart.
    _, _, r_again = h.run(restart.PHASE)
    assert r_again["restarted"] is False

    assert "nothing to undo" in h.undo(restart.PHASE, {})[0]
    # Someone edits daemon.json after the switch: rollback refuses without --force.
    edited = json.loads(sandbox.daemon_json.read_bytes())
    edited["debug"] = True
    sandbox.daemon_json.write_text(json.dumps(edited, indent=2) + "\n")
    with pytest.raises(BlockedError) as caught:
        h.undo(switch.PHASE, s_undo)
    assert '+  "debug": true' in caught.value.message
    assert "--force" in caught.value.hint
    assert _store(host) is Store.CONTAINERD

    lines = h.undo(switch.PHASE, s_undo, force=True)
    assert any("restored" in line for line in lines)
    assert any("legacy store" in line for line in lines)
    assert sandbox.daemon_json.read_bytes() == original
    assert _mode(sandbox.daemon_json) == 0o640
    assert _store(host) is Store.LEGACY
    assert _docker(host, "image", "inspect", "-f", "{{.Id}}", IMAGE) == legacy_id

    lines = h.undo(quiesce.PHASE, q_undo)
    assert lines[1] == f"quiesce: started container worker ({running[:12]})"
    assert lines[0] == f"quiesce: started container frozen ({frozen[:12]}) and paused it again"
    assert _docker(host, "inspect", "-f", "{{.State.Status}}", "worker") == "running"
    assert _docker(host, "inspect", "-f", "{{.State.Status}}", "frozen") == "paused"
    assert _docker(host, "inspect", "-f", "{{.State.Running}}", "idle") == "false"


@pytest.mark.parametrize("engine", ENGINES)
def test_vfs_maps_to_native_and_rolls_back(
    fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path
) -> None:
    sandbox = fresh_sandbox(engine)
    host = sandbox.host
    original = b'{"storage-driver":"vfs","log-level":"info"}'
    sandbox.daemon_json.write_bytes(original)
    sandbox.daemon_json.chmod(0o600)
    sandbox.restart()
    _import_busybox(host, tmp_path)
    h = Harness(sandbox, tmp_path, containers="leave")
    h.snapshot()

    _, s_undo, _ = h.run(switch.PHASE)
    written = json.loads(sandbox.daemon_json.read_bytes())
    assert written["storage-driver"] == "native"
    assert written["log-level"] == "info"
    h.run(restart.PHASE)
    assert _store(host) is Store.CONTAINERD
    _import_busybox(host, tmp_path, "cm-switch/cd:1")
    assert _docker(host, "run", "--rm", "cm-switch/cd:1", "sh", "-c", "echo ok") == "ok"

    h.undo(switch.PHASE, s_undo)
    assert sandbox.daemon_json.read_bytes() == original
    assert _mode(sandbox.daemon_json) == 0o600
    assert _store(host) is Store.LEGACY
    assert _docker(host, "images", "-q", IMAGE) != ""


@pytest.mark.parametrize("engine", ENGINES)
def test_absent_daemon_json_is_created_and_removed_again(
    fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path
) -> None:
    sandbox = fresh_sandbox(engine)
    host = sandbox.host
    # No restart needed: an empty daemon.json and none at all configure dockerd alike.
    sandbox.daemon_json.unlink()
    _import_busybox(host, tmp_path)
    h = Harness(sandbox, tmp_path)

    s_intent, s_undo, s_result = h.run(switch.PHASE)
    assert s_intent["original_absent"] is True and s_result["created"] is True
    assert json.loads(sandbox.daemon_json.read_bytes()) == {
        "features": {"containerd-snapshotter": True}
    }
    assert _mode(sandbox.daemon_json) == 0o644
    assert sandbox.daemon_json.stat().st_uid == 0
    h.run(restart.PHASE)
    assert _store(host) is Store.CONTAINERD

    lines = h.undo(switch.PHASE, s_undo)
    assert "did not exist before" in lines[0]
    assert not sandbox.daemon_json.exists()
    assert _store(host) is Store.LEGACY
    assert _docker(host, "images", "-q", IMAGE) != ""


@pytest.mark.parametrize("engine", ENGINES[:1])
def test_switch_interrupted_before_done_undoes_from_intent(
    fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path
) -> None:
    sandbox = fresh_sandbox(engine)
    """No restart involved: the daemon never left legacy mode, so undo only restores."""
    folder = tmp_path / "etc" / "docker"
    h = Harness(sandbox, tmp_path)
    h.options = replace(h.options, daemon_config=folder / "daemon.json")
    h.snapshot()

    intent = switch.PHASE.intent(h.context("switch")).to_json()
    # Crash before the write: undo from the intent finds the original state.
    assert h.undo(switch.PHASE, intent) == [
        f"switch: {folder / 'daemon.json'} already has its original content",
        "switch: the daemon already runs on the legacy store; no restart needed",
    ]
    h.run(switch.PHASE)
    assert _mode(folder) == 0o755 and _mode(folder / "daemon.json") == 0o644
    # Crash after the write: the resumed intent recovers the original from the checkpoint.
    resumed = switch.PHASE.intent(h.context("switch")).to_json()
    assert resumed["original_absent"] is True
    lines = h.undo(switch.PHASE, resumed)
    assert not folder.exists()
    assert any("empty folder" in line for line in lines)
    assert _store(sandbox.host) is Store.LEGACY


@pytest.mark.parametrize("engine", ENGINES[:1])
def test_refuse_policy_blocks_on_running_containers(
    fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path
) -> None:
    sandbox = fresh_sandbox(engine)
    _import_busybox(sandbox.host, tmp_path)
    _docker(sandbox.host, "run", "-d", "--name", "busy", IMAGE, "sh", "-c", LOOP)
    h = Harness(sandbox, tmp_path, containers="refuse")
    with pytest.raises(BlockedError, match="busy"):
        h.run(quiesce.PHASE)


@pytest.mark.parametrize("engine", ["28"])
def test_daemon_refusing_the_new_config_is_rolled_back(
    fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path
) -> None:
    sandbox = fresh_sandbox(engine)
    # Engine 28: any --feature flag conflicts with a `features` key, so dockerd will not start.
    sandbox.extra_args_file.write_text(json.dumps(["--feature", "containerd-snapshotter=false"]))
    sandbox.restart()
    original = sandbox.daemon_json.read_bytes()
    h = Harness(sandbox, tmp_path)
    h.snapshot()
    _, s_undo, _ = h.run(switch.PHASE)
    with pytest.raises(RestartFailed) as caught:
        h.run(restart.PHASE)
    assert "exited with status" in caught.value.message
    assert "feature" in caught.value.message  # dockerd's own complaint, from the tail

    lines = h.undo(switch.PHASE, s_undo)
    assert sandbox.daemon_json.read_bytes() == original
    assert any("legacy store" in line for line in lines)
    assert _store(sandbox.host) is Store.LEGACY


@pytest.mark.parametrize("engine", ["26"])
def test_ignored_feature_flag_is_reported_as_wrong_store(
    fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path
) -> None:
    sandbox = fresh_sandbox(engine)
    h = Harness(sandbox, tmp_path)
    h.options = replace(h.options, restart_timeout=4.0)
    h.snapshot()
    _, s_undo, _ = h.run(switch.PHASE)
    # A misspelt feature name is ignored silently: the daemon starts on the legacy store.
    sandbox.daemon_json.write_text('{"features": {"containerd-snapshoter": true}}\n')
    with pytest.raises(RestartFailed) as caught:
        h.run(restart.PHASE)
    assert "legacy image store" in caught.value.message
    assert "typo" in caught.value.hint

    lines = h.undo(switch.PHASE, s_undo, force=True)
    assert lines[-1] == "switch: the daemon already runs on the legacy store; no restart needed"
    assert sandbox.daemon_json.read_bytes() == b"{}\n"


def _without_stop_times(entries: list[JSONDict]) -> list[JSONDict]:
    return [{k: v for k, v in entry.items() if k != "stopped_at"} for entry in entries]
