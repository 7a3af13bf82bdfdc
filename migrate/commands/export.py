"""`containerd-migrate export`: snapshot and export ahead of the window, while serving."""

from __future__ import annotations

from migrate.commands.context import GlobalOptions
from migrate.commands.prepare import PrepareArgs, prepare


def export(opts: GlobalOptions, args: PrepareArgs) -> int:
    """Snapshot + export while the daemon keeps serving; a later `run` continues.

    The containers policy and restart command are journaled with the run, so the `run`
    in the window uses them unless it is given others."""
    return prepare(opts, "export", args)
