"""structlog set-up: console rendering for humans, one JSON object per line for machines."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

from migrate.support.sizes import human_bytes

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


def configure_logging(fmt: LogFormat = "console", verbosity: int = 0, quiet: bool = False) -> None:
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
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
