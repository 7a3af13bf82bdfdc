"""Commands as plain functions, one module each: usable from click, tests, or another program."""

from migrate.commands.cleanup import cleanup
from migrate.commands.context import Console, GlobalOptions, PlainConsole
from migrate.commands.export import export
from migrate.commands.plan import PlanArgs, plan
from migrate.commands.rollback import RollbackArgs, rollback
from migrate.commands.run import RunArgs, run
from migrate.commands.stage import stage
from migrate.commands.status import status
from migrate.commands.verify import verify_command as verify
from migrate.preflight.facts import CONTAINERS_POLICIES

__all__ = [
    "CONTAINERS_POLICIES", "Console", "GlobalOptions", "PlainConsole", "PlanArgs",
    "RollbackArgs", "RunArgs",
    "cleanup", "export", "plan", "rollback", "run", "stage", "status", "verify",
]
