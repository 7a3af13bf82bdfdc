"""What every command shares: global options, the console it talks through, confirmation.

Commands never print or prompt by themselves: they go through a `Console`, which the CLI
provides (click) and which defaults to plain stdout/stdin, so every command is a plain
function usable from tests or another program.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from migrate.engine import Engine
from migrate.errors import UsageError
from migrate.journal.state_dir import StateDir


class Console(Protocol):
    def emit(self, text: str) -> None:
        """Show a report line or block; reports go to stdout, logs to stderr."""
        ...

    def ask(self, question: str) -> bool:
        """Ask a yes/no question on the terminal; False unless the operator says yes."""
        ...


class PlainConsole:
    def emit(self, text: str) -> None:
        print(text)

    def ask(self, question: str) -> bool:
        sys.stderr.write(f"{question} [y/N]: ")
        sys.stderr.flush()
        return sys.stdin.readline().strip().lower() in {"y", "yes"}


@dataclass(frozen=True)
class GlobalOptions:
    host: str
    daemon_config: Path
    state_dir: Path
    follow_symlinks: bool = False
    console: Console = field(default_factory=PlainConsole, compare=False)


def command(opts: GlobalOptions, *args: str) -> str:
    """A `containerd-migrate` command line aimed at this host and state dir, quoted so it
    works when pasted into a shell."""
    return shlex.join(("containerd-migrate", "--host", opts.host, "--daemon-config",
                       str(opts.daemon_config), "--state-dir", str(opts.state_dir), *args))


def connect(opts: GlobalOptions) -> Engine:
    return Engine(opts.host)


def open_state(opts: GlobalOptions) -> StateDir:
    return StateDir(opts.state_dir).ensure()


def require_confirmation(what: str, *, yes: bool, interactive: bool) -> None:
    """Checked before anything is touched: without a terminal only --yes confirms."""
    if not yes and not interactive:
        raise UsageError(
            f"{what} needs confirmation, and there is no terminal to ask on; nothing was changed",
            "pass --yes to confirm non-interactively",
        )


def confirm(console: Console, question: str, *, yes: bool, interactive: bool) -> None:
    """Ask on a terminal; refuse without one unless --yes, so scripts never hang."""
    if yes:
        return
    require_confirmation(question, yes=yes, interactive=interactive)
    if not console.ask(question):
        raise UsageError("not confirmed; nothing was changed", "pass --yes to skip the question")
