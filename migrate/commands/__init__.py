"""Commands as plain functions, one module each: usable from click, tests, or another program.

The names are imported on first use (PEP 562): a `plan` must not pay at start-up for the
phases, journal and archive code that only `run` needs (measured: about 0.2 s of a 1.5 s
plan on 1,000 images).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrate.commands.cleanup import cleanup
    from migrate.commands.context import Console, GlobalOptions, PlainConsole
    from migrate.commands.export import export
    from migrate.commands.plan import PlanArgs, plan
    from migrate.commands.rollback import RollbackArgs, rollback
    from migrate.commands.run import RunArgs, run
    from migrate.commands.status import status
    from migrate.commands.verify import verify_command as verify
    from migrate.preflight.facts import CONTAINERS_POLICIES

# public name -> (module, name in it)
_HOMES: dict[str, tuple[str, str]] = {
    "cleanup": ("migrate.commands.cleanup", "cleanup"),
    "Console": ("migrate.commands.context", "Console"),
    "GlobalOptions": ("migrate.commands.context", "GlobalOptions"),
    "PlainConsole": ("migrate.commands.context", "PlainConsole"),
    "export": ("migrate.commands.export", "export"),
    "PlanArgs": ("migrate.commands.plan", "PlanArgs"),
    "plan": ("migrate.commands.plan", "plan"),
    "RollbackArgs": ("migrate.commands.rollback", "RollbackArgs"),
    "rollback": ("migrate.commands.rollback", "rollback"),
    "RunArgs": ("migrate.commands.run", "RunArgs"),
    "run": ("migrate.commands.run", "run"),
    "status": ("migrate.commands.status", "status"),
    "verify": ("migrate.commands.verify", "verify_command"),
    "CONTAINERS_POLICIES": ("migrate.preflight.facts", "CONTAINERS_POLICIES"),
}

__all__ = [
    "CONTAINERS_POLICIES", "Console", "GlobalOptions", "PlainConsole", "PlanArgs",
    "RollbackArgs", "RunArgs", "cleanup", "export", "plan", "rollback", "run", "status",
    "verify",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _HOMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
