"""What every command shares: global options, connecting, opening the state dir."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click

from migrate.engine.client import Engine
from migrate.errors import UsageError
from migrate.journal.state_dir import StateDir
from migrate.models import Inventory


@dataclass(frozen=True)
class GlobalOptions:
    host: str
    daemon_config: Path
    state_dir: Path
    follow_symlinks: bool = False


def connect(opts: GlobalOptions) -> Engine:
    return Engine(opts.host)


@contextmanager
def engine_session(opts: GlobalOptions) -> Iterator[Engine]:
    engine = connect(opts)
    try:
        yield engine
    finally:
        engine.close()


def open_state(opts: GlobalOptions) -> StateDir:
    return StateDir(opts.state_dir).ensure()


def emit(text: str) -> None:
    """Reports go to stdout; logs go to stderr (see logconfig)."""
    click.echo(text)


def can_confirm(what: str, *, yes: bool, interactive: bool) -> None:
    """Checked before anything is touched: without a terminal only --yes confirms."""
    if not yes and not interactive:
        raise UsageError(
            f"{what} needs confirmation, and there is no terminal to ask on; nothing was changed",
            "pass --yes to confirm non-interactively",
        )


def confirm(question: str, *, yes: bool, interactive: bool) -> None:
    """Ask on a terminal; refuse without one unless --yes, so scripts never hang."""
    if yes:
        return
    can_confirm(question, yes=yes, interactive=interactive)
    if not click.confirm(question, default=False, err=True):
        raise UsageError("not confirmed; nothing was changed", "pass --yes to skip the question")


def load_inventory(path: Path) -> Inventory | None:
    """The snapshot a migration compares against; None before the snapshot phase ran."""
    try:
        return Inventory.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None
