"""The Postgres sink: every request line of the spend log, copied into a table.

The JSONL log stays the source of truth and is also the sink's backlog. The sink keeps
a cursor — a byte offset into the log, stored in `gate_sink_cursor` — and a background
task reads whole lines from there, inserts the request lines in batches
(`ON CONFLICT (request_id) DO NOTHING`) and moves the cursor in the same transaction.
The request path does nothing for it: the spend log's writer only sets an event.

While Postgres is away (down, read-only, refusing connections) the cursor stays where
it was, the lines wait on disk, and the task retries with backoff; when Postgres comes
back it catches up. Each row lands exactly once: the cursor moves only with the rows it
covers, and a batch replayed after a lost commit meets its own rows and adds nothing.
asyncpg is imported only when a sink is configured (the `postgres` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from gate.books.logtail import Batch, LogFile, identify, read_batch
from gate.books.spendlog import SpendLog
from gate.config import PostgresSinkConfig
from gate.core.clock import iso, utc_now
from gate.core.scrub import scrub
from gate.sinks.sql import CURSOR_GET, CURSOR_PUT, rows_of
from gate.sinks.tables import backfill as backfill  # `gate sink-backfill`
from gate.sinks.tables import ensure_schema, insert_rows

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Conn = asyncpg.Connection[Any] | PoolConnectionProxy[Any]

log = logging.getLogger(__name__)

RETRY_MIN_SECONDS = 0.5
IDLE_POLL_SECONDS = 5.0  # look at the log this often even without a wake-up
CLOSE_DRAIN_SECONDS = 5.0  # at shutdown, catching up is tried this long


def dsn_secrets(dsn: str) -> list[str]:
    """The DSN and its password, to scrub from anything the sink reports."""
    found = [dsn]
    with contextlib.suppress(ValueError):
        password = urlsplit(dsn).password or ""
        if len(password) >= 8:  # a shorter one would redact common words in logs
            found += [password, unquote(password)]
    return found


# -- the background copier -----------------------------------------------------------


@dataclass(slots=True)
class SinkState:
    rows_written: int = 0  # inserted by this process
    rows_present: int = 0  # already in the table (replayed after a lost commit, backfill)
    lines_skipped: int = 0  # request lines that could not become rows
    offset: int | None = None  # cursor: bytes of the log copied
    log_size: int = 0
    error: str | None = None
    failing_since: datetime | None = None
    last_commit: datetime | None = None


class PostgresSink:
    def __init__(self, cfg: PostgresSinkConfig, log_path: Path) -> None:
        self.cfg = cfg
        self.log_path = log_path
        self.state = SinkState()
        self._secrets = dsn_secrets(cfg.dsn)
        self._wakeup = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._log: LogFile | None = None
        self._schema_ready = False
        self._cursor_known = False  # state.offset is what the table says
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"postgres:{self.cfg.table}"

    def wake(self) -> None:
        """Called by the spend log's writer after each write: cheap, never blocks."""
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sink-{self.cfg.table}")

    async def close(self) -> None:
        """Stop the copier, try for a while to catch up, close the pool. What is not
        copied by then is copied at the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.state.error is None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_DRAIN_SECONDS):
                    while await self.step():
                        pass
        if self._pool is not None:
            try:
                async with asyncio.timeout(CLOSE_DRAIN_SECONDS):
                    await self._pool.close()
            except (TimeoutError, OSError):
                self._pool.terminate()

    def view(self) -> dict[str, Any]:
        s = self.state
        behind = max(0, s.log_size - s.offset) if s.offset is not None else None
        body: dict[str, Any] = {
            "sink": self.name,
            "status": "ok" if s.error is None else "failing",
            "rows_written": s.rows_written,
            "backlog_bytes": behind,
            "last_commit": iso(s.last_commit) if s.last_commit else None,
        }
        if s.error is not None and s.failing_since is not None:
            body.update(error=s.error, failing_since=iso(s.failing_since))
        return body

    async def _run(self) -> None:
        delay = RETRY_MIN_SECONDS
        while True:
            self._wakeup.clear()  # before reading: a write meanwhile wakes the next wait
            try:
                more = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Postgres away, read-only, a bug: keep the cursor, retry
                self._failed(exc)
                await self._fresh_connections()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.retry_max_seconds)
                continue
            delay = RETRY_MIN_SECONDS
            if not more:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_POLL_SECONDS):
                        await self._wakeup.wait()
                await asyncio.sleep(self.cfg.batch_delay_seconds)  # let a batch gather

    async def step(self) -> bool:
        """Copy one batch; True when more is waiting. Raises when Postgres fails."""
        current = await asyncio.to_thread(identify, self.log_path)
        if current is None:
            return False
        self.state.log_size = current.size
        pool = await self._connect()
        if self._log is None or self._log.log_id != current.log_id or not self._cursor_known:
            async with pool.acquire() as conn:
                offset = await conn.fetchval(CURSOR_GET, self.cfg.table, current.log_id)
            self.state.offset, self._cursor_known = offset or 0, True
        self._log = current
        offset = self.state.offset or 0
        if current.size <= offset:
            self._recovered()
            return False
        batch = await asyncio.to_thread(read_batch, self.log_path, offset, self.cfg.batch_size)
        if batch.end == offset:  # only a line still being written
            self._recovered()
            return False
        rows, bad = rows_of(batch.lines)
        async with pool.acquire() as conn, conn.transaction():
            new = await insert_rows(conn, self.cfg.table, rows)
            await conn.execute(
                CURSOR_PUT, self.cfg.table, current.log_id, str(self.log_path), batch.end
            )
        self._committed(batch, len(rows), new, bad)
        return batch.end < current.size

    async def _fresh_connections(self) -> None:
        """After a failure, connect anew: a connection made while the database was
        read-only (or half-closed) would stay that way."""
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.expire_connections()

    async def _connect(self) -> asyncpg.Pool:
        import asyncpg

        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.cfg.dsn,
                min_size=0,  # no connection until one is needed: start-up never waits
                max_size=self.cfg.pool_size,
                timeout=self.cfg.connect_timeout_seconds,
                command_timeout=60,
            )
        if not self._schema_ready:
            async with self._pool.acquire() as conn:
                await ensure_schema(conn, self.cfg.table)
            self._schema_ready = True
        return self._pool

    def _committed(self, batch: Batch, rows: int, new: int, bad: int) -> None:
        s = self.state
        s.offset = batch.end
        s.rows_written += new
        s.rows_present += rows - new
        s.lines_skipped += bad
        s.last_commit = utc_now()
        if bad:
            log.warning("sink %s: %d unreadable request lines skipped", self.name, bad)
        self._recovered()

    def _recovered(self) -> None:
        s = self.state
        if s.error is not None:
            behind = max(0, s.log_size - (s.offset or 0))
            log.warning("sink %s: writing again (%d bytes to catch up)", self.name, behind)
        s.error, s.failing_since = None, None

    def _failed(self, exc: Exception) -> None:
        s = self.state
        message = scrub(f"{type(exc).__name__}: {exc}".strip().rstrip(":"), self._secrets)
        if s.error is None:
            log.warning("sink %s: cannot write (%s); rows wait in the log", self.name, message)
            if not isinstance(exc, OSError | TimeoutError) and not _is_postgres(exc):
                log.error("sink %s: unexpected failure", self.name, exc_info=exc)  # a bug
            s.failing_since = utc_now()
        s.error = message
        self._cursor_known = False  # read it again once Postgres is back
        self._schema_ready = False


def _is_postgres(exc: Exception) -> bool:
    import asyncpg

    return isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError)


@contextlib.asynccontextmanager
async def running_sinks(
    cfgs: Sequence[PostgresSinkConfig], spend_log: SpendLog
) -> AsyncIterator[list[PostgresSink]]:
    """Start a copier per sink, woken by the spend log's writer; stop them after the
    log has written out what it holds."""
    sinks = [PostgresSink(cfg, spend_log.path) for cfg in cfgs]
    for sink in sinks:
        spend_log.add_listener(sink.wake)
        sink.start()
    try:
        yield sinks
    finally:
        if sinks:
            await spend_log.flush()
        for sink in sinks:
            await sink.close()
