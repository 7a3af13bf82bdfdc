"""The inventory's fast reads: the plain unix-socket GETs and the empty-upper-dir shortcut
answer exactly what the daemon's own `docker diff` and inspect answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from migrate.engine import Engine
from migrate.sandbox import SampleHost, Sandbox, SandboxFactory, docker, sandbox_samples

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("engine", ["26", "28"])
def test_untouched_container_needs_no_diff_and_changes_are_still_seen(
    fresh_sandbox: SandboxFactory, tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox = fresh_sandbox(engine, samples=True)
    base = sandbox_samples(sandbox).base_image
    docker(sandbox.host, "create", "--name", "untouched", base, "true")
    docker(sandbox.host, "create", "--name", "touched", base, "true")
    added = tmp_path / "added.txt"
    added.write_text("new\n")
    docker(sandbox.host, "cp", str(added), "touched:/added.txt")

    asked: list[str] = []
    with Engine(sandbox.host) as engine_api:
        original = engine_api._get_json

        def counting(path: str, params: Any = None) -> Any:
            asked.append(path)
            return original(path, params)

        monkeypatch.setattr(engine_api, "_get_json", counting)
        records = {c.name: c for c in engine_api.list_containers()}
        assert engine_api.raw_image("no-such-image:1") is None
        assert engine_api.raw_image(base) is not None

    by_id = {c.id: c.name for c in records.values()}
    diffed = {by_id[p.split("/")[2]] for p in asked if p.endswith("/changes")}
    assert "untouched" not in diffed, "an empty upper dir needs no docker diff"
    assert "touched" in diffed
    untouched, touched = records["untouched"].writable_layer, records["touched"].writable_layer
    assert untouched is not None and (untouched.added, untouched.changed, untouched.deleted) \
        == (0, 0, 0)
    assert touched is not None and touched.added == 1
    # The same answer as the daemon's own diff, which the shortcut skipped.
    assert docker(sandbox.host, "diff", "untouched").stdout.strip() == ""


def test_layer_sizes_from_the_layer_store_equal_what_history_says(
    engine_sandbox: Sandbox, sample_host: SampleHost, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Engine(engine_sandbox.host) as engine:
        info = engine.info()
        original = engine._get_json
        asked: list[str] = []

        def counting(path: str, params: Any = None) -> Any:
            asked.append(path)
            return original(path, params)

        monkeypatch.setattr(engine, "_get_json", counting)
        from_disk = {i.id: i for i in engine.list_images(info)}
        assert not [p for p in asked if p.endswith("/history")], "sizes came from history"
        from_history = {i.id: i for i in engine.list_images()}
        assert [p for p in asked if p.endswith("/history")]
    assert from_disk.keys() == from_history.keys() >= set(sample_host.image_ids.values())
    for image_id, image in from_history.items():
        assert from_disk[image_id].layer_sizes == image.layer_sizes, image.tags
    big = next(i for i in from_disk.values() if sample_host.big_image in i.tags)
    assert max(big.layer_sizes) >= sample_host.big_layer_bytes
