"""What a `containerd-migrate rehearse` found and measured, as one typed report (pure).

`rehearse` writes it (`<state-dir>/reports/rehearsal.json`, and `--format json`), `status`
shows the last one apart from the migration, and `plan` (through `HostFacts.rehearsal`)
takes its figures instead of defaults when it is usable: it succeeded, and the host's
images are still the ones it moved (`images_fingerprint`). The JSON keys of the first
reports (schema 1, written before this model) keep their names and meaning, so those
files still read, and the Ansible role reads both.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from migrate.models import Frozen, Inventory

# `<state-dir>/reports/<REPORT_NAME>`: the last rehearsal that ran to its end.
REPORT_NAME = "rehearsal.json"
# 1: the reports written before this model (no `schema_version` key); 2 adds
# `schema_version`, `hostname`, `images_fingerprint`, `blockers` in every report and
# `figures.staged_window_seconds`, `path`.
REHEARSAL_SCHEMA_VERSION = 2
# How the images reached the throwaway engine: saved and loaded, as `run` moves them, or
# streamed into its containerd store, as `stage` then `run` (`rehearse --staged`).
MovePath = Literal["export", "staged"]
# How big a report may be when read back: a few KiB, failures included.
_MAX_REPORT_BYTES = 16 << 20


class _Tolerant(BaseModel):
    """Frozen, and unknown keys ignored: a report of a later version still reads."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)


class RehearsalFigures(_Tolerant):
    """Seconds and bytes measured on this host."""

    # The throwaway engine's start: a stand-in for the restart.
    engine_start_seconds: float = 0.0
    archive_bytes: int = 0
    save_seconds: float = 0.0
    load_seconds: float = 0.0
    load_mbps: float = 0.0
    verify_seconds: float = 0.0
    create_seconds: float = 0.0
    # A `run`: the containers stopped (plan's bound), the restart, the load, the
    # verification, the containers created; `run_seconds` adds the save before it.
    window_seconds: float = 0.0
    run_seconds: float = 0.0
    # A `stage` before the window, then `run`: the same window without the load.
    # None in schema 1 reports.
    staged_window_seconds: float | None = None

    @property
    def save_mbps(self) -> float:
        return self.archive_bytes / 1e6 / self.save_seconds if self.save_seconds > 0 else 0.0


class RehearsalReport(_Tolerant):
    schema_version: int = 1
    ok: bool
    exit_code: int
    finished_at: datetime
    hostname: str = ""
    engine_version: str = ""
    dockerd: str = ""
    binaries: dict[str, str] = {}
    path: MovePath = "export"
    images: int = 0
    containers: int = 0
    containers_created: int = 0
    # With `--start`: how many ran; None without it.
    containers_started: int | None = None
    # In the words, and with the exit codes, of `run`.
    failures: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    # Why it could not run (exit 3); then nothing was measured and `figures` is None.
    blockers: tuple[str, ...] = ()
    # The rehearsal directory when kept (`--keep`), else None.
    dir: str | None = None
    leftovers_removed: tuple[str, ...] = ()
    # `images_fingerprint` of the inventory it moved; None in schema 1 reports.
    images_fingerprint: str | None = None
    figures: RehearsalFigures | None = None

    def when(self) -> str:
        return self.finished_at.strftime("%Y-%m-%d %H:%M:%S UTC")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


class RehearsalUse(Frozen):
    """Whether a plan took the last rehearsal's figures, and why not."""

    finished_at: datetime
    used: bool
    reason: str

    def text(self) -> str:
        return ("used: " if self.used else "ignored: ") + self.reason


def images_fingerprint(inventory: Inventory) -> str:
    """Names the set of images a rehearsal moved: their IDs, in any order."""
    digest = hashlib.sha256("\n".join(sorted(image.id for image in inventory.images)).encode())
    return f"sha256:{digest.hexdigest()}"


def measured_by(report: RehearsalReport) -> str:
    """How a figure taken from a rehearsal is labelled."""
    return f"measured by rehearsal {report.when()}"


def rehearsal_use(report: RehearsalReport | None, inventory: Inventory) -> RehearsalUse | None:
    """Whether a plan of `inventory` may stand on `report`'s figures (pure); None: there
    was no rehearsal."""
    if report is None:
        return None
    when = report.when()
    if not report.ok or report.figures is None:
        reason = (f"the rehearsal of {when} failed (exit {report.exit_code}); its figures "
                  "are not those of a migration that works")
    elif report.images_fingerprint is None:
        reason = (f"the rehearsal of {when} does not record which images it moved (an older "
                  "version); run `containerd-migrate rehearse` again")
    elif report.images_fingerprint != images_fingerprint(inventory):
        reason = (f"the images changed since the rehearsal of {when}; run "
                  "`containerd-migrate rehearse` again for figures of these images")
    else:
        return RehearsalUse(finished_at=report.finished_at, used=True,
                            reason=measured_by(report))
    return RehearsalUse(finished_at=report.finished_at, used=False, reason=reason)


def read_report(path: Path) -> RehearsalReport | None:
    """The report at `path`; None when there is none or it cannot be read."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_REPORT_BYTES + 1)
    except OSError:
        return None
    if len(raw) > _MAX_REPORT_BYTES:
        return None
    try:
        return RehearsalReport.model_validate_json(raw)
    except ValidationError:
        return None
