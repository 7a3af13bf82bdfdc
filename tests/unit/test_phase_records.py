"""Every phase's typed records read the records 0.1.0 journaled (tests/unit/journals/) and
write them back with the same keys and values, and an undo works from a typed record read
the way the runner reads it, on the in-memory engine (tests/unit/memory_engine.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.engine import Engine
from migrate.errors import EngineError, StateError
from migrate.journal import PhaseName, replay
from migrate.journal.state_dir import StateDir
from migrate.models import CONTAINERD_DRIVER_TYPE
from migrate.phases import (
    commit,
    export,
    import_,
    quiesce,
    recreate,
    restart,
    snapshot,
    stage,
    switch,
    verify,
)
from migrate.phases.base import RunOptions, UndoContext
from migrate.phases.records import (
    CommitResult,
    ExportResult,
    NoUndo,
    QuiesceResult,
    RecordModel,
    RecreateResult,
    StageResult,
    SwitchUndo,
    VerifyResult,
    read_record,
)
from migrate.phases.recreate import RECREATED_LABEL
from migrate.phases.runner import PHASES
from tests.unit.fake_api import empty_daemon
from tests.unit.memory_engine import memory_engine

pytestmark = pytest.mark.unit

JOURNALS = Path(__file__).parent / "journals"
# Each phase's intent and result models; its undo model is `PHASES[name].undo_model`.
MODELS: dict[PhaseName, tuple[type[RecordModel], type[RecordModel]]] = {
    "snapshot": (snapshot.SnapshotIntent, snapshot.SnapshotResult),
    "stage": (stage.StageIntent, StageResult),
    "export": (export.ExportIntent, ExportResult),
    "quiesce": (quiesce.QuiesceIntent, QuiesceResult),
    "commit": (commit.CommitIntent, CommitResult),
    "switch": (SwitchUndo, switch.SwitchResult),
    "restart": (restart.RestartIntent, restart.RestartResult),
    "import": (import_.ImportIntent, import_.ImportResult),
    "verify": (verify.VerifyIntent, VerifyResult),
    "recreate": (recreate.RecreateIntent, RecreateResult),
}


def _journaled() -> Iterator[tuple[str, PhaseName, str, dict[str, Any]]]:
    """(journal, phase, "intent" | "undo" | "result", record) of every journal."""
    for path in sorted(JOURNALS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["event"] == "phase_started":
                yield path.name, record["phase"], "intent", record["intent"]
            elif record["event"] == "phase_done":
                yield path.name, record["phase"], "undo", record["undo"]
                yield path.name, record["phase"], "result", record["result"]


RECORDS = list(_journaled())


def _kept(old: Any, new: Any) -> bool:
    """`new` holds every key and value of `old` (a key it adds, e.g. a null for what 0.1.0
    did not write, is allowed)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and _kept(v, new[k])
                                             for k, v in old.items())
    if isinstance(old, list):
        return isinstance(new, list) and len(old) == len(new) and all(
            _kept(a, b) for a, b in zip(old, new, strict=True))
    return bool(old == new)


def test_the_journals_hold_a_record_of_every_kind_of_every_phase() -> None:
    seen = {(phase, kind) for _, phase, kind, _ in RECORDS}
    assert seen == {(phase, kind) for phase in MODELS for kind in ("intent", "undo", "result")}


@pytest.mark.parametrize(("journal", "phase", "kind", "record"), RECORDS,
                         ids=[f"{j[:-6]}-{p}-{k}-{n}" for n, (j, p, k, _) in
                              enumerate(RECORDS)])
def test_a_0_1_0_record_round_trips_through_its_model(journal: str, phase: PhaseName,
                                                       kind: str, record: dict[str, Any],
                                                       ) -> None:
    intent_model, result_model = MODELS[phase]
    model = {"intent": intent_model, "undo": PHASES[phase].undo_model,
             "result": result_model}[kind]
    typed = read_record(model, record, f"{phase} {kind}")
    # Nothing 0.1.0 wrote is lost: the phase writes it again, the same.
    assert _kept(record, typed.to_json()), (typed.to_json(), record)
    if kind == "intent":
        # A phase that stopped half-way is undone from its intent.
        read_record(PHASES[phase].undo_model, record, f"{phase} undo")


def test_a_record_of_the_wrong_shape_is_a_damaged_journal() -> None:
    with pytest.raises(StateError, match="switch undo record is damaged"):
        read_record(SwitchUndo, {"path": "/etc/docker/daemon.json", "mode": "0644"},
                    "switch undo")


def _done(phase: PhaseName, name: str = "journal-0.1.0-completed-recreate.jsonl",
          ) -> dict[str, Any]:
    found = replay(JOURNALS / name).phase(phase)
    assert found.undo is not None
    return dict(found.undo)


class Daemon:
    """The in-memory daemon, with the writes an undo makes recorded (and made to fail)."""

    def __init__(self, tmp_path: Path, containerd: bool) -> None:
        self.routes = empty_daemon(tmp_path / "data-root")
        if containerd:
            self.routes["/info"]["DriverStatus"] = [["driver-type", CONTAINERD_DRIVER_TYPE]]
        self.writes: list[str] = []
        self.failing: set[str] = set()

    def connect(self) -> Engine:
        engine = memory_engine(self.routes)

        def write(what: str) -> Any:
            def call(target: str, **_: Any) -> None:
                if target in self.failing:
                    raise EngineError(f"cannot {what} {target}", "fake")
                self.writes.append(f"{what} {target}")
            return call

        for method in ("remove_container", "start_container", "pause_container",
                       "remove_image"):
            setattr(engine, method, write(method))
        return engine

    def undo_context(self, tmp_path: Path, purge: bool = False) -> UndoContext:
        options = RunOptions(host="unix:///memory/docker.sock",
                             daemon_config=tmp_path / "daemon.json", state_dir=tmp_path)
        return UndoContext(options, self.connect, StateDir(tmp_path),
                           purge_imported=purge)


def test_the_recreate_undo_removes_what_its_record_names_and_nothing_else(
        tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, containerd=True)
    record = read_record(recreate.PHASE.undo_model, _done("recreate"))
    ours = record.containers[1]
    daemon.routes["/containers/json"] = [
        {"Id": "9" * 64, "Names": ["/web"], "Image": "app", "ImageID": "sha256:" + "1" * 64,
         "State": "running", "Labels": {RECREATED_LABEL: ours.id}, "Mounts": []},
        {"Id": "8" * 64, "Names": ["/mine"], "Image": "app", "ImageID": "sha256:" + "1" * 64,
         "State": "running", "Labels": {}, "Mounts": []}]
    report = recreate.PHASE.undo(daemon.undo_context(tmp_path), record)
    assert report.ok and daemon.writes == ["remove_container " + "9" * 64]
    # On the legacy store it removes nothing, and that is a failure, not a line.
    legacy = Daemon(tmp_path, containerd=False)
    failed = recreate.PHASE.undo(legacy.undo_context(tmp_path), record)
    assert not failed.ok and legacy.writes == []
    assert "not on the containerd store" in failed.failed[0]


def test_the_quiesce_undo_starts_each_container_and_reports_one_that_does_not(
        tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, containerd=False)
    record = read_record(quiesce.PHASE.undo_model, _done("quiesce"))
    assert [c.name for c in record.containers] == ["web"]
    assert quiesce.PHASE.undo(daemon.undo_context(tmp_path), record).ok
    assert daemon.writes == [f"start_container {record.containers[0].id}"]
    daemon.failing.add(record.containers[0].id)
    failed = quiesce.PHASE.undo(daemon.undo_context(tmp_path), record)
    assert not failed.ok and "could not start container web" in failed.failed[0]


def test_the_commit_and_import_undos_remove_the_commit_image_from_both_stores(
        tmp_path: Path) -> None:
    commits = read_record(commit.PHASE.undo_model, _done("commit"))
    ref = commits.commits[0].ref
    legacy = Daemon(tmp_path, containerd=False)
    legacy.routes[f"/images/{ref}/json"] = {"Id": commits.commits[0].image_id}
    assert commit.PHASE.undo(legacy.undo_context(tmp_path), commits).ok
    assert legacy.writes == [f"remove_image {ref}"]

    imported = read_record(import_.PHASE.undo_model, _done("import"))
    image = next(i for i in imported.imported if i.commit)
    containerd = Daemon(tmp_path, containerd=True)
    containerd.routes[f"/images/{ref}/json"] = {"Id": image.id}
    # Without --purge-imported the other imports stay; the commit image never does.
    report = import_.PHASE.undo(containerd.undo_context(tmp_path), imported)
    assert report.ok and containerd.writes == [f"remove_image {ref}"]
    assert "import: kept 1 imported image(s)" in report.did[-1]


def test_phases_without_anything_to_reverse_say_so_from_an_empty_record(
        tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, containerd=False)
    ctx = daemon.undo_context(tmp_path)
    for phase in (snapshot.PHASE, restart.PHASE):
        assert phase.undo_model is NoUndo
        report = phase.undo(ctx, NoUndo())
        assert report.ok and "nothing to undo" in report.did[0]
    # The export undo keeps the archives and removes only unfinished ones.
    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / "batch-0001.tar.partial").write_bytes(b"x")
    report = export.PHASE.undo(ctx, export.ExportUndo(archives_dir=str(archives)))
    assert report.ok and not (archives / "batch-0001.tar.partial").exists()
    assert daemon.writes == []


def test_the_stage_undo_finds_the_names_of_a_half_done_attempt_in_its_checkpoints() -> None:
    intent = {"ctr": None, "address": "", "before": ["old:1"]}
    record = read_record(stage.PHASE.undo_model, {**intent, "progress": [
        {"names": {"app:1": "sha256:a", "old:1": "sha256:b"}}, {"pid": 12}]})
    assert stage._record_names(record) == {"app:1": "sha256:a"}
    # Read, never written back: the journal keeps checkpoints apart.
    assert "progress" not in record.to_json()


def test_the_switch_record_knows_the_daemon_json_it_wrote() -> None:
    # One rule for the restart's resume ("already switched") and the undo's drift check.
    written = b'{"features": {"containerd-snapshotter": true}}\n'
    record = SwitchUndo(written_sha256=hashlib.sha256(written).hexdigest())
    assert record.wrote(written)
    assert not record.wrote(written + b" ") and not record.wrote(None)
    assert not SwitchUndo().wrote(written)  # a record without a write wrote nothing
