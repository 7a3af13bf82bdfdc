"""Shared vocabulary of the pre-flight checks: severities, the Check result and the Ctx
every check function reads. The registry and the daemon/engine checks live in
`migrate.checks`, the disk/container/volume/image checks in `migrate.checks_host`;
`migrate.checks` re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from migrate.daemon_config import DaemonConfigState
from migrate.estimate import Estimate
from migrate.launch import DaemonLaunch
from migrate.models import Frozen, Inventory

if TYPE_CHECKING:  # plan.py imports the checks at runtime
    from migrate.plan import HostFacts, PlanOptions


class Severity(StrEnum):
    BLOCKER = "blocker"
    WARNING = "warning"
    INFO = "info"


BLOCKER, WARNING, INFO = Severity.BLOCKER, Severity.WARNING, Severity.INFO


class Check(Frozen):
    id: str
    severity: Severity
    message: str
    hint: str = ""
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ctx:
    facts: HostFacts
    options: PlanOptions
    estimate: Estimate

    @property
    def inv(self) -> Inventory:
        return self.facts.inventory

    @property
    def config(self) -> DaemonConfigState:
        return self.facts.daemon_config

    @property
    def launch(self) -> DaemonLaunch:
        return self.facts.launch


def _check(
    id_: str, severity: Severity, message: str, hint: str = "", details: Iterable[str] = ()
) -> Check:
    return Check(id=id_, severity=severity, message=message, hint=hint, details=tuple(details))
