"""How `rehearse` moves images: a batch the daemon refuses to save is split to name the
images at fault and move the others; a child the CLI starts for the throwaway engine is
recorded and stopped with it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from migrate.archives.batching import Batch, plan_batches
from migrate.commands.rehearse import move_batches
from migrate.engine import Engine
from migrate.errors import EngineError
from migrate.host.processes import alive_as
from migrate.host.throwaway import ThrowawayEngine
from migrate.models import ImageRecord

pytestmark = pytest.mark.unit

BASE = "sha256:" + "a" * 64
DAMAGED = "sha256:" + "b" * 64


def _image(name: str, image_id: str, *layers: str) -> ImageRecord:
    return ImageRecord(id=image_id, tags=(name,), diff_ids=(BASE, *layers),
                       layer_sizes=(10, *(5 for _ in layers)), size=10 + 5 * len(layers))


class RefusingDaemon:
    """`docker save` that fails for any call naming an image holding the damaged layer."""

    def __init__(self, images: list[ImageRecord]) -> None:
        self.damaged = {t for i in images if DAMAGED in i.diff_ids for t in i.tags}

    def save(self, refs: list[str]) -> Iterator[bytes]:
        if self.damaged & set(refs):
            raise EngineError("the Docker daemon refused to save: file integrity checksum "
                              "failed for \"data/big.bin\"", "")
        yield b"tar"


def test_a_refused_batch_names_the_images_at_fault_and_moves_the_others() -> None:
    images = [_image("app:1", "sha256:" + "1" * 64), _image("big:1", "sha256:" + "2" * 64,
                                                              DAMAGED),
              _image("web:1", "sha256:" + "3" * 64, "sha256:" + "c" * 64)]
    live = cast(Engine, RefusingDaemon(images))
    batches = plan_batches(images, set(), None)
    assert len(batches) == 1  # one shared base layer: one batch for all three
    moved: list[Batch] = []
    failures: list[str] = []

    def move(batch: Batch) -> None:
        for _chunk in live.save(list(batch.refs)):
            pass
        moved.append(batch)

    move_batches(live, images, batches, None, failures, move)

    assert failures == ['cannot save big:1: the Docker daemon refused to save: file '
                        'integrity checksum failed for "data/big.bin"']
    assert sorted(r for b in moved for r in b.refs) == ["app:1", "web:1"]


def test_a_batch_refused_with_every_image_saving_alone_is_named_whole() -> None:
    images = [_image("app:1", "sha256:" + "1" * 64)]
    failures: list[str] = []

    def move(batch: Batch) -> None:
        raise EngineError("the Docker daemon refused to save 1 image(s): no space", "")

    move_batches(cast(Engine, RefusingDaemon(images)), images,
                 plan_batches(images, set(), None), None, failures, move)

    assert failures == ["cannot save app:1: the Docker daemon refused to save 1 image(s): "
                        "no space"]


def test_a_recorded_child_is_stopped_with_the_engine(tmp_path: Path) -> None:
    engine = ThrowawayEngine(tmp_path / "r")
    engine.prepare({})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        engine.record_child(child.pid)
        owned: list[Any] = engine.owned_pids()
        assert [pid for pid, _ in owned] == [child.pid]

        did = engine.destroy()

        assert f"stopped process {child.pid}" in did
        assert not alive_as(child.pid, owned[0][1])
        assert not engine.dir.exists()
    finally:
        child.kill()
        child.wait()
