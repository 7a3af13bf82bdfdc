"""`--format json` of `run`, `rollback` and `cleanup`: one JSON document on stdout.

The document is built from the typed values a command has (`ForwardOutcome`,
`RollbackOutcome`, the journal state, the cleanup's own values), never from its text, so a
reworded message changes no field. Its schema is in the README ("JSON output of run,
rollback and cleanup"); `SCHEMA_VERSION` changes when a field changes meaning or goes away
(a new field does not change it).

A command in JSON mode talks through a `Report`: the lines it would have printed are kept
as `messages`, and exactly one document is printed, also when the command fails (then with
`error`, and the exit code the CLI exits with; the `error:`/`hint:` lines still go to stderr).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from migrate.commands.context import Console, GlobalOptions
from migrate.errors import ExitCode, MigrateError, RolledBack
from migrate.phases.runner import RollbackOutcome

SCHEMA_VERSION = 1
Format = Literal["text", "json"]


@dataclass
class _Collecting:
    """A console that keeps what a command says, for the document's `messages`; questions
    still go to the operator's console."""

    inner: Console
    lines: list[str] = field(default_factory=list)

    def emit(self, text: str) -> None:
        self.lines.extend(line for line in text.splitlines() if line.strip())

    def ask(self, question: str) -> bool:
        return self.inner.ask(question)


def rollback_fields(outcome: RollbackOutcome) -> dict[str, Any]:
    """The undo part of a document (`rollback`, and a run's automatic rollback)."""
    return {"did": list(outcome.lines), "failed": list(outcome.failed),
            "checked": list(outcome.ok), "problems": list(outcome.problems)}


class Report:
    """Where a command's result goes: text through the console as today, or, with
    `--format json`, fields gathered as the command learns them and one document at the end.
    """

    def __init__(self, opts: GlobalOptions, command: str, fmt: Format) -> None:
        self.command = command
        self.json = fmt == "json"
        self._given = opts
        self._console = opts.console
        self._collecting = _Collecting(opts.console)
        # The options the command runs with: in JSON mode its lines are collected.
        self.opts = replace(opts, console=self._collecting) if self.json else opts
        self.fields: dict[str, Any] = {}
        self._handed_over = False

    def hand_over(self) -> GlobalOptions:
        """Another command finishes this one (`rollback --purge-imported` after a rollback
        is `cleanup`): its document is the one printed; returns the options to run it with."""
        self._handed_over = True
        return self._given

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)

    def done(self, result: str, code: ExitCode = ExitCode.OK) -> int:
        """The command succeeded: print the document (JSON mode); returns the exit code."""
        self._print(result, int(code), None)
        return int(code)

    def failed(self, error: MigrateError) -> None:
        """The command raises `error`: print the document first (JSON mode)."""
        rolled_back = isinstance(error, RolledBack) and error.exit_code == ExitCode.ROLLED_BACK
        self._print("rolled_back" if rolled_back else "failed", int(error.exit_code),
                    {"message": error.message, "hint": error.hint})

    def _print(self, result: str, code: int, error: dict[str, str] | None) -> None:
        if not self.json or self._handed_over:
            return
        document = {"schema_version": SCHEMA_VERSION, "command": self.command,
                    "result": result, "exit_code": code, "migration_id": None,
                    **self.fields, "error": error, "messages": self._collecting.lines}
        self._console.emit(json.dumps(document, indent=2))


def reported(opts: GlobalOptions, command: str, fmt: Format,
             body: Callable[[Report], int]) -> int:
    """Runs a command's `body` with its Report: the document is printed however it ends."""
    report = Report(opts, command, fmt)
    try:
        return body(report)
    except MigrateError as error:
        report.failed(error)
        raise
