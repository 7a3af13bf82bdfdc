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
from typing import Protocol, cast

from migrate.engine import Engine
from migrate.errors import MigrateError, UsageError
from migrate.host.restart_command import parse_restart_command
from migrate.journal import JournalState, replay
from migrate.journal.state_dir import StateDir
from migrate.phases.base import GivenOptions
from migrate.phases.lifecycle import Command, CommandLine, Decision, HostNow, decide
from migrate.phases.records import records_of
from migrate.preflight.facts import CONTAINERS_POLICIES, ContainersPolicy


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
    # The command line as typed (journaled with each run) and whether a terminal is there
    # to ask on; the CLI fills both, so no command reads sys.argv or isatty.
    argv: tuple[str, ...] = ()
    interactive: bool = False

    def given(self, *, containers: str | None = None, restart_command: str | None = None,
              restart_timeout: float | None = None, snapshotter: str | None = None,
              ) -> GivenOptions:
        """What the operator gave, for the runner to resolve under the lock."""
        return GivenOptions(
            host=self.host, daemon_config=self.daemon_config, state_dir=self.state_dir,
            follow_symlinks=self.follow_symlinks,
            containers=cast(ContainersPolicy, containers) if containers in CONTAINERS_POLICIES
            else None,
            restart_command=parse_restart_command(restart_command) if restart_command
            else None,
            restart_timeout=restart_timeout, snapshotter=snapshotter)


def command(opts: GlobalOptions, *args: str) -> str:
    """A `containerd-migrate` command line aimed at this host and state dir, quoted so it
    works when pasted into a shell."""
    return shlex.join(("containerd-migrate", "--host", opts.host, "--daemon-config",
                       str(opts.daemon_config), "--state-dir", str(opts.state_dir), *args))


def command_line(opts: GlobalOptions) -> CommandLine:
    """Renders a lifecycle next step as a command for this host and state dir."""
    return lambda args: command(opts, *args)


def read_state(opts: GlobalOptions) -> JournalState:
    """The journal, read-only: a state dir that does not exist is an empty journal, and
    is not created by a command that has nothing to do in it."""
    return replay(StateDir(opts.state_dir).check_usable().journal_path)


def staged_images(state: JournalState) -> frozenset[str]:
    """Legacy IDs of the images the migration a run goes on with has staged: the estimates
    export and import nothing for them (a finished migration's staging is history)."""
    return frozenset(image.legacy_id for image in
                     records_of(state.for_next_run()).stage.expected)


def state_or_empty(opts: GlobalOptions) -> JournalState:
    """The journal, read-only; an empty one when it cannot be read (`plan` says why in its
    state-dir check instead of failing)."""
    try:
        return read_state(opts)
    except (MigrateError, OSError):
        return JournalState()


def lifecycle_decision(opts: GlobalOptions, what: Command, state: JournalState | None = None,
                       *, purge_imported: bool = False) -> Decision:
    """What `what` does in this state dir's state; raises its refusal (exit 3)."""
    state = read_state(opts) if state is None else state
    pruned = StateDir(opts.state_dir).legacy_pruned_path.exists()
    decision = decide(state, what, HostNow(legacy_pruned=pruned), purge_imported=purge_imported)
    if decision.action == "refuse":
        raise decision.refusal(command_line(opts))
    return decision


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
