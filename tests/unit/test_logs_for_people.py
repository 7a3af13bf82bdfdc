"""Logs and progress meant for people (issue 12, item 12): pure parts, no terminal."""

from __future__ import annotations

import io
import sys

import pytest
from tqdm import tqdm

from migrate.support.logconfig import LineStream, humanize, write_logs_through
from migrate.support.progress import (
    LoggedProgress,
    bar_settings,
    byte_bar,
    set_enabled,
    sized_terminal,
)

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


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_a_sized_terminal_progress_is_a_log_line_every_few_seconds() -> None:
    clock, lines = _Clock(), []
    progress = LoggedProgress("export", 100 * 10**6, every=5, clock=clock,
                              emit=lambda event, **fields: lines.append((event, fields)))
    clock.now += 1
    progress.advance(10 * 10**6)
    assert lines == []  # not before `every` seconds
    clock.now += 4
    progress.describe("batch 2/3")
    progress.advance(15 * 10**6)
    assert lines == [("export: progress", {"bytes_done": 25 * 10**6, "rate": "5 MB/s",
                                           "bytes_total": 100 * 10**6, "percent": 25,
                                           "eta": "15 s", "at": "batch 2/3"})]
    clock.now += 1
    progress.advance(10**6)
    assert len(lines) == 1  # the next one 5 s after the last
    clock.now += 200
    progress.advance(10**6)
    assert lines[-1][1]["percent"] == 27 and lines[-1][1]["eta"].endswith(" s")
    unknown: list[dict[str, object]] = []
    no_total = LoggedProgress("stage", None, every=5, clock=clock,
                              emit=lambda event, **fields: unknown.append(fields))
    clock.now += 6
    no_total.advance(3 * 10**6)
    assert set(unknown[0]) == {"bytes_done", "rate"}


class _Pty(io.StringIO):
    """A terminal that reports no size (a pty under Ansible or `script`)."""

    def isatty(self) -> bool:
        return True


def test_a_bar_needs_a_terminal_with_a_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not sized_terminal(io.StringIO())
    assert not sized_terminal(_Pty())  # no file descriptor: no size
    set_enabled(True)  # an earlier CLI test run with -q switches progress off process-wide
    monkeypatch.setattr(sys, "stderr", _Pty())
    with byte_bar("export", 10**6) as progress:
        assert isinstance(progress, LoggedProgress)
    set_enabled(False)
    try:
        with byte_bar("export", 10**6) as progress:
            assert not isinstance(progress, LoggedProgress)  # -q: nothing at all
    finally:
        set_enabled(True)


def test_log_lines_go_through_the_bar_whole_while_one_is_drawn() -> None:
    stream = io.StringIO()
    seen: list[str] = []
    logs = LineStream(stream)
    write_logs_through(lambda line, _stream: seen.append(line))
    try:
        logs.write("first part")
        assert seen == []  # half a line is held back, never split by a redraw
        logs.write(" of a line")
        logs.write("\n")
        logs.write("two\nthree\n")
    finally:
        write_logs_through(None)
    assert seen == ["first part of a line", "two", "three"] and stream.getvalue() == ""
    logs.write("straight\n")
    assert stream.getvalue() == "straight\n"


def test_tqdm_write_keeps_a_log_line_off_the_bar_line() -> None:
    stream = io.StringIO()
    bar = tqdm(total=10, file=stream, delay=0, mininterval=0)
    bar.update(3)
    write_logs_through(lambda line, out: tqdm.write(line, file=out))
    try:
        LineStream(stream).write("archive written\n")
    finally:
        write_logs_through(None)
        bar.close()
    lines = stream.getvalue().replace("\r", "\n").split("\n")
    assert "archive written" in lines  # a line of its own, not glued to a bar
