"""`containerd-migrate stage`: fill the containerd store ahead of the window, while serving."""

from __future__ import annotations

from migrate.commands.context import GlobalOptions
from migrate.commands.prepare import PrepareArgs, prepare


def stage(opts: GlobalOptions, args: PrepareArgs) -> int:
    """Snapshot + stage while the daemon keeps serving; a later `run` continues.

    As with `export`, the containers policy and restart command are journaled for `run`."""
    return prepare(opts, "stage", args)
