"""Reading the rollback journal: parsing `journal.jsonl` and the read-only `replay`.

A torn last record (a write that never completed) is tolerated and reported; any other
unreadable or out-of-sequence line is damage. The writer uses the same parser when it
opens the file for writing.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from migrate.errors import StateError
from migrate.journal.records import (
    JOURNAL_VERSION,
    RECORD_ADAPTER,
    JournalState,
    Record,
    compute_state,
)

_DAMAGED_HINT = (
    "the journal is damaged: keep a copy of it, then run `containerd-migrate rollback "
    "--force`, or move it aside to start from scratch"
)


class ParsedJournal(NamedTuple):
    records: list[Record]
    good_length: int  # bytes up to the end of the last intact record
    torn_tail: bool


class _Unparseable(Exception):
    pass


def _decode(line: bytes, path: Path, lineno: int) -> Record:
    try:
        raw = json.loads(line)
    except ValueError as error:  # also covers UnicodeDecodeError
        raise _Unparseable(str(error)) from error
    if not isinstance(raw, dict):
        raise _Unparseable("not a JSON object")
    version = raw.get("journal_version")
    if isinstance(version, int) and version > JOURNAL_VERSION:
        raise StateError(
            f"journal {path} line {lineno} has journal version {version}; this "
            f"containerd-migrate reads version {JOURNAL_VERSION} or older",
            hint="resume or roll back with the newer containerd-migrate that wrote it",
        )
    try:
        return RECORD_ADAPTER.validate_python(raw)
    except ValidationError as error:
        raise _Unparseable(f"{error.error_count()} invalid field(s)") from error


def parse_journal(data: bytes, path: Path) -> ParsedJournal:
    lines = data.split(b"\n")
    # Everything after the last newline is a record whose write never completed.
    fragment = lines.pop()
    records: list[Record] = []
    offset = 0
    for index, line in enumerate(lines):
        lineno = index + 1
        try:
            record = _decode(line, path, lineno)
        except _Unparseable as error:
            if index == len(lines) - 1 and not fragment:
                return ParsedJournal(records, offset, torn_tail=True)
            raise StateError(f"journal {path} line {lineno} is unreadable: {error}",
                             hint=_DAMAGED_HINT) from error
        if records and record.seq <= records[-1].seq:
            raise StateError(f"journal {path} line {lineno} goes back in sequence",
                             hint=_DAMAGED_HINT)
        records.append(record)
        offset += len(line) + 1
    return ParsedJournal(records, offset, torn_tail=bool(fragment))


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise StateError(f"journal {path} is a symlink; refusing to follow it",
                             hint="replace it with the real file or use --state-dir") from error
        raise


def read_all(fd: int, path: Path) -> bytes:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise StateError(f"journal {path} is not a regular file", hint=_DAMAGED_HINT)
    data = b""
    while chunk := os.pread(fd, 1 << 20, len(data)):
        data += chunk
    return data


def replay(path: str | os.PathLike[str]) -> JournalState:
    """Read-only view of a journal; a missing file is an empty journal."""
    journal = Path(path)
    try:
        fd = open_nofollow(journal, os.O_RDONLY)
    except FileNotFoundError:
        return JournalState()
    try:
        parsed = parse_journal(read_all(fd, journal), journal)
    finally:
        os.close(fd)
    return compute_state(parsed.records, parsed.torn_tail)
