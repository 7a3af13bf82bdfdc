"""`containerd-migrate cleanup`: finalise a verified migration (archives, guard, legacy data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from migrate.archives.manifest import delete_archives
from migrate.commands.context import (
    GlobalOptions,
    confirm,
    connect,
    open_state,
    require_confirmation,
)
from migrate.errors import BlockedError, ExitCode, MigrateError, StateError
from migrate.host.fs import tree_bytes
from migrate.journal import JournalState
from migrate.journal.state_dir import StateDir, host_lock
from migrate.models import Inventory, Store
from migrate.phases.stage import purge_staged
from migrate.phases.volume_guard import remove_guard
from migrate.support.sizes import human_bytes


def cleanup(opts: GlobalOptions, prune_legacy: bool = False, yes: bool = False,
            interactive: bool = False, remove_legacy_containers: bool = False) -> int:
    state_dir = open_state(opts)
    with state_dir.lock():
        state = state_dir.journal().state()
        if state.outcome == "rolled_back":
            return _after_rollback(opts, state_dir, prune_legacy, _staged_record(state))
        if not (state.outcome == "completed" and state.phase("verify").status == "done"):
            raise BlockedError("cleanup needs a completed, verified migration",
                               "see `containerd-migrate status`; finish it with "
                               "`containerd-migrate run` first")
        with connect(opts) as engine:
            info = engine.info()
            state_dir.check_host(info.data_root, info.daemon_id)
            if info.store is not Store.CONTAINERD:
                raise BlockedError("the daemon is not on the containerd store now",
                                   "run `containerd-migrate verify` to see why")
            with host_lock(info.data_root):
                pruned = _prune_legacy(opts, state_dir, info.data_root, yes, interactive,
                                       remove_legacy_containers) if prune_legacy else ""
                removed_guard = remove_guard(engine)
                freed = delete_archives(state_dir.archives_dir)
    opts.console.emit(f"cleanup: deleted the archives, {human_bytes(freed)} freed"
                      + ("; removed the volume guard" if removed_guard else "")
                      + (f"\n{pruned}" if pruned else ""))
    return int(ExitCode.OK)


def _staged_record(state: JournalState) -> dict[str, Any]:
    stage = state.phase("stage")
    return dict(stage.undo or {}) if stage.status in ("done", "undone") else {}


def _after_rollback(opts: GlobalOptions, state_dir: StateDir, prune_legacy: bool,
                    staged: dict[str, Any]) -> int:
    """The host is on the legacy store again: what the migration left in the state dir and
    the staged images are only disk use, and the legacy data is the live data, never pruned."""
    if prune_legacy:
        raise BlockedError("the migration was rolled back: the legacy data is the data the "
                           "daemon uses now; nothing was deleted",
                           "run `containerd-migrate cleanup` without --prune-legacy to "
                           "delete the archives")
    lines: list[str] = []
    if staged:
        with connect(opts) as engine:
            if engine.info().store is not Store.LEGACY:
                # Switched again by hand: the staged images may be the ones it serves now.
                raise BlockedError("the daemon runs on the containerd store again; the staged "
                                   "images may be in use", "nothing was deleted")
        lines = purge_staged(staged)
    freed = delete_archives(state_dir.archives_dir)
    opts.console.emit("\n".join([
        f"cleanup: the migration was rolled back; deleted the archives, "
        f"{human_bytes(freed)} freed; images imported into the containerd store stay until "
        "`containerd-migrate rollback --purge-imported` (or a new migration reuses them)",
        *(f"  {line}" for line in lines)]))
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


def legacy_containers(data_root: str, driver: str) -> dict[str, tuple[str, Path]]:
    """Containers on disk that live in the legacy store (ID -> name, directory).

    Read from the data root, not the snapshot: containers may have been created or
    removed since, and the daemon on the containerd store does not list them.
    """
    found: dict[str, tuple[str, Path]] = {}
    for config in sorted(Path(data_root, "containers").glob("*/config.v2.json")):
        try:
            data = json.loads(config.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("Driver") == driver:
            found[str(data.get("ID") or config.parent.name)] = (
                str(data.get("Name") or "").lstrip("/"), config.parent)
    return found


def _carried_over(state_dir: StateDir) -> set[str]:
    """Legacy containers that `--containers recreate` made again in the containerd store."""
    entries = (state_dir.journal().state().phase("recreate").undo or {}).get("containers")
    return {str(e["id"]) for e in entries if isinstance(e, dict)} if isinstance(
        entries, list) else set()


def _prune_legacy(opts: GlobalOptions, state_dir: StateDir, data_root: str, yes: bool,
                  interactive: bool, remove_containers: bool) -> str:
    """Deletes the legacy store's data; returns what was deleted and how much was freed."""
    inventory = _snapshot(state_dir)
    legacy_driver = inventory.engine.legacy_driver
    if not legacy_driver:
        raise StateError("the snapshot names no legacy graph driver; refusing to prune",
                         "nothing was deleted; delete the legacy data by hand if needed")
    legacy = legacy_containers(data_root, legacy_driver)
    carried = _carried_over(state_dir) & set(legacy)
    blocking = {cid: entry for cid, entry in legacy.items() if cid not in carried}
    names = ", ".join(sorted(name or cid[:12] for cid, (name, _) in blocking.items()))
    if blocking and not remove_containers:
        raise BlockedError(
            f"{len(blocking)} legacy container(s) still live in the legacy store, hidden and "
            f"not recreated: {names}; pruning it would destroy their data",
            "bring them back with `containerd-migrate rollback`, or delete them together "
            "with the legacy data: `containerd-migrate cleanup --prune-legacy "
            "--remove-legacy-containers` (asks for confirmation)",
        )
    # Said plainly before any question: a question is no sentence to end an error with.
    require_confirmation("deleting the legacy data (no rollback after it)", yes=yes,
                         interactive=interactive)
    if blocking:
        confirm(opts.console, f"delete the {len(blocking)} hidden legacy container(s) "
                f"{names} for good (their writable layers and logs)?", yes=yes,
                interactive=interactive)
    targets = [Path(data_root) / "image" / legacy_driver, Path(data_root) / legacy_driver]
    folders = [folder for _, folder in legacy.values()]
    size = human_bytes(tree_bytes([*targets, *folders]))
    confirm(opts.console, f"delete the legacy {legacy_driver} data, {size} "
            f"({', '.join(map(str, targets))}"
            + (f", and the legacy store's copies of {len(legacy)} container(s)" if legacy
               else "")
            + ")? After this, rollback is no longer possible", yes=yes, interactive=interactive)
    # Written first: once the deletion has begun, a rollback could only restore a half.
    state_dir.write_file(state_dir.legacy_pruned_path, b"legacy data pruned\n")
    failed: list[str] = []
    # The legacy containers' own directories go too: without their layers they are dead.
    for target in [*targets, *folders]:
        shutil.rmtree(target, onerror=lambda _fn, path, exc: failed.append(f"{path}: {exc[1]}"))
    if failed:
        raise MigrateError(
            f"could not delete {len(failed)} path(s) of the legacy data: {'; '.join(failed[:3])}",
            "rollback is no longer possible; delete the rest by hand",
        )
    containers = (f" and the legacy store's copies of {len(legacy)} container(s) "
                  f"({', '.join(sorted(name or cid[:12] for cid, (name, _) in legacy.items()))})"
                  if legacy else "")
    return (f"cleanup: deleted the legacy {legacy_driver} data ({', '.join(map(str, targets))})"
            f"{containers}, {size} freed; rollback is no longer possible")
