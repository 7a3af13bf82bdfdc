"""Commands as plain functions: usable from click, tests, or another program."""

from migrate.commands.common import GlobalOptions
from migrate.commands.plan import PlanArgs, plan
from migrate.commands.rollback import RollbackArgs, cleanup, rollback
from migrate.commands.run import RunArgs, export, run
from migrate.commands.status import status
from migrate.commands.verify import verify_command as verify

__all__ = [
    "GlobalOptions", "PlanArgs", "RollbackArgs", "RunArgs",
    "cleanup", "export", "plan", "rollback", "run", "status", "verify",
]
