"""`rollback` (undo the migration from its journal) and `cleanup` (finalise it)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate import __version__
from migrate.archives.manifest import manifest_path
from migrate.commands.common import (
    GlobalOptions,
    can_confirm,
    confirm,
    connect,
    emit,
    load_inventory,
    open_state,
)
from migrate.engine.restart import parse_restart_command
from migrate.errors import BlockedError, ExitCode, MigrateError
from migrate.journal import JournalState
from migrate.models import Store
from migrate.phases.base import RunOptions
from migrate.phases.rollback_check import check_restored
from migrate.phases.runner import Runner
from migrate.phases.volume_guard import remove_guard

PRUNED_MARKER = "legacy-pruned"
MANIFEST_NAME = manifest_path(Path(".")).name


@dataclass(frozen=True)
class RollbackArgs:
    restart_command: str | None = None
    restart_timeout: float = 120.0
    force: bool = False
    purge_imported: bool = False
    yes: bool = False
    interactive: bool = False


def _recorded_options(state: JournalState) -> dict[str, Any]:
    return dict(state.runs[-1].options) if state.runs else {}


def rollback_options(opts: GlobalOptions, args: RollbackArgs, state: JournalState) -> RunOptions:
    recorded = _recorded_options(state)
    restart = (parse_restart_command(args.restart_command) if args.restart_command
               else tuple(str(a) for a in recorded.get("restart_command") or ()))
    return RunOptions(
        host=opts.host, daemon_config=opts.daemon_config, state_dir=opts.state_dir,
        restart_command=restart, restart_timeout=args.restart_timeout,
        follow_symlinks=opts.follow_symlinks, force=args.force,
        purge_imported=args.purge_imported,
    )


def rollback(opts: GlobalOptions, args: RollbackArgs) -> int:
    can_confirm("the rollback", yes=args.yes, interactive=args.interactive)
    state_dir = open_state(opts)
    if (state_dir.path / PRUNED_MARKER).exists():
        raise BlockedError("the legacy data was pruned by `cleanup --prune-legacy`; there is "
                           "nothing to roll back to", "re-pull or rebuild images if needed")
    with state_dir.lock():
        journal = state_dir.journal()
        state = journal.state()
        if state.last_migration_id is None:
            emit("no migration to roll back")
            return int(ExitCode.OK)
        if state.outcome == "rolled_back":
            emit(f"migration {state.last_migration_id} is already rolled back")
            return int(ExitCode.OK)
        confirm(f"roll back migration {state.last_migration_id} "
                f"({', '.join(p.name for p in state.phases_to_undo())})?",
                yes=args.yes, interactive=args.interactive)
        options = rollback_options(opts, args, state)
        journal.start_run(__version__, tuple(sys.argv[1:]), dict(options.to_record()),
                          migration_id=state.last_migration_id)
        runner = Runner(state_dir, journal, options, lambda: connect(opts))
        lines = runner.rollback(force=args.force, purge_imported=args.purge_imported)
        engine = connect(opts)
        try:
            ok, problems = check_restored(engine, load_inventory(state_dir.inventory_path))
        finally:
            engine.close()
    emit("rollback:\n" + "\n".join(f"  did: {line}" for line in lines))
    emit("checked:\n" + "\n".join(f"  ok: {line}" for line in ok))
    if problems:
        emit("\n".join(f"  PROBLEM: {line}" for line in problems))
        raise MigrateError(f"rollback finished but {len(problems)} check(s) failed",
                           "see the PROBLEM lines above and the daemon log")
    return int(ExitCode.OK)


def _delete_archives(folder: Path) -> int:
    """Deletes the archives; keeps their manifest, which `verify` still reads (expected IDs)."""
    freed = 0
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink() and path.name != MANIFEST_NAME:
            freed += path.stat().st_size
            path.unlink()
    return freed


def cleanup(opts: GlobalOptions, prune_legacy: bool = False, yes: bool = False,
            interactive: bool = False) -> int:
    state_dir = open_state(opts)
    with state_dir.lock():
        state = state_dir.journal().state()
        if not (state.outcome == "completed" and state.phase("verify").status == "done"):
            raise BlockedError("cleanup needs a completed, verified migration",
                               "see `containerd-migrate status`; finish it with `run` first")
        engine = connect(opts)
        try:
            info = engine.info()
            if info.store is not Store.CONTAINERD:
                raise BlockedError("the daemon is not on the containerd store now",
                                   "run `containerd-migrate verify` to see why")
            inventory = load_inventory(state_dir.inventory_path)
            if prune_legacy:
                _prune_legacy(state_dir.path, info.data_root, info.driver, inventory, yes,
                              interactive)
            removed_guard = remove_guard(engine)
        finally:
            engine.close()
        freed = _delete_archives(state_dir.archives_dir)
    emit(f"cleanup: deleted the archives, {freed} bytes freed"
         + ("; removed the volume guard" if removed_guard else ""))
    return int(ExitCode.OK)


def _prune_legacy(state_path: Path, data_root: str, driver: str, inventory: Any, yes: bool,
                  interactive: bool) -> None:
    legacy_driver = inventory.engine.driver if inventory else driver
    if inventory is not None and inventory.containers:
        raise BlockedError(
            f"{len(inventory.containers)} legacy container(s) still live in the legacy store; "
            "pruning it would destroy their data",
            "recreate or remove them first, then run cleanup --prune-legacy again",
        )
    targets = [Path(data_root) / "image" / legacy_driver, Path(data_root) / legacy_driver]
    confirm(f"delete the legacy {legacy_driver} data ({', '.join(map(str, targets))})? After "
            "this, rollback is no longer possible", yes=yes, interactive=interactive)
    (state_path / PRUNED_MARKER).write_text("legacy data pruned\n")
    for target in targets:
        shutil.rmtree(target, ignore_errors=True)
