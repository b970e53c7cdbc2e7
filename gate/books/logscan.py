"""Reading the spend log back: its records in order (`read_records`, for replay,
reports, rebuilds and compaction), and its end read backwards at start-up: where replay
starts (the last whole snapshot line) and a last line a crash cut short. Plain file
I/O, no asyncio; start-up costs the tail of the log, not all of it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from gate.books.lines import event_of

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20

# Snapshot lines start with exactly these bytes (the ledger writes "event" first), so
# start-up can find the last one by reading the file backwards.
SNAPSHOT_MARK = b'{"event":"snapshot"'


def last_snapshot_offset(path: Path) -> int:
    """Where the last whole snapshot line starts (0 when there is none): replay starts
    there, so start-up reads the tail of the log, not all of it. A line that only begins
    like a snapshot (torn by a crash while it was written) is passed over for the one
    before it: starting from it would drop every line before it from the books."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return 0
    with f:
        for offset in _snapshot_starts(f):
            if _whole_snapshot(f, offset):
                return offset
            log.warning("spend log: passing over a torn snapshot at byte %d", offset)
    return 0


def _snapshot_starts(f: BinaryIO) -> Iterator[int]:
    """The offsets of lines beginning with the snapshot marker, last first."""
    end = f.seek(0, os.SEEK_END)
    needle = b"\n" + SNAPSHOT_MARK
    while end > 0:
        start = max(0, end - READ_CHUNK)
        f.seek(start)
        block = f.read(end - start + len(needle))  # overlap the next block's head
        limit = len(block)
        while (found := block.rfind(needle, 0, limit)) >= 0:
            limit = found + len(needle) - 1
            if start + found < end:  # one in the overlap was seen with the next block
                yield start + found + 1
        if start == 0 and block.startswith(SNAPSHOT_MARK):
            yield 0
        end = start


def _whole_snapshot(f: BinaryIO, offset: int) -> bool:
    """True when the line at `offset` is a complete snapshot object."""
    f.seek(offset)
    parts: list[bytes] = []
    while chunk := f.read(READ_CHUNK):
        cut = chunk.find(b"\n")
        if cut >= 0:
            parts.append(chunk[:cut])
            break
        parts.append(chunk)
    try:
        record = json.loads(b"".join(parts))
    except ValueError:
        return False
    return (
        isinstance(record, dict)
        and event_of(record) == "snapshot"
        and isinstance(record.get("agents"), dict)
        and isinstance(record.get("holds", {}), dict)
    )


def set_aside_torn_tail(path: Path) -> int:
    """Move a last line a crash cut short (no newline, does not parse) to `<log>.torn`
    and cut it from the log, so the log holds whole lines only and nothing is lost.
    Returns the bytes moved. Only for the log's one writer (it holds the lock)."""
    try:
        f = path.open("r+b")
    except FileNotFoundError:
        return 0
    with f:
        size = f.seek(0, os.SEEK_END)
        cut = size
        while cut > 0:
            start = max(0, cut - READ_CHUNK)
            f.seek(start)
            found = f.read(cut - start).rfind(b"\n")
            cut = start if found < 0 else start + found + 1
            if found >= 0:
                break
        if cut == size:
            return 0
        f.seek(cut)
        tail = f.read()
        try:
            json.loads(tail)
            return 0  # whole, only its newline missing: the next write starts a fresh line
        except ValueError:
            pass
        torn = path.with_name(path.name + ".torn")
        with torn.open("ab") as out:
            out.write(tail + b"\n")
            out.flush()
            os.fsync(out.fileno())
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    log.warning(
        "spend log: a last line cut short by a crash (%d bytes) moved to %s", len(tail), torn.name
    )
    return len(tail)


def read_records(path: Path, offset: int = 0) -> Iterator[dict[str, Any]]:
    """Every whole JSON object in the log from `offset` on, in order; torn or foreign
    lines are skipped with a warning. Numbers with a fraction come back as Decimal.
    Reads no further than the file's size when opened: a device in the log's place
    (`/dev/full`, `/dev/zero`) would otherwise be read forever."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        left = os.fstat(f.fileno()).st_size - f.seek(offset)
        tail = b""
        number = 0
        while left > 0 and (chunk := f.read(min(READ_CHUNK, left))):
            left -= len(chunk)
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for line in lines:
                number += 1
                record = _decode(line, number)
                if record is not None:
                    yield record
        if tail.strip():
            # A last line without its newline: whole if it parses (the writer starts
            # the next line on a fresh one either way), torn otherwise.
            number += 1
            record = _decode(tail, number)
            if record is not None:
                yield record


def _decode(line: bytes, number: int) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        record = json.loads(line, parse_float=Decimal)
    except ValueError:
        log.warning("spend log: skipping unreadable line %d", number)
        return None
    if not isinstance(record, dict):
        log.warning("spend log: skipping line %d, not an object", number)
        return None
    return record


def ends_mid_line(path: Path) -> bool:
    """True when the file's last byte is not a newline (a torn last line)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False
