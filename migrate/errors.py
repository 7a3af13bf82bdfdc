"""One error hierarchy: every failure an operator can see is a MigrateError.

Each error carries a one-paragraph message, a hint saying what to do next, and the
process exit code, so the CLI can print it without a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    BLOCKED = 3
    VERIFY_FAILED = 4
    ENGINE_UNREACHABLE = 5
    CONFIG_INVALID = 6
    STATE_INVALID = 7
    LOCKED = 8
    DISK_FULL = 9
    ROLLED_BACK = 10
    INTERRUPTED = 130


class MigrateError(Exception):
    """Base of every error the tool reports to an operator."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, hint: str = "", *, exit_code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


class UsageError(MigrateError):
    exit_code = ExitCode.USAGE


class BlockedError(MigrateError):
    exit_code = ExitCode.BLOCKED


class VerificationFailed(MigrateError):
    exit_code = ExitCode.VERIFY_FAILED


class EngineUnreachable(MigrateError):
    exit_code = ExitCode.ENGINE_UNREACHABLE


class EngineError(MigrateError):
    """The daemon answered, but refused or failed an operation."""


class DaemonConfigError(MigrateError):
    exit_code = ExitCode.CONFIG_INVALID


class StateError(MigrateError):
    """The state dir or journal is unusable (wrong owner, other host, bad version...)."""

    exit_code = ExitCode.STATE_INVALID


class LockedError(MigrateError):
    exit_code = ExitCode.LOCKED


class DiskFullError(MigrateError):
    exit_code = ExitCode.DISK_FULL


class RestartFailed(MigrateError):
    """The daemon did not come back, or came back in the wrong store."""


class RolledBack(MigrateError):
    """A run failed and was rolled back automatically; the host is on the legacy store."""

    exit_code = ExitCode.ROLLED_BACK


class Interrupted(MigrateError):
    exit_code = ExitCode.INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd stopping the unit, `kill PID`): an interruption like Ctrl-C.

    A KeyboardInterrupt, not a MigrateError, because it is raised wherever the process
    happens to be: code that copes with a failed engine call (`except MigrateError`, e.g.
    verify noting one unreadable image and going on) must not swallow it and carry on.
    """

    signal_name = "SIGTERM"


class HungUp(Terminated):
    """SIGHUP: the terminal or ssh session went away. Journaled and resumable like SIGTERM."""

    signal_name = "SIGHUP"
