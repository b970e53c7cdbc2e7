"""The Postgres sink's SQL, and spend-log lines turned into rows: pure, no I/O but
reading the migration file.

A row is a request line's fields as columns plus the whole line as jsonb
(`migrations/001_tool_calls.sql`); one INSERT takes a whole batch as column arrays.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from gate.books.logtail import REQUEST_MARK, request_record
from gate.core.clock import parse_ts

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "001_tool_calls.sql"
SCHEMA_LOCK = 0x6761_7465  # advisory lock taken while creating tables ("gate")
COLUMNS = (
    "request_id",
    "ts",
    "generation_id",
    "agent_id",
    "model",
    "tier",
    "stream",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "cost_source",
    "budget_remaining",
    "latency_ms",
    "line",
)
TYPES = (
    "text",
    "timestamptz",
    "text",
    "text",
    "text",
    "text",
    "boolean",
    "integer",
    "bigint",
    "bigint",
    "numeric",
    "text",
    "numeric",
    "float8",
    "text",
)
INT4 = 2**31
INT8 = 2**63


class BadLine(ValueError):
    """A request line that cannot become a row (no request_id or no ts)."""


def migration_sql(table: str) -> str:
    """The migration file with the configured table name in place of tool_calls."""
    return re.sub(r"\btool_calls", table, MIGRATION.read_text(encoding="utf-8"))


def insert_sql(table: str) -> str:
    """One INSERT for a whole batch: a column array per field, unnested into rows; the
    line is parsed once as jsonb, and models_allowed taken from it as text[]."""
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(TYPES, 1))
    fields = ", ".join(f"u.{c}" for c in COLUMNS[:-1])
    allowed = "j.line -> 'models_allowed'"
    return (
        f"INSERT INTO {table} ({', '.join(COLUMNS)}, models_allowed) "  # noqa: S608 - a checked name
        f"SELECT {fields}, j.line, CASE jsonb_typeof({allowed}) WHEN 'array' "
        f"THEN ARRAY(SELECT jsonb_array_elements_text({allowed})) ELSE '{{}}' END "
        f"FROM unnest({arrays}) AS u({', '.join(COLUMNS)}) "
        "CROSS JOIN LATERAL (SELECT u.line::jsonb AS line) AS j "
        "ON CONFLICT (request_id) DO NOTHING"
    )


CURSOR_GET = "SELECT byte_offset FROM gate_sink_cursor WHERE sink_table = $1 AND log_id = $2"
CURSOR_PUT = (
    "INSERT INTO gate_sink_cursor (sink_table, log_id, log_path, byte_offset) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT (sink_table, log_id) DO UPDATE SET "
    "byte_offset = GREATEST(gate_sink_cursor.byte_offset, EXCLUDED.byte_offset), "
    "log_path = EXCLUDED.log_path, updated_at = now()"
)


# -- lines to rows (pure) ------------------------------------------------------------


def to_row(record: dict[str, Any], line: bytes) -> tuple[Any, ...]:
    """A request line as the insert's column values; the raw line rides along whole."""
    request_id = record.get("request_id")
    ts = parse_ts(record.get("ts"))
    if not isinstance(request_id, str) or not request_id or ts is None:
        raise BadLine("a request line needs request_id and ts")
    return (
        request_id,
        ts,
        _text(record.get("generation_id")),
        _text(record.get("agent_id")),
        _text(record.get("model")),
        _text(record.get("tier")),
        record.get("stream") if isinstance(record.get("stream"), bool) else None,
        _int(record.get("status"), INT4),
        _int(record.get("prompt_tokens"), INT8),
        _int(record.get("completion_tokens"), INT8),
        _money(record.get("cost"), Decimal(0)),
        _text(record.get("cost_source")),
        _money(record.get("budget_remaining"), None),
        _float(record.get("latency_ms")),
        line.decode("utf-8", "replace"),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object, bound: int) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -bound <= value < bound:
        return value
    return None  # not a whole number, or too large for the column


def _money(value: object, default: Decimal | None) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return default
    number = Decimal(value)
    return number if number.is_finite() else default


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
        return None
    return float(value)


def rows_of(lines: Iterable[bytes]) -> tuple[list[tuple[Any, ...]], int]:
    """The rows of a batch's request lines, and how many request lines were unusable."""
    rows: list[tuple[Any, ...]] = []
    bad = 0
    for line in lines:
        record = request_record(line)
        if record is None:
            bad += REQUEST_MARK in line  # a torn request line: counted, skipped
            continue
        try:
            rows.append(to_row(record, line))
        except BadLine:
            bad += 1
    return rows, bad
