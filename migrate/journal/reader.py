"""Reading the rollback journal: parsing `journal.jsonl` and the read-only `replay`.

Every record is written as one line ending in a newline, so only an unterminated last
line can be a write that never completed (torn): it is tolerated and reported, and the
writer cuts it off. Any complete line that does not parse, or goes back in sequence, is
damage: the journal is refused (exit 7) and never rewritten, since cutting it would
throw away the undo records a rollback needs. The writer uses the same parser.
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


def damaged_hint(path: Path, intact_lines: int) -> str:
    """A recovery that works: roll back from the intact records before the damage."""
    if intact_lines == 0:
        return ("the journal is damaged and nothing before the damage is readable; keep "
                f"{path} for inspection, restore daemon.json from a backup if the migration "
                "had switched it, and move the journal aside to start from scratch")
    return (f"the journal is damaged; the {intact_lines} line(s) before it are intact and "
            "hold the undo records written until then; keep a copy and roll back from "
            f"them: `cp {path} {path}.damaged && head -n {intact_lines} {path}.damaged > "
            f"{path}`, then `containerd-migrate rollback --yes`")


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
            # A complete line: written whole and fsynced, so not torn but damaged.
            raise StateError(f"journal {path} line {lineno} is unreadable: {error}",
                             hint=damaged_hint(path, index)) from error
        if records and record.seq <= records[-1].seq:
            raise StateError(f"journal {path} line {lineno} goes back in sequence",
                             hint=damaged_hint(path, index))
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
        raise StateError(f"journal {path} is not a regular file",
                         hint="replace it with the real journal or use --state-dir")
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
