"""`containerd-migrate cleanup`: finalise a verified migration (archives, guard, legacy data)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from migrate.archives.manifest import delete_archives
from migrate.commands.context import GlobalOptions, confirm, connect, open_state
from migrate.errors import BlockedError, ExitCode, MigrateError, StateError
from migrate.journal import JournalState
from migrate.journal.state_dir import StateDir
from migrate.models import Inventory, Store
from migrate.phases.stage import purge_staged
from migrate.phases.volume_guard import remove_guard


def cleanup(opts: GlobalOptions, prune_legacy: bool = False, yes: bool = False,
            interactive: bool = False) -> int:
    state_dir = open_state(opts)
    with state_dir.lock():
        state = state_dir.journal().state()
        if state.outcome == "rolled_back" and _staged_record(state):
            return _cleanup_rolled_back(opts, state_dir, _staged_record(state))
        if not (state.outcome == "completed" and state.phase("verify").status == "done"):
            raise BlockedError("cleanup needs a completed, verified migration",
                               "see `containerd-migrate status`; finish it with "
                               "`containerd-migrate run` first")
        with connect(opts) as engine:
            info = engine.info()
            if info.store is not Store.CONTAINERD:
                raise BlockedError("the daemon is not on the containerd store now",
                                   "run `containerd-migrate verify` to see why")
            if prune_legacy:
                _prune_legacy(opts, state_dir, info.data_root, yes, interactive)
            removed_guard = remove_guard(engine)
        freed = delete_archives(state_dir.archives_dir)
    opts.console.emit(f"cleanup: deleted the archives, {freed} bytes freed"
                      + ("; removed the volume guard" if removed_guard else ""))
    return int(ExitCode.OK)


def _staged_record(state: JournalState) -> dict[str, Any]:
    stage = state.phase("stage")
    return dict(stage.undo or {}) if stage.status in ("done", "undone") else {}


def _cleanup_rolled_back(opts: GlobalOptions, state_dir: StateDir,
                         staged: dict[str, Any]) -> int:
    """After a rollback: the staged images and the archives serve nothing any more."""
    with connect(opts) as engine:
        if engine.info().store is not Store.LEGACY:
            # Switched again by hand: the staged images may be the ones it serves now.
            raise BlockedError("the daemon runs on the containerd store again; the staged "
                               "images may be in use", "nothing was deleted")
    lines = purge_staged(staged)
    freed = delete_archives(state_dir.archives_dir)
    opts.console.emit("\n".join(["cleanup after the rollback:", *(f"  {line}" for line in lines),
                                  f"  deleted the archives, {freed} bytes freed"]))
    return int(ExitCode.OK)


def _snapshot(state_dir: StateDir) -> Inventory:
    inventory = state_dir.load_inventory()
    if inventory is None:
        # Without it we can neither tell which graph driver's data to delete nor whether
        # legacy containers still need it.
        raise StateError(
            f"the snapshot {state_dir.inventory_path} is missing or unreadable; refusing to "
            "prune the legacy data without it",
            "nothing was deleted; restore the file from a backup, or delete the legacy data "
            "by hand once you are sure no container needs it",
        )
    return inventory


def _prune_legacy(opts: GlobalOptions, state_dir: StateDir, data_root: str, yes: bool,
                  interactive: bool) -> None:
    inventory = _snapshot(state_dir)
    legacy_driver = inventory.engine.legacy_driver
    if not legacy_driver:
        raise StateError("the snapshot names no legacy graph driver; refusing to prune",
                         "nothing was deleted; delete the legacy data by hand if needed")
    if inventory.containers:
        raise BlockedError(
            f"{len(inventory.containers)} legacy container(s) still live in the legacy store; "
            "pruning it would destroy their data",
            "recreate or remove them first, then run cleanup --prune-legacy again",
        )
    targets = [Path(data_root) / "image" / legacy_driver, Path(data_root) / legacy_driver]
    confirm(opts.console, f"delete the legacy {legacy_driver} data "
            f"({', '.join(map(str, targets))})? After this, rollback is no longer possible",
            yes=yes, interactive=interactive)
    # Written first: once the deletion has begun, a rollback could only restore a half.
    state_dir.write_file(state_dir.legacy_pruned_path, b"legacy data pruned\n")
    failed: list[str] = []
    for target in targets:
        shutil.rmtree(target, onerror=lambda _fn, path, exc: failed.append(f"{path}: {exc[1]}"))
    if failed:
        raise MigrateError(
            f"could not delete {len(failed)} path(s) of the legacy data: {'; '.join(failed[:3])}",
            "rollback is no longer possible; delete the rest by hand",
        )
