"""(e) Spend-log throughput, in-process, with the durability setting the gate ships with.

Two patterns: a burst of settlement lines appended at once and flushed (the writer's
ceiling), and the request path itself — `concurrency` callers each awaiting a durable
hold line, then appending its request line (group commit decides what this costs).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from gate.books.spendlog import SpendLog
from gate.config import load_config

from .procs import ROOT
from .world import PREMIUM

SHIPPED_CONFIG = ROOT / "configs" / "policy.yaml"


def shipped_fsync() -> bool:
    """`spend_log_fsync` as configs/policy.yaml ships it."""
    keys = {f"{a}_API_KEY": "k-" + a for a in ("AGENT_1", "AGENT_2", "DEFAULT_AGENT")}
    cfg = load_config(SHIPPED_CONFIG, {"OPENROUTER_API_KEY": "sk-or-v1-bench", **keys})
    return cfg.spend_log_fsync


def _hold(index: int) -> dict[str, Any]:
    return {
        "ts": "2026-01-15T10:00:00.000Z",
        "event": "hold",
        "request_id": f"req-{index:024x}",
        "agent_id": "agent-1",
        "held": Decimal("0.061455"),
        "tier": "premium",
    }


def _request(index: int) -> dict[str, Any]:
    return {
        "request_id": f"req-{index:024x}",
        "generation_id": f"gen-1768471200-{index:020x}",
        "agent_id": "agent-1",
        "model": "openai/gpt-5",
        "tier": "premium",
        "models_allowed": list(PREMIUM),
        "stream": False,
        "status": 200,
        "prompt_tokens": 41,
        "completion_tokens": 8,
        "cost_source": "usage",
        "latency_ms": 3.217,
        "ts": "2026-01-15T10:00:00.003Z",
        "event": "request",
        "cost": Decimal("0.00013125"),
        "budget_remaining": Decimal("999999987.5213"),
    }


async def burst(path: Path, lines: int, fsync: bool) -> float:
    """Lines/s for `lines` request lines appended at once, then flushed to the file."""
    log = SpendLog(path, fsync=fsync)
    await log.start()
    try:
        started = time.perf_counter()
        for index in range(lines):
            log.append(_request(index))
        await log.flush()
        elapsed = time.perf_counter() - started
    finally:
        await log.close()
    _check(path, lines)
    return lines / elapsed


async def request_path(path: Path, requests: int, concurrency: int, fsync: bool) -> float:
    """Lines/s when `concurrency` callers each await a durable hold line, then append
    the request line — two lines per request, as the gate writes them."""
    log = SpendLog(path, fsync=fsync)
    await log.start()
    next_index = iter(range(requests))

    async def caller() -> None:
        for index in next_index:
            written = log.append(_hold(index), durable=True)
            assert written is not None
            await written
            log.append(_request(index))

    try:
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        await log.flush()
        elapsed = time.perf_counter() - started
    finally:
        await log.close()
    _check(path, 2 * requests)
    return 2 * requests / elapsed


def _check(path: Path, lines: int) -> None:
    with path.open("rb") as f:
        found = sum(1 for _ in f)
    if found != lines:
        raise RuntimeError(f"spend log bench: {found} lines on disk, {lines} appended")
    path.unlink()
