"""`containerd-migrate verify`: re-run the verification on demand."""

from __future__ import annotations

from migrate.archives.manifest import read_manifest
from migrate.commands.context import GlobalOptions, connect
from migrate.errors import ExitCode, StateError
from migrate.journal import replay
from migrate.journal.state_dir import StateDir
from migrate.models import Store
from migrate.phases.base import staged_images
from migrate.phases.verify import raise_if_failed, render_text, verify, write_reports


def verify_command(opts: GlobalOptions) -> int:
    state_dir = StateDir(opts.state_dir).ensure()
    inventory = state_dir.load_inventory()
    if inventory is None:
        raise StateError(f"no snapshot in {state_dir.path}: nothing to verify against",
                         "run `containerd-migrate run` (or `containerd-migrate export`) first")
    with connect(opts) as engine:
        store = engine.info().store
        if store is not Store.CONTAINERD:
            # After an export only, or a rollback: there is nothing migrated to verify, and
            # the report of the last real verification stays as it was.
            opts.console.emit(
                f"verify: the daemon at {opts.host} is on the {store.value} image store (not "
                "migrated yet, or rolled back): nothing to verify; the previous report is "
                "kept; see `containerd-migrate status`")
            return int(ExitCode.BLOCKED)
        staged = staged_images(replay(state_dir.journal_path).phase("stage").result)
        report = verify(engine, inventory, read_manifest(state_dir.archives_dir), staged)
    paths = write_reports(report, state_dir.reports_dir)
    opts.console.emit(render_text(report))
    raise_if_failed(report, paths["verification.txt"])
    return int(ExitCode.OK)
