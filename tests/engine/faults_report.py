"""The summary table of the fault-injection suite (tests/engine/test_faults.py).

A `FaultReport` is registered as a pytest plugin object at run time, by a session fixture,
so its `pytest_terminal_summary` prints one table at the end of the session without
touching tests/conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

PLUGIN_NAME = "containerd-migrate-fault-report"
HEADERS = ("scenario", "engine", "outcome", "images checked", "seconds")


@dataclass
class Row:
    scenario: str
    engine: str
    outcome: str
    images: str
    seconds: float

    def cells(self) -> tuple[str, ...]:
        return (self.scenario, self.engine, self.outcome, self.images,
                f"{self.seconds:.1f}")


@dataclass
class FaultReport:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def render(self) -> str:
        table = [HEADERS, *(row.cells() for row in self.rows)]
        widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
                 .rstrip() for line in table]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.rows:
            return
        terminalreporter.write_sep("=", "fault-injection scenarios")
        terminalreporter.write_line(self.render())


def registered(config: pytest.Config) -> FaultReport:
    """The session's report, registered as a plugin on first use."""
    plugin = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(plugin, FaultReport):
        return plugin
    report = FaultReport()
    config.pluginmanager.register(report, PLUGIN_NAME)
    return report
