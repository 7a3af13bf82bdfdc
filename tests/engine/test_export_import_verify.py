"""export -> switch -> restart -> import -> verify on a fresh sample host, per engine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from migrate.archives.batching import BatchKind
from migrate.archives.manifest import read_manifest
from migrate.archives.saved_tar import ArchiveError
from migrate.engine.client import Engine
from migrate.errors import VerificationFailed
from migrate.journal.state_dir import StateDir
from migrate.models import Store
from migrate.phases import export, import_, verify
from migrate.phases.base import JSONDict, PhaseContext, RunOptions, UndoContext
from migrate.phases.platform_check import probe_layout
from migrate.phases.records import PhaseRecords
from migrate.sandbox import Sandbox, SandboxFactory, docker, sandbox_samples

pytestmark = pytest.mark.engine


def _context(sandbox: Sandbox, state: Path, progress: list[JSONDict]) -> PhaseContext:
    options = RunOptions(host=sandbox.host, daemon_config=sandbox.daemon_json, state_dir=state)
    return PhaseContext(
        options=options,
        connect=lambda: Engine(sandbox.host),
        checkpoint=lambda data: progress.append(dict(data)),
        state_dir=StateDir(state).ensure(),
    )


def _snapshot(sandbox: Sandbox, ctx: PhaseContext) -> None:
    with Engine(sandbox.host) as engine:
        ctx.inventory_path.parent.mkdir(parents=True, exist_ok=True)
        ctx.inventory_path.write_text(engine.inventory().model_dump_json())


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("engine_key", ["26", "28"])
def test_export_switch_import_verify(fresh_sandbox: SandboxFactory, engine_key: str,
                                     tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine=engine_key, samples=True)
    samples = sandbox_samples(sandbox)
    base_id = samples.image_ids["cm-sample/base:1"]
    progress: list[JSONDict] = []
    ctx = _context(sandbox, tmp_path / "state", progress)
    _snapshot(sandbox, ctx)

    first = export.PHASE.run(ctx).result
    manifest = read_manifest(ctx.archives_dir)
    assert first.archives is not None
    assert sorted(first.archives) == sorted(a.file for a in manifest.archives)
    assert first.written == first.archives and first.bytes_written > 0
    assert not list(ctx.archives_dir.glob("*.partial"))
    assert {r for a in manifest.archives for r in a.refs} >= set(samples.tags)
    dangling = [a for a in manifest.archives if a.kind is BatchKind.DANGLING]
    assert sorted(i for a in dangling for i in a.image_ids) == sorted(samples.dangling_ids)
    assert all(len(a.image_ids) == 1 for a in dangling)
    assert all(a.config_digests_verified for a in manifest.archives)
    assert tuple(p["archive"] for p in progress) == first.written
    # Shared base layers: the sample apps all build on one base, so they share a batch.
    by_ref = {r: a.file for a in manifest.archives for r in a.refs}
    assert by_ref["cm-sample/web:1"] == by_ref["cm-sample/worker:1"] == by_ref["cm-sample/base:1"]

    # A second run (resume, or after pre-staging) reuses every intact archive.
    again = export.PHASE.run(ctx).result
    assert again.bytes_written == 0 and again.written == ()
    assert sorted(again.archives or ()) == sorted(first.archives)

    # A later run after the host changed: only what is new or changed is written.
    docker(sandbox.host, "tag", "cm-sample/base:1", "cm-sample/extra:1")
    _snapshot(sandbox, ctx)
    third = export.PHASE.run(ctx).result
    assert len(third.written) == 1 and set(third.reused) == set(first.archives)
    assert third.archives is not None
    extra = read_manifest(ctx.archives_dir).entry(third.written[0])
    assert extra is not None and extra.refs == ("cm-sample/base:1", "cm-sample/extra:1")

    sandbox.daemon_json.write_text(json.dumps({"features": {"containerd-snapshotter": True}}))
    sandbox.restart()
    assert sandbox.containerd_snapshotter()
    ctx = replace(ctx, records=PhaseRecords({}, {"export": third.to_json()}))

    # A damaged archive is caught before anything is loaded.
    victim = ctx.archives_dir / first.archives[0]
    _flip_byte(victim, victim.stat().st_size // 2)
    with pytest.raises(ArchiveError, match=victim.name):
        import_.PHASE.run(ctx)
    with Engine(sandbox.host) as engine:
        assert engine.list_images() == ()
    _flip_byte(victim, victim.stat().st_size // 2)

    imported = import_.PHASE.run(ctx)
    assert sorted(imported.result.loaded) == sorted(third.archives)
    new_ids = {i.legacy_id: i.id for i in imported.result.imported}
    assert set(new_ids) == set(samples.image_ids.values()) | set(samples.dangling_ids)

    outcome = verify.PHASE.run(ctx)
    assert outcome.result.images == len(new_ids)
    assert outcome.result.multi_platform == "supported"
    report = json.loads((ctx.reports_dir / "verification.json").read_text())
    assert report["ok"] and report["store"] == Store.CONTAINERD
    assert report["multi_platform"]["supported"] is True
    id_map = json.loads((ctx.reports_dir / "id-map.json").read_text())
    assert {old: v["new_id"] for old, v in id_map.items()} == new_ids
    for tag, legacy_id in {**samples.image_ids, "cm-sample/extra:1": base_id}.items():
        assert tag in id_map[legacy_id]["tags"]
    assert "FAIL" not in (ctx.reports_dir / "verification.txt").read_text()

    # Resume: everything present already, nothing loaded twice.
    resumed = import_.PHASE.run(ctx).result
    assert resumed.loaded == () and sorted(resumed.skipped) == sorted(third.archives)

    # The store loads images but cannot run them: only the throw-away container shows it.
    sandbox.daemon_json.write_text(json.dumps(
        {"features": {"containerd-snapshotter": True}, "storage-driver": "overlay2"}))
    sandbox.restart()
    with pytest.raises(VerificationFailed, match="snapshotter not loaded: overlay2") as failed:
        verify.PHASE.run(ctx)
    assert str(ctx.reports_dir / "verification.txt") in failed.value.hint
    text = (ctx.reports_dir / "verification.txt").read_text()
    assert "PROBLEM cannot create" in text
    # The capability check fails too, on its own line, and removed its image all the same.
    assert "multi-platform: NOT SUPPORTED: linux/" in text

    # rollback --purge-imported removes exactly what import brought in.
    undo = UndoContext(options=ctx.options, connect=ctx.connect,
                       state_dir=ctx.state_dir, purge_imported=True)
    # A verify killed during its multi-platform check left the probe: the undo removes it,
    # and the volume guard with it (the switch undo brings the legacy containers back).
    probe = probe_layout()
    with Engine(sandbox.host) as engine:
        engine.load([probe.tar], size=len(probe.tar))
    verified = verify.PHASE.undo(undo, verify.VerifyUndo())
    assert verified.ok, verified.failed
    report = import_.PHASE.undo(undo, imported.undo)
    assert report.ok, report.failed
    with Engine(sandbox.host) as engine:
        # Nothing is left: the guard went with the verify undo, the imports with theirs.
        assert [i.tags for i in engine.list_images()] == []
