"""structlog set-up: console rendering for humans, one JSON object per line for machines.

structlog (with rich, which it loads when installed) takes 0.15 s to import, a tenth of a
`plan` on a big host, and the read-only commands never log. So `configure_logging` only
records what it was asked, and structlog is imported and configured on the first log call.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

from migrate.support.sizes import human_bytes

if TYPE_CHECKING:
    import structlog

LogFormat = Literal["console", "json"]


def _is_size_key(key: str) -> bool:
    return key == "bytes" or key.endswith("_bytes") or key.startswith("bytes_")


def humanize(_logger: object, _method: str, event: MutableMapping[str, Any],
             ) -> MutableMapping[str, Any]:
    """For people: sizes as `12.5 MB`, and no `ok=True` flags (they say nothing at INFO)."""
    for key in list(event):
        value = event[key]
        if value is True and key != "event":
            del event[key]
        elif _is_size_key(key) and isinstance(value, int) and not isinstance(value, bool):
            event[key] = human_bytes(value)
    return event


# Writes one log line (without its newline) where it cannot tear a progress bar apart:
# `support.progress` sets it to tqdm.write while a bar is drawn, None otherwise.
LineWriter = Callable[[str, TextIO], None]


class _Through:
    writer: LineWriter | None = None


def write_logs_through(writer: LineWriter | None) -> None:
    """Route log lines through `writer` from now on (None: straight to the stream)."""
    _Through.writer = writer


class LineStream:
    """The log stream, a whole line at a time: `print` writes a line and its newline apart,
    and a bar redrawn between the two would land in the middle of the line."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        if "\n" in self._partial:
            lines, _, self._partial = self._partial.rpartition("\n")
            writer = _Through.writer
            if writer is None:
                self._stream.write(lines + "\n")
            else:
                for line in lines.split("\n"):
                    writer(line, self._stream)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


class _Pending:
    """What the last configure_logging asked for, until a log call applies it."""

    settings: tuple[LogFormat, int, bool, TextIO] | None = None


def configure_logging(fmt: LogFormat = "console", verbosity: int = 0, quiet: bool = False) -> None:
    # The stream is the one of this moment (tests swap sys.stderr).
    _Pending.settings = (fmt, verbosity, quiet, sys.stderr)
    if "structlog" in sys.modules:
        _apply_pending()


def _apply_pending() -> None:
    if _Pending.settings is None:
        return
    import structlog  # noqa: PLC0415  (see the module docstring)

    fmt, verbosity, quiet, stream = _Pending.settings
    _Pending.settings = None
    if quiet:
        level = logging.WARNING
    elif verbosity > 0:
        level = logging.DEBUG
    else:
        level = logging.INFO
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    # Machines (json) and -v keep every field as it is.
    human: list[structlog.typing.Processor] = [humanize] if fmt == "console" and not verbosity \
        else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if fmt == "json" else structlog.processors.
            StackInfoRenderer(),
            *human,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Logs go to stderr so that stdout stays clean for reports (`plan --format json`).
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, LineStream(stream))),
        cache_logger_on_first_use=False,
    )


class _DeferredLogger:
    """structlog's logger for `name`, fetched (and the pending configuration applied) at the
    first call; it reads the configuration of the moment on every call, as structlog's own
    lazy proxy does."""

    def __init__(self, name: str):
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        _apply_pending()
        if self._logger is None:
            import structlog  # noqa: PLC0415  (see the module docstring)

            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, attr)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return cast("structlog.typing.FilteringBoundLogger", _DeferredLogger(name))
