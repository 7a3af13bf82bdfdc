"""Logs and progress meant for people (issue 12, item 12): pure parts, no terminal."""

from __future__ import annotations

import pytest

from migrate.support.logconfig import humanize
from migrate.support.progress import bar_settings

pytestmark = pytest.mark.unit


def test_console_logs_show_human_sizes_and_drop_true_flags() -> None:
    event = humanize(None, "info", {"event": "archive written", "bytes": 12_491_776,
                                    "bytes_loaded": 0, "complete": True, "ok": False,
                                    "images": 3})
    assert event == {"event": "archive written", "bytes": "12.5 MB", "bytes_loaded": "0 B",
                     "ok": False, "images": 3}


def test_no_bar_when_there_is_nothing_to_transfer() -> None:
    assert bar_settings("export", 0) is None


def test_bar_eta_is_an_average_from_the_start_and_waits_a_second() -> None:
    settings = bar_settings("export", 10**9)
    assert settings is not None
    assert settings["smoothing"] == 0 and settings["delay"] >= 1
    assert settings["unit_divisor"] == 1000  # the same MB as the logs and reports
