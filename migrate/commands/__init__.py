"""Commands as plain functions, one module each: usable from click, tests, or another program.

Each command lives in the module of its name (`from migrate.commands.run import run`).
This package names only the shared types, imported on first use (PEP 562), so that a
`plan` does not pay at start-up for the phases, journal and archive code that only `run`
needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrate.commands.context import Console, GlobalOptions, PlainConsole
    from migrate.commands.plan import PlanArgs
    from migrate.commands.rehearse import RehearseArgs
    from migrate.commands.rollback import RollbackArgs
    from migrate.commands.run import RunArgs
    from migrate.preflight.facts import CONTAINERS_POLICIES

# public name -> its module
_HOMES: dict[str, str] = {
    "Console": "migrate.commands.context",
    "GlobalOptions": "migrate.commands.context",
    "PlainConsole": "migrate.commands.context",
    "PlanArgs": "migrate.commands.plan",
    "RehearseArgs": "migrate.commands.rehearse",
    "RollbackArgs": "migrate.commands.rollback",
    "RunArgs": "migrate.commands.run",
    "CONTAINERS_POLICIES": "migrate.preflight.facts",
}

__all__ = [
    "CONTAINERS_POLICIES", "Console", "GlobalOptions", "PlainConsole", "PlanArgs",
    "RehearseArgs", "RollbackArgs", "RunArgs",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
