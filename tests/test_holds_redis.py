"""A huge hold on the Redis store is that request's error, never the store's (issue 12,
finding 13): holds are bounded so Redis's signed 64-bit pico-USD stay in range, and an
overflow that still happens answers that one request and leaves the store in use."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gate.books.holds import HoldDefaults, HoldRequest
from gate.books.redis_rebuild import rebuild
from gate.books.redis_store import RedisLedger, SpendStoreRefused
from gate.books.spendlog import SpendLog
from gate.config import GateConfig
from gate.context import GATE
from gate.core.clock import utc_now

from .redis_server import RedisServer
from .support import agent, chat, make_config, spend_lines

D = Decimal
MILLION = D(10**6)


def store_config(tmp_path: Path, base_url: str, server: RedisServer, **top: Any) -> GateConfig:
    return make_config(
        tmp_path,
        base_url,
        agents={"a": agent(50, hard_cap=False)},
        spend_store={"backend": "redis", "url": server.url},
        **top,
    )


async def test_an_overflowing_hold_is_that_requests_error_and_the_store_stays_in_use(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    cfg = store_config(tmp_path, "http://127.0.0.1:9/api/v1", redis_server)
    await rebuild(cfg, [])
    log = SpendLog(cfg.spend_log)
    await log.start()
    ledger = RedisLedger(cfg.agents, log, utc_now, cfg.spend_store)
    await ledger.start()
    try:
        # holds of nearly 1 million USD each (the configurable maximum): nine fit in
        # signed 64-bit pico-USD, the tenth would pass about 9.2 million
        defaults = HoldDefaults(D(499_999), 1, max_hold_usd=MILLION)
        ask = HoldRequest(None, 1, 1)
        holds = []
        for i in range(9):
            outcome = await ledger.reserve("a", f"big-{i}", ask, {}, defaults)
            assert isinstance(outcome, tuple) and outcome[1].amount == D(999_998)
            holds.append(outcome[1])
        with pytest.raises(SpendStoreRefused):
            await ledger.reserve("a", "big-9", ask, {}, defaults)
        assert ledger.store_error is None
        small = await ledger.reserve(
            "a", "small", HoldRequest(None, 1, 1), {}, HoldDefaults(D("0.001"), 1)
        )
        assert isinstance(small, tuple)
        for hold in [*holds, small[1]]:
            ledger.settle(hold, D(0), {"status": 200})
        await ledger.all_settled()
        await ledger.refresh()
        assert ledger.account("a").held == 0  # type: ignore[union-attr]
        assert ledger.store_error is None
    finally:
        await ledger.aclose()
        await log.close()


async def test_a_huge_max_tokens_on_the_redis_store_answers_400_and_health_stays_ok(
    start_gate, mock, redis_server: RedisServer, tmp_path: Path
) -> None:
    cfg = store_config(tmp_path, mock.base_url, redis_server)
    await rebuild(cfg, [])
    client = await start_gate(cfg)
    resp = await client.post(
        "/v1/chat/completions",
        data=json.dumps(chat(max_tokens=10**40)),
        headers={"X-Agent-ID": "a", "Content-Type": "application/json"},
    )
    assert resp.status == 400
    health = await client.get("/api/health")
    assert health.status == 200 and (await health.json())["status"] == "ok"
    ok = await client.post(
        "/v1/chat/completions",
        json=chat(max_tokens=10),
        headers={"X-Agent-ID": "a"},
    )
    assert ok.status == 200
    await client.app[GATE].ledger.all_settled()
    await client.app[GATE].ledger.spend_log.flush()
    statuses = [r["status"] for r in spend_lines(cfg.spend_log) if r["event"] == "request"]
    assert statuses == [400, 200]
