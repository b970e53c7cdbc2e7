"""Reading where the books go: `cost_routing.spend_store` (JSONL or Redis) and
`cost_routing.sinks` (copies of the spend log in Postgres)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import fields as _fields
from typing import Any

from gate.config.reader import _Reader
from gate.config.sections import _ROOT
from gate.config.types import (
    PostgresSinkConfig,
    SpendStoreConfig,
)

_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,47}")  # a plain identifier: used unquoted in SQL


def _spend_store(r: _Reader, root: Mapping[Any, Any]) -> SpendStoreConfig:
    p = f"{_ROOT}.spend_store"
    known = ("backend", "url", "key_prefix", "on_store_error", "hold_ttl_seconds")
    m = r.section(root, "spend_store", _ROOT, (*known, "refresh_seconds"))
    backend = r.choice(m, "backend", p, ("jsonl", "redis"), "jsonl")
    if backend != "redis":
        return SpendStoreConfig(backend=backend)
    return SpendStoreConfig(
        backend,
        r.url(m, "url", p, required=True, schemes=("redis", "rediss")),
        key_prefix=r.text(m, "key_prefix", p) or "execwall:",
        on_store_error=r.choice(m, "on_store_error", p, ("closed", "open"), "closed"),
        hold_ttl_seconds=r.seconds(m, "hold_ttl_seconds", p, 30.0),
        refresh_seconds=r.seconds(m, "refresh_seconds", p, 1.0),
    )


def _sinks(r: _Reader, root: Mapping[Any, Any]) -> tuple[PostgresSinkConfig, ...]:
    p = f"{_ROOT}.sinks"
    items = root.get("sinks")
    if items is None:
        return ()
    if not isinstance(items, list):
        r.fail(p, "must be a list of sinks")
        return ()
    sinks: list[PostgresSinkConfig] = []
    d = PostgresSinkConfig(dsn="")
    for i, item in enumerate(items):
        ip = f"{p}[{i}]"
        if (m := r.mapping(item, ip)) is None:
            continue
        r.unknown(m, ip, ("type", *(f.name for f in _fields(PostgresSinkConfig))))
        if r.text(m, "type", ip, required=True) not in (None, "postgres"):
            r.fail(f"{ip}.type", "must be postgres")
            continue
        if importlib.util.find_spec("asyncpg") is None:
            r.fail(f"{ip}.type", "needs asyncpg: pip install 'execwall-or-gate[postgres]'")
        dsn = r.secret(m, "dsn", ip)
        if dsn is None and not _reported(r, f"{ip}.dsn"):
            r.fail(f"{ip}.dsn", "is required")
        elif dsn is not None and not dsn.startswith(("postgresql://", "postgres://")):
            r.fail(f"{ip}.dsn", "must be a postgresql:// URL")  # the value is not repeated
        table = r.text(m, "table", ip) or d.table
        if not _TABLE.fullmatch(table) or table == "gate_sink_cursor":
            r.fail(f"{ip}.table", "must be a plain lower-case SQL name ([a-z_][a-z0-9_]*)")
        elif any(s.table == table for s in sinks):
            r.fail(f"{ip}.table", f"{table} is written by another sink already")
        sinks.append(
            PostgresSinkConfig(
                dsn=dsn or "",
                table=table,
                batch_size=r.integer(m, "batch_size", ip, d.batch_size, positive=True),
                batch_delay_seconds=r.seconds(
                    m, "batch_delay_seconds", ip, d.batch_delay_seconds, positive=False
                ),
                retry_max_seconds=r.seconds(m, "retry_max_seconds", ip, d.retry_max_seconds),
                pool_size=r.integer(m, "pool_size", ip, d.pool_size, positive=True),
                connect_timeout_seconds=r.seconds(
                    m, "connect_timeout_seconds", ip, d.connect_timeout_seconds
                ),
            )
        )
    return tuple(sinks)


def _reported(r: _Reader, where: str) -> bool:
    return any(x.startswith(f"{where}:") or x.startswith(f"{where}.") for x in r.problems)
