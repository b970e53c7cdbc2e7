"""One writer per spend log: an exclusive lock on a `<log>.lock` file beside it, held
by the gate (or `python -m gate compact`) for as long as it writes the log."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class SpendLogBusy(Exception):
    """Another process holds the spend log's lock: two writers would fork the books."""


def lock_log(path: Path) -> int | None:
    """Take the log's lock (a `<log>.lock` file beside it, so it survives the log being
    moved); returns its descriptor, to be closed to release it. Raises SpendLogBusy when
    another gate (or `python -m gate compact`) holds it; None when no lock file can be
    made (a read-only folder: writing the log will fail and say so anyway)."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        log.warning("spend log: no lock file %s: %s", lock_path.name, exc.strerror or exc)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpendLogBusy(
            f"another process is writing {path} (it holds {lock_path.name}); "
            "two writers would fork the books"
        ) from None
    return fd
