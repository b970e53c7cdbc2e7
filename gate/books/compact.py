"""`python -m gate compact`: cut the spend log at its last snapshot.

The lines before the snapshot go to an archive file beside the log; the log keeps the
snapshot and what follows, which is all a start-up replays. Archive plus log hold every
line exactly once, so `gate report --log ARCHIVE --log LOG` sums the whole history. Runs
only while no gate writes the log (it takes the log's lock), and never rewrites a line:
the archive is written and flushed first, then the shortened log replaces the old one in
a single rename.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from gate.books.loglock import lock_log
from gate.books.spendlog import last_snapshot_offset

COPY_CHUNK = 1 << 20


class CompactError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Compacted:
    archive: Path
    archived_bytes: int
    kept_bytes: int


def compact(path: Path, now: datetime | None = None) -> Compacted:
    lock = lock_log(path)  # SpendLogBusy while a gate runs on this log
    try:
        if not path.exists():
            raise CompactError(f"{path}: no such spend log")
        cut = last_snapshot_offset(path)
        if cut == 0:
            raise CompactError(
                f"{path}: nothing to cut: no snapshot past the first line (the gate writes one "
                "every 10,000 lines and at a start-up that replayed a long log)"
            )
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        archive = path.with_name(f"{path.name}.{stamp}")
        fresh = path.with_name(f".{path.name}.compacting")
        size = path.stat().st_size
        with path.open("rb") as src:
            _copy(src, archive, "xb", cut)  # refuses to overwrite an earlier archive
            _copy(src, fresh, "wb", size - cut)
        os.replace(fresh, path)
        _sync_dir(path.parent)
        return Compacted(archive, cut, size - cut)
    finally:
        if lock is not None:
            os.close(lock)


def _copy(src: BinaryIO, dest: Path, mode: str, count: int) -> None:
    with dest.open(mode) as out:
        left = count
        while left > 0:
            chunk = src.read(min(COPY_CHUNK, left))
            if not chunk:
                raise CompactError("the log changed while it was being compacted")
            out.write(chunk)
            left -= len(chunk)
        out.flush()
        os.fsync(out.fileno())


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
