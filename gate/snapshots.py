"""Finding where start-up replays from: the spend log's last whole snapshot line.

Read backwards from the end, so start-up costs the tail of the log, not all of it. Pure
file reading, no asyncio.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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
        and record.get("event") == "snapshot"
        and isinstance(record.get("agents"), dict)
        and isinstance(record.get("holds", {}), dict)
    )
