"""Reading the spend log from a byte offset, in bounded batches, for the sinks.

The JSONL log is the sinks' backlog: a sink remembers how far it has copied (a byte
offset just past a whole line) and reads on from there. Only whole lines are taken —
a line still being written, or torn by a crash, waits or is skipped, never cut. A log
is known by a digest of its first line, so a rotated or replaced log is a new log.
Pure file reading: no asyncio, no database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from gate.books.lines import event_of

log = logging.getLogger(__name__)

HEAD_BYTES = 64 * 1024  # a first line longer than this is not a gate log
BATCH_BYTES = 4 * 1024 * 1024  # read at most this much per batch
REQUEST_MARK = b'"event":"request"'  # as the gate writes it (compact JSON)


@dataclass(frozen=True, slots=True)
class LogFile:
    log_id: str  # sha256 of the first line, 32 hex digits
    dev: int
    ino: int
    size: int


@dataclass(frozen=True, slots=True)
class Batch:
    lines: list[bytes]  # whole lines, newline dropped, in file order
    end: int  # offset just past the last line taken (or skipped)
    requests: int  # how many of `lines` look like request lines


def identify(path: Path) -> LogFile | None:
    """The log's identity and size; None while it is missing or has no whole first line."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    with f:
        info = os.fstat(f.fileno())
        head = f.read(HEAD_BYTES)
    cut = head.find(b"\n")
    if cut < 0:
        return None
    digest = hashlib.sha256(head[:cut]).hexdigest()[:32]
    return LogFile(digest, info.st_dev, info.st_ino, info.st_size)


def read_batch(path: Path, offset: int, max_requests: int, max_bytes: int = BATCH_BYTES) -> Batch:
    """Whole lines from `offset` on, until `max_requests` request lines or `max_bytes`."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(max_bytes)
        if data and b"\n" not in data and len(data) == max_bytes:
            return Batch([], _skip_long_line(f, offset), 0)
    lines: list[bytes] = []
    requests = start = 0
    while requests < max_requests and (cut := data.find(b"\n", start)) >= 0:
        line = data[start:cut]
        start = cut + 1
        if line.strip():
            lines.append(line)
            requests += REQUEST_MARK in line
    return Batch(lines, offset + start, requests)


def _skip_long_line(f: Any, offset: int) -> int:
    """A line longer than a whole batch cannot be a gate line: step past it."""
    position = offset
    f.seek(offset)
    while chunk := f.read(BATCH_BYTES):
        cut = chunk.find(b"\n")
        if cut >= 0:
            log.warning("spend log: skipping an over-long line at byte %d", offset)
            return position + cut + 1
        position += len(chunk)
    return offset  # not ended yet: wait for the rest


def request_record(line: bytes) -> dict[str, Any] | None:
    """The line as a dict when it is a request line; None for other events and junk."""
    if REQUEST_MARK not in line:
        return None
    try:
        record = json.loads(line, parse_float=Decimal)
    except ValueError:
        return None
    if not isinstance(record, dict) or event_of(record) != "request":
        return None
    return record


def request_lines(path: Path, max_requests: int) -> Iterator[Batch]:
    """The whole log from the start, batch by batch (for a backfill)."""
    offset = 0
    while True:
        batch = read_batch(path, offset, max_requests)
        if batch.end == offset:
            return
        yield batch
        offset = batch.end
