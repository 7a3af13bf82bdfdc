"""`containerd-migrate verify`: re-run the verification on demand."""

from __future__ import annotations

from dataclasses import dataclass

from migrate.archives.manifest import read_manifest
from migrate.commands.context import GlobalOptions, connect, lifecycle_decision, read_state
from migrate.errors import BlockedError, ExitCode, StateError
from migrate.journal.state_dir import StateDir
from migrate.models import Store
from migrate.phases import verify as verify_phase
from migrate.phases.records import records_of


@dataclass(frozen=True)
class VerifyArgs:
    """`verify` takes no option of its own; the shape every command has."""


def verify(opts: GlobalOptions, args: VerifyArgs) -> int:
    state = read_state(opts)
    lifecycle_decision(opts, "verify", state)  # refuses (exit 3) when nothing is migrated
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
            raise BlockedError(
                f"the daemon at {opts.host} is on the {store.value} image store although the "
                "migration switched it: nothing to verify; the previous report is kept",
                "see `containerd-migrate status`")
        staged = records_of(state).stage.expected
        report = verify_phase.verify(engine, inventory, read_manifest(state_dir.archives_dir),
                                     staged)
    paths = verify_phase.write_reports(report, state_dir)
    opts.console.emit(verify_phase.render_text(report))
    verify_phase.raise_if_failed(report, paths["verification.txt"])
    return int(ExitCode.OK)
