"""What this tool put into the containerd store, across every migration of a state dir.

Staged images, imported images and the commit images of `--containers recreate` stay in
the containerd store after a rollback (a new migration reuses them). `cleanup` after a
rollback removes them through `ctr`, since dockerd then serves the legacy store and its API
cannot reach them: by name, and only names that still point at the manifest the journal
recorded, so an image someone pulled or built since under the same name stays.
containerd's garbage collector then frees the content and snapshots nothing else uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from migrate.archives.saved_tar import qualified_name
from migrate.engine import Engine
from migrate.engine.containerd import DANGLING_PREFIX, Containerd, ContainerdError
from migrate.host.daemon_json import read_daemon_config
from migrate.host.launch import detect_launch
from migrate.journal import ToolImage
from migrate.phases.base import UndoReport
from migrate.preflight.facts import staging_facts


def store_name(image: ToolImage) -> str:
    """The name containerd keeps the image under."""
    if image.staged:
        return image.name
    if image.dangling:
        return f"{DANGLING_PREFIX}{image.digest}"
    return qualified_name(image.name)


@dataclass(frozen=True)
class ToolImagesNow:
    """The tool's names still in the store, and the client that reaches it."""

    client: Containerd
    names: tuple[str, ...]


def tool_images_now(engine: Engine, daemon_config: Path, images: Iterable[ToolImage],
                    ) -> ToolImagesNow:
    """Which of `images` are in dockerd's containerd store now (by name and digest)."""
    info = engine.info()
    launch = detect_launch(info.pid, engine.host)
    facts = staging_facts(info, launch, read_daemon_config(daemon_config), measure=False)
    client = facts.client()  # raises, saying why, when containerd cannot be reached
    present = client.images()
    names = sorted({store_name(i) for i in images if present.get(store_name(i)) == i.digest})
    return ToolImagesNow(client, tuple(names))


def purge_tool_images(engine: Engine, daemon_config: Path, images: Iterable[ToolImage],
                      ) -> UndoReport:
    """Remove every name of `images` that still points where the journal says."""
    try:
        now = tool_images_now(engine, daemon_config, images)
        now.client.remove_images(list(now.names))
    except ContainerdError as error:
        return UndoReport.failure(f"could not remove the tool's images from the containerd "
                                  f"store: {error.message}")
    if not now.names:
        return UndoReport.done("the containerd store holds no image this tool put there")
    return UndoReport.done(f"removed {len(now.names)} image name(s) this tool had put into "
                           "the containerd store (staged, imported, commits)")
