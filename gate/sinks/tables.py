"""The sink's table in Postgres: created from the migration once, rows inserted (a
row Postgres refuses skipped alone), and the backfill of whole logs into it
(`python -m gate sink-backfill`). asyncpg is imported only when used."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gate.books.logtail import request_lines
from gate.config import PostgresSinkConfig
from gate.sinks.sql import SCHEMA_LOCK, insert_sql, migration_sql, rows_of

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Conn = asyncpg.Connection[Any] | PoolConnectionProxy[Any]

log = logging.getLogger(__name__)


async def ensure_schema(conn: Conn, table: str) -> None:
    """Create the tables from the migration file unless they exist (once, under a lock)."""
    have = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL AND to_regclass('gate_sink_cursor') IS NOT NULL",
        table,
    )
    if have:
        return
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
        await conn.execute(migration_sql(table))


async def insert_rows(conn: Conn, table: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert in one statement; returns how many were new. A row Postgres refuses (a
    value it cannot store) is skipped alone, with a warning, not the batch with it."""
    import asyncpg

    if not rows:
        return 0
    sql = insert_sql(table)
    columns = [list(c) for c in zip(*rows, strict=True)]
    try:
        async with conn.transaction():  # a savepoint inside the caller's transaction
            return _count(await conn.execute(sql, *columns))
    except asyncpg.DataError:
        if len(rows) == 1:
            log.warning("sink %s: skipping request %s: Postgres refused a value", table, rows[0][0])
            return 0
    half = len(rows) // 2
    return await insert_rows(conn, table, rows[:half]) + await insert_rows(conn, table, rows[half:])


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


@dataclass(slots=True)
class BackfillResult:
    requests: int = 0
    inserted: int = 0
    present: int = 0
    skipped: int = 0


async def backfill(cfg: PostgresSinkConfig, logs: Sequence[Path]) -> BackfillResult:
    """Insert every request line of `logs` (a whole log each, rotated files too) into the
    sink's table; lines already there are left alone, so running it twice adds nothing.
    The live sink's cursor is not touched."""
    import asyncpg

    result = BackfillResult()
    conn = await asyncpg.connect(cfg.dsn, timeout=cfg.connect_timeout_seconds)
    try:
        await ensure_schema(conn, cfg.table)
        for path in logs:
            for batch in request_lines(path, cfg.batch_size):
                rows, bad = rows_of(batch.lines)
                async with conn.transaction():
                    new = await insert_rows(conn, cfg.table, rows)
                result.requests += len(rows) + bad
                result.inserted += new
                result.present += len(rows) - new
                result.skipped += bad
    finally:
        await conn.close()
    return result
