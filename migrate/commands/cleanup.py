"""`containerd-migrate cleanup`: finalise a verified migration (archives, guard, legacy data)."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass

from migrate.archives.manifest import delete_archives
from migrate.commands.context import (
    GlobalOptions,
    command,
    confirm,
    connect,
    lifecycle_decision,
    open_state,
    read_state,
    require_confirmation,
)
from migrate.commands.output import Format, Report, reported
from migrate.commands.rehearse import remove_leftovers_locked
from migrate.engine.legacy_store import legacy_containers, legacy_data, legacy_tags
from migrate.errors import BlockedError, MigrateError, StateError
from migrate.host.fs import tree_bytes
from migrate.journal import JournalState
from migrate.journal.state_dir import StateDir, host_lock
from migrate.models import Inventory, Store
from migrate.phases.base import UndoReport
from migrate.phases.platform_check import remove_probe
from migrate.phases.records import records_of
from migrate.phases.tool_images import purge_tool_images
from migrate.phases.volume_guard import remove_guard
from migrate.support.sizes import human_bytes


@dataclass(frozen=True)
class CleanupArgs:
    prune_legacy: bool = False
    remove_legacy_containers: bool = False
    keep_images: bool = False
    yes: bool = False
    fmt: Format = "text"


def cleanup(opts: GlobalOptions, args: CleanupArgs) -> int:
    return reported(opts, "cleanup", args.fmt, lambda report: _cleanup(
        report, args.prune_legacy, args.yes, opts.interactive, args.remove_legacy_containers,
        args.keep_images))


def _cleanup(report: Report, prune_legacy: bool, yes: bool, interactive: bool,
             remove_legacy_containers: bool, keep_images: bool) -> int:
    opts = report.opts
    # What a killed (or --keep) rehearsal left goes whatever the migration's state is; with
    # no migration, that is all there is to clean up.
    left = remove_leftovers_locked(opts.state_dir)
    for line in left:
        opts.console.emit(line)
    if left and read_state(opts).migration_id is None:
        return report.done("rehearsal_removed")
    decision = lifecycle_decision(opts, "cleanup")  # refuses before creating anything
    if decision.action == "nothing":
        report.set(reason=decision.reason)
        if not report.json:
            opts.console.emit(decision.reason)
        return report.done("nothing_to_do")
    state_dir = open_state(opts)
    with state_dir.lock():
        journal = state_dir.journal()
        state = journal.state()
        lifecycle_decision(opts, "cleanup", state)  # again, under the lock
        report.set(migration_id=state.last_migration_id, after=state.outcome)
        if state.outcome == "rolled_back":
            return _after_rollback(report, state_dir, state, prune_legacy, keep_images)
        with connect(opts) as engine:
            info = engine.info()
            state_dir.check_host(info.data_root, info.daemon_id)
            if info.store is not Store.CONTAINERD:
                raise BlockedError("the daemon is not on the containerd store now",
                                   "run `containerd-migrate verify` to see why")
            with host_lock(info.data_root):
                if prune_legacy:
                    _refuse_if_not_carried(info.data_root, state_dir, engine.image_tags())
                pruned = _prune_legacy(opts, state_dir, info.data_root, yes, interactive,
                                       remove_legacy_containers) if prune_legacy else None
                removed_guard = remove_guard(engine)
                # What a verify killed during its multi-platform check left behind.
                left = remove_probe(engine)
                if left:
                    raise MigrateError(f"cleanup could not remove {'; '.join(left)}",
                                       f"run `{command(opts, 'cleanup')}` again")
                freed = delete_archives(state_dir.archives_dir)
                journal.cleaned_up(pruned=prune_legacy)
    report.set(freed_bytes=freed, removed_volume_guard=removed_guard,
               pruned_legacy=asdict(pruned) if pruned else None)
    if not report.json:
        opts.console.emit(f"cleanup: deleted the archives, {human_bytes(freed)} freed"
                          + ("; removed the volume guard" if removed_guard else "")
                          + (f"\n{pruned.text()}" if pruned else ""))
    return report.done("cleaned_up")


def _after_rollback(report: Report, state_dir: StateDir, state: JournalState,
                    prune_legacy: bool, keep_images: bool) -> int:
    """The host is on the legacy store again: what the migrations of this state dir left
    in the state dir and in the containerd store is only disk use, and the legacy data is
    the live data, never pruned."""
    opts = report.opts
    if prune_legacy:
        raise BlockedError("the migration was rolled back: the legacy data is the data the "
                           "daemon uses now; nothing was deleted",
                           f"run `{command(opts, 'cleanup')}` without --prune-legacy to "
                           "delete the archives and the tool's images in the containerd store")
    undone = UndoReport()
    if not keep_images and state.tool_images:
        with connect(opts) as engine:
            info = engine.info()
            state_dir.check_host(info.data_root, info.daemon_id)
            if info.store is not Store.LEGACY:
                # Switched again by hand: the tool's images may be the ones it serves now.
                raise BlockedError("the daemon runs on the containerd store again; the images "
                                   "this tool put there may be in use; nothing was deleted",
                                   "switch back to the legacy store first, or remove them "
                                   "with `docker image rm`")
            with host_lock(info.data_root):
                undone = purge_tool_images(engine, opts.daemon_config, state.tool_images)
    freed = delete_archives(state_dir.archives_dir)
    kept = ("; the images this tool put into the containerd store were kept (--keep-images)"
            if keep_images else "")
    report.set(freed_bytes=freed, kept_images=keep_images, did=list(undone.did),
               failed=list(undone.failed))
    if not report.json:
        opts.console.emit("\n".join([
            f"cleanup: the migration was rolled back; deleted the archives, "
            f"{human_bytes(freed)} freed{kept}",
            *(f"  {line}" for line in undone.did),
            *(f"  FAILED: {line}" for line in undone.failed)]))
    if not undone.ok:
        raise MigrateError(f"cleanup could not remove everything: {'; '.join(undone.failed)}",
                           f"fix the cause, then run `{command(opts, 'cleanup')}` again")
    state_dir.journal().cleaned_up(kept_images=keep_images)
    return report.done("cleaned_up")


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


def _carried_over(state_dir: StateDir) -> set[str]:
    """Legacy containers that `--containers recreate` made again in the containerd store."""
    return {entry.id for entry in records_of(state_dir.journal().state()).recreate_undo.containers}


def _refuse_if_not_carried(data_root: str, state_dir: StateDir,
                           live: dict[str, tuple[str, ...]]) -> None:
    """Fail closed: a tag the legacy store holds and the containerd store lacks (built,
    pulled or tagged after the snapshot) would be gone for good after the prune."""
    inventory = _snapshot(state_dir)
    driver = inventory.engine.legacy_driver
    if not driver:
        return  # _prune_legacy refuses, saying why
    carried = {tag for tags in live.values() for tag in tags}
    missing = sorted(tag for tag in legacy_tags(data_root, driver) if tag not in carried)
    if missing:
        raise BlockedError(
            f"the legacy store holds {len(missing)} tag(s) the containerd store lacks: "
            f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}; pruning would "
            "delete them for good; nothing was deleted",
            "roll back and migrate again to carry them over (`containerd-migrate rollback "
            "--yes`, then `containerd-migrate run --yes --containers recreate`), or remove "
            "them on purpose before pruning")


@dataclass(frozen=True)
class PrunedLegacy:
    """What `--prune-legacy` deleted (the `pruned_legacy` of cleanup's JSON document)."""

    driver: str
    paths: tuple[str, ...]
    # Names (else short IDs) of the legacy containers whose copies went with the data.
    containers: tuple[str, ...]
    freed_bytes: int

    def text(self) -> str:
        containers = (f" and the legacy store's copies of {len(self.containers)} container(s) "
                      f"({', '.join(self.containers)})" if self.containers else "")
        return (f"cleanup: deleted the legacy {self.driver} data ({', '.join(self.paths)})"
                f"{containers}, {human_bytes(self.freed_bytes)} freed; rollback is no longer "
                "possible")


def _prune_legacy(opts: GlobalOptions, state_dir: StateDir, data_root: str, yes: bool,
                  interactive: bool, remove_containers: bool) -> PrunedLegacy:
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
    targets = legacy_data(data_root, legacy_driver)
    folders = [folder for _, folder in legacy.values()]
    size_bytes = tree_bytes([*targets, *folders])
    size = human_bytes(size_bytes)
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
    return PrunedLegacy(legacy_driver, tuple(map(str, targets)),
                        tuple(sorted(name or cid[:12] for cid, (name, _) in legacy.items())),
                        size_bytes)
