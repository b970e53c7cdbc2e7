"""The append-only JSONL spend log: one writer, whole lines, group commit.

Every line is handed to `append()`, which never blocks; one writer task takes whatever
has queued up and writes it with a single `write()` on a file opened once in append
mode. Lines therefore never interleave and a burst of requests costs one system call,
not one each. With `spend_log_fsync` the write and an fsync run in a thread (aiofiles);
without it the page-cache append is done on the loop, which measured far cheaper than
handing each batch to a thread.

A line that matters before money is spent (a hold) is appended with `durable=True`
and awaited: it either reaches the file or is dropped and its future fails, so no
request goes upstream unrecorded. Every other line (a settlement, a refusal, an admin
change) is kept and retried until it is written. When a write fails the log reports
`error` until a later write succeeds; a line cut short by a failing disk is cut
away again, and one cut short by a crash is set aside at start (gate.books.logscan), so the
file holds whole lines only — where even that fails, a torn line is never glued onto
the next one: the next write starts on a fresh line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles
from aiofiles.threadpool.binary import AsyncFileIO

from gate.books.loglock import lock_log
from gate.books.logscan import SNAPSHOT_MARK as SNAPSHOT_MARK  # where start-up replays from
from gate.books.logscan import ends_mid_line, set_aside_torn_tail
from gate.books.logscan import last_snapshot_offset as last_snapshot_offset
from gate.core.jsonfmt import dumpb

log = logging.getLogger(__name__)

RETRY_MIN_SECONDS = 0.05
RETRY_MAX_SECONDS = 1.0


class SpendLogError(Exception):
    """A durable line could not be written."""


def encode_line(record: Mapping[str, Any]) -> bytes:
    return dumpb(record, newline=True)


@dataclass(slots=True)
class _Entry:
    line: bytes
    future: asyncio.Future[None] | None  # set for durable lines only


class SpendLog:
    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.error: str | None = None
        self.lines_written = 0
        self.write_failures = 0
        # Told the error when writing starts failing, and None when it works again.
        self.observers: list[Callable[[str | None], None]] = []
        self._listeners: list[Callable[[], None]] = []  # told after every write
        self._file: AsyncFileIO | None = None
        self._pending: list[_Entry] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._fresh_line_needed = False
        self._writing = False
        self._writing_batch: list[_Entry] = []  # taken by a write not yet finished
        self._lock_fd: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False  # close() has reported what was left: nothing writes now

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_log(self.path)
        try:
            set_aside_torn_tail(self.path)
        except OSError as exc:  # the next write starts on a fresh line instead
            log.warning("spend log: cannot set a torn last line aside: %s", exc.strerror or exc)
        try:
            await self._open()
        except OSError as exc:
            self._fail(exc)
        self._task = asyncio.create_task(self._writer(), name="spend-log-writer")

    async def close(self) -> None:
        """Write out everything queued (trying for a while on a failing disk), then close."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, timeout=10)
        self._report_unwritten()
        self._closed = True
        await self._close_file()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def _report_unwritten(self) -> None:
        """The writer gave up at shutdown (a failing disk): never drop its lines silently.
        A settlement or admin line goes to stderr as the JSON line it is (no secret is
        ever in one), for an operator to append to the log; a durable line (a hold) is
        failed instead, as it would be on any failed write: its request never went on."""
        entries, self._pending = [*self._writing_batch, *self._pending], []
        self._writing_batch = []
        lines = [e.line for e in entries if e.future is None]
        for entry in entries:
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(SpendLogError("the spend log closed unwritten"))
        if not lines:
            return
        log.error(
            "spend log %s: %d lines could not be written at shutdown (%s); they follow on "
            "stderr, one JSON line each, to be appended to the log (a line whose request_id "
            "is already in the log was written after all)",
            self.path.name,
            len(lines),
            self.error or "the writer did not finish",
        )
        sys.stderr.write(b"".join(lines).decode())
        sys.stderr.flush()

    async def flush(self) -> None:
        """Wait until everything appended so far has been written, or writing fails."""
        while (self._pending or self._writing) and self.error is None:
            self._idle.clear()
            self._wakeup.set()
            await self._idle.wait()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every write (a sink that reads the log on); it must be
        cheap and must not raise."""
        self._listeners.append(callback)

    # -- appending --------------------------------------------------------------------

    def append(
        self, record: Mapping[str, Any], *, durable: bool = False
    ) -> asyncio.Future[None] | None:
        future = asyncio.get_running_loop().create_future() if durable else None
        self._pending.append(_Entry(encode_line(record), future))
        if self._closed:  # a late line (a settlement racing the stop): report it now
            self._report_unwritten()
            return future
        self._wakeup.set()
        return future

    # -- the writer -------------------------------------------------------------------

    async def _writer(self) -> None:
        delay = RETRY_MIN_SECONDS
        while True:
            if not self._pending:
                self._idle.set()
                if self._closing:
                    return
                await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                continue
            batch, self._pending = self._pending, []
            self._writing, self._writing_batch = True, batch
            left = await self._write(batch)
            self._writing, self._writing_batch = False, []
            for listener in self._listeners:
                listener()
            self._idle.set()
            if not left:
                delay = RETRY_MIN_SECONDS
                continue
            self._pending[:0] = left
            if self._closing and delay >= RETRY_MAX_SECONDS:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
            await self._reopen()

    async def _write(self, batch: list[_Entry]) -> list[_Entry]:
        """Write a batch; return the entries still to be retried."""
        prefix = b"\n" if self._fresh_line_needed else b""
        data = prefix + b"".join(e.line for e in batch)
        written = 0
        failure: OSError | None = None
        try:
            if self._file is None:
                raise OSError("spend log is not open")
            if self.fsync:
                # Durable mode: the disk flush blocks, so the write and the flush both
                # go off the loop (aiofiles' thread), where a thread hop costs nothing
                # next to the flush.
                while written < len(data):
                    n = await self._file.write(data[written:])
                    if not n:
                        raise OSError("short write")
                    written += n
                await asyncio.to_thread(os.fsync, self._file.fileno())
            else:
                # Default mode: an append to the page cache takes microseconds, and a
                # hop to a thread measured 18 % of the gate's CPU under load; write here.
                fd = self._file.fileno()
                while written < len(data):
                    n = os.write(fd, data[written:])
                    if not n:
                        raise OSError("short write")
                    written += n
        except OSError as exc:
            failure = exc
            written = self._cut_torn_tail(batch, len(prefix), written)
        return self._account(batch, len(prefix), written, failure)

    def _cut_torn_tail(self, batch: list[_Entry], prefix: int, written: int) -> int:
        """A write cut short (a full disk, a file size limit) leaves part of a line at the
        end of the file: truncate it away, so the file holds whole lines only, whatever
        is appended later. Returns how many of the batch's bytes stay in the file. Runs
        only when a write failed; the gate is the log's only writer (it holds the lock)."""
        whole = 0
        if written >= prefix:
            whole = prefix
            for entry in batch:
                if whole + len(entry.line) > written:
                    break
                whole += len(entry.line)
        if whole == written or self._file is None:
            return written
        try:
            fd = self._file.fileno()
            os.ftruncate(fd, os.fstat(fd).st_size - (written - whole))
        except OSError as exc:  # the next write starts on a fresh line instead
            log.warning("spend log: cannot cut a torn line: %s", exc.strerror or exc)
            return written
        return whole

    def _account(
        self, batch: list[_Entry], offset: int, written: int, failure: OSError | None
    ) -> list[_Entry]:
        if failure is None:
            self._fresh_line_needed = False
            self.lines_written += len(batch)
            if self.error is not None:
                log.warning("spend log: writing again after: %s", self.error)
                self.error = None
                self._tell(None)
            for entry in batch:
                if entry.future is not None and not entry.future.done():
                    entry.future.set_result(None)
            return []
        self._fail(failure)
        left: list[_Entry] = []
        torn = 0 < written < offset  # only part of the fresh-line prefix made it
        position = offset
        for entry in batch:
            end = position + len(entry.line)
            if end <= written:
                self.lines_written += 1
                if entry.future is not None and not entry.future.done():
                    entry.future.set_result(None)
            else:
                torn = torn or position < written
                if entry.future is None:
                    left.append(entry)
                elif not entry.future.done():
                    entry.future.set_exception(SpendLogError(self.error or "write failed"))
            position = end
        self._fresh_line_needed = torn or (offset > 0 and written < offset)
        return left

    def _fail(self, exc: OSError) -> None:
        message = exc.strerror or str(exc) or type(exc).__name__
        failing_now = self.error is None
        if failing_now:
            log.error("spend log %s cannot be written: %s", self.path.name, message)
        self.error = message
        self.write_failures += 1
        if failing_now:
            self._tell(message)

    def _tell(self, error: str | None) -> None:
        for observer in self.observers:
            try:
                observer(error)
            except Exception:
                log.exception("spend log observer failed")

    async def _open(self) -> None:
        self._fresh_line_needed = ends_mid_line(self.path)
        self._file = await aiofiles.open(self.path, "ab", buffering=0)

    async def _reopen(self) -> None:
        await self._close_file()
        try:
            await self._open()
        except OSError as exc:
            self._fail(exc)

    async def _close_file(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                await file.close()
            except OSError as exc:
                log.warning("spend log: closing failed: %s", exc.strerror or exc)
