"""A process is its pid plus its start time: read from /proc, waited for and stopped only
while both still match."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from migrate.host.processes import command_line, process_start_time, stop_process

pytestmark = pytest.mark.unit


def test_start_time_survives_a_command_name_with_spaces_and_parentheses(
        tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    fields = ["S", *map(str, range(4, 22)), "123456", "0"]
    (tmp_path / "42" / "stat").write_text(f"42 (my (odd) name) {' '.join(fields)}\n")
    assert process_start_time(42, str(tmp_path)) == 123456
    assert process_start_time(43, str(tmp_path)) is None


def test_a_process_is_stopped_only_while_it_is_the_one_recorded() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start_time(child.pid)
        assert started is not None
        assert stop_process(child.pid, started + 1) is False
        assert child.poll() is None
        assert stop_process(child.pid, started, timeout=10) is True
    finally:
        child.kill()
        child.wait()


def test_a_zombie_has_no_start_time_nor_command_line(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    fields = ["Z", *map(str, range(4, 22)), "99", "0"]
    (tmp_path / "7" / "stat").write_text(f"7 (ctr) {' '.join(fields)}\n")
    (tmp_path / "7" / "cmdline").write_bytes(b"ctr\0images\0import\0-\0")
    assert process_start_time(7, str(tmp_path)) is None
    assert command_line(7, str(tmp_path)) is None
