"""Settlements and resets are ordered on the shared store as the logs order them: a
settlement whose request line is before a reset (or a `budget_spent` set, or the
start of the period) and that reaches Redis only after it does not count in the new
epoch, and one whose line is after counts — so Redis, the logs' replay and
`store-rebuild` from the logs say the same.

Two real gate subprocesses share one redis-server; gate b reaches it through a proxy
that holds b's settlement at the door (a slowed Redis for b only) until the test lets
it go. In process, RedisLedgers on a fake clock cover the period boundary."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gate.books.ledger import Ledger
from gate.books.redis_rebuild import rebuild
from gate.books.redis_store import RedisLedger
from gate.books.spendlog import SpendLog
from gate.config import GateConfig, load_config
from gate.core.clock import utc_now

from .procs import Proc, spawn, start_mock
from .redis_proxy import HoldingProxy
from .redis_server import RedisServer
from .support import agent, chat, make_config, raw_config, spend_lines, write_config
from .test_redis_cluster import run
from .test_redis_store import ASK, DEFAULTS, Clock, usd

ADMIN = {"Authorization": "Bearer admin-secret"}
WAIT = 20.0  # bound on awaited events (a failure, not a pace)


def replay(cfg: GateConfig, logs: list[Path], clock: Any = utc_now) -> dict[str, Decimal]:
    """What the logs say each agent has spent: the JSONL store's own replay, over the
    logs merged in time order (a stable sort: one log's lines keep their order)."""
    ledger = Ledger(cfg.agents, SpendLog(Path(os.devnull)), clock)
    ledger.replay(sorted((r for log in logs for r in spend_lines(log)), key=lambda r: r["ts"]))
    return {a: ledger.account(a).spent for a in ledger.agent_ids()}  # type: ignore[union-attr]


def replayed(config: Path, logs: list[Path]) -> dict[str, Decimal]:
    return replay(load_config(config, {}), logs)


async def spent_in(url: str, key: str, name: str = "spent") -> Decimal:
    client = Redis.from_url(url, decode_responses=True)
    try:
        return usd(await client.hget(key, name) or "0")
    finally:
        await client.aclose()


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[HoldingProxy]:
    holding = HoldingProxy(redis_server.port)
    await holding.start()
    yield holding
    holding.release()
    await holding.stop()


def gate_config(tmp_path: Path, name: str, upstream: str, url: str, prefix: str) -> Path:
    raw = raw_config(
        tmp_path,
        upstream,
        agents={"agent-1": agent(50)},
        admin_token="admin-secret",
        spend_log=str(tmp_path / f"{name}.jsonl"),
        spend_store={"backend": "redis", "url": url, "key_prefix": prefix},
    )
    return write_config(tmp_path / f"{name}.yaml", raw)


async def post(session: aiohttp.ClientSession, url: str, **kw: Any) -> Any:
    async with session.post(url, **kw) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body


@pytest.mark.parametrize("change", ["reset", "budget_spent"])
async def test_a_reset_on_one_gate_is_not_undone_by_the_others_queued_settlement(
    tmp_path: Path, redis_server: RedisServer, proxy: HoldingProxy, change: str
) -> None:
    mock = await start_mock(tmp_path)
    upstream = mock.url + "/api/v1"
    a_cfg = gate_config(tmp_path, "a", upstream, redis_server.url, "test:")
    b_cfg = gate_config(tmp_path, "b", upstream, proxy.url, "test:")  # b: through the door
    check_cfg = gate_config(tmp_path, "check", upstream, redis_server.url, "check:")
    gates: dict[str, Proc] = {}
    session = aiohttp.ClientSession()
    try:
        code, out = await run("store-rebuild", "--config", str(a_cfg))
        assert code == 0, out
        for name, cfg in (("a", a_cfg), ("b", b_cfg)):
            gates[name] = await spawn(
                "gate", ["--config", str(cfg), "--port", "0"], tmp_path / f"{name}.err"
            )
        chat_b = gates["b"].url + "/v1/chat/completions"
        headers = {"X-Agent-ID": "agent-1"}
        # b's request is answered and its line written; its settlement waits at the door.
        proxy.arm(b"test:done:")
        before = await post(session, chat_b, json=chat("before the reset"), headers=headers)
        await asyncio.wait_for(proxy.caught.wait(), WAIT)
        if change == "reset":
            await post(session, gates["a"].url + "/api/reset/agent-1", headers=ADMIN)
        else:
            await post(
                session,
                gates["a"].url + "/api/budget/agent-1",
                json={"budget_spent": 0.25},
                headers=ADMIN,
            )
        proxy.release()  # ... and now reaches Redis, after the reset
        await asyncio.wait_for(proxy.answered.wait(), WAIT)
        after = await post(session, chat_b, json=chat("after the reset"), headers=headers)
        assert before["id"] != after["id"]
        for gate in gates.values():
            assert await gate.stop() == 0  # graceful: queues drained, logs flushed
        logs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
        costs = [r["cost"] for r in spend_lines(logs[1]) if r["event"] == "request"]
        assert len(costs) == 2 and all(Decimal(str(c)) > 0 for c in costs)
        base = Decimal(0) if change == "reset" else Decimal("0.25")
        live = await spent_in(redis_server.url, "test:acct:agent-1")
        # The logs: b's first line is before the reset, its second after it.
        assert replayed(a_cfg, logs)["agent-1"] == base + Decimal(str(costs[1]))
        assert live == replayed(a_cfg, logs)["agent-1"]
        log_args = [arg for log in logs for arg in ("--log", str(log))]
        code, out = await run("store-rebuild", "--config", str(check_cfg), *log_args)
        assert code == 0, out
        assert await spent_in(redis_server.url, "check:acct:agent-1") == live
    finally:
        for gate in gates.values():
            await gate.stop()
        await session.close()
        await mock.stop()
    for name, gate in gates.items():
        assert "Traceback" not in gate.errors(), name


# -- in process, on a fake clock: the period boundary, and one instance's own order ----


def ledger_config(tmp_path: Path, name: str, url: str, prefix: str = "execwall:") -> GateConfig:
    return make_config(
        tmp_path,
        "http://127.0.0.1:9/api/v1",
        agents={"a": agent(1)},  # monthly
        spend_log=str(tmp_path / f"{name}.jsonl"),
        spend_store={"backend": "redis", "url": url, "key_prefix": prefix},
    )


async def open_ledger(tmp_path: Path, name: str, url: str, clock: Clock) -> RedisLedger:
    cfg = ledger_config(tmp_path, name, url)
    spend_log = SpendLog(cfg.spend_log)
    await spend_log.start()
    ledger = RedisLedger(cfg.agents, spend_log, clock, cfg.spend_store)
    await ledger.start()
    return ledger


async def close(*ledgers: RedisLedger) -> None:
    for ledger in ledgers:
        await ledger.aclose()
        await ledger.spend_log.close()


async def agree(tmp_path: Path, server: RedisServer, clock: Clock, names: list[str]) -> Decimal:
    """Redis's spent for agent a, after checking the logs' replay and a rebuild from
    them (into another prefix) say the same; returns it."""
    live = await spent_in(server.url, "execwall:acct:a")
    logs = [tmp_path / f"{n}.jsonl" for n in names]
    cfg = ledger_config(tmp_path, "check", server.url, "check:")
    assert replay(cfg, logs, clock)["a"] == live
    done = await rebuild(cfg, logs, clock=clock)
    assert done.spent["a"] == live
    assert await spent_in(server.url, "check:acct:a") == live
    return live


async def test_a_line_from_the_old_period_reaching_redis_after_the_roll_counts_in_the_old(
    tmp_path: Path, redis_server: RedisServer, proxy: HoldingProxy
) -> None:
    clock = Clock()
    clock.now = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
    await rebuild(ledger_config(tmp_path, "init", redis_server.url), [], clock=clock)
    one = await open_ledger(tmp_path, "one", proxy.url, clock)
    two = await open_ledger(tmp_path, "two", redis_server.url, clock)
    try:
        outcome = await one.reserve("a", "req-jan", ASK, {}, DEFAULTS)
        assert isinstance(outcome, tuple)
        proxy.arm(b"done:req-jan")
        one.settle(outcome[1], Decimal("0.004"), {"status": 200})  # a January line
        await asyncio.wait_for(proxy.caught.wait(), WAIT)
        clock.now = datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)
        await two.refresh()  # February: two rolls the period
        proxy.release()
        await asyncio.wait_for(one.all_settled(), WAIT)
        assert await spent_in(redis_server.url, "execwall:acct:a", "held") == 0
    finally:
        await close(one, two)
    assert await agree(tmp_path, redis_server, clock, ["one", "two"]) == 0


async def test_a_january_hold_settled_in_february_counts_in_february(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    clock = Clock()
    clock.now = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
    await rebuild(ledger_config(tmp_path, "init", redis_server.url), [], clock=clock)
    one = await open_ledger(tmp_path, "one", redis_server.url, clock)
    try:
        outcome = await one.reserve("a", "req-jan", ASK, {}, DEFAULTS)
        assert isinstance(outcome, tuple)
        clock.now = datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)
        one.settle(outcome[1], Decimal("0.004"), {"status": 200})  # a February line
        await one.all_settled()  # its settlement rolled the period in Redis
    finally:
        await close(one)
    rolled = [r for r in spend_lines(tmp_path / "one.jsonl") if r["event"] == "reset"]
    assert [r["reason"] for r in rolled] == ["period"]
    assert await agree(tmp_path, redis_server, clock, ["one"]) == Decimal("0.004")


async def test_one_instances_settlements_around_its_own_reset_in_the_same_millisecond(
    tmp_path: Path, redis_server: RedisServer, proxy: HoldingProxy
) -> None:
    clock = Clock()  # one instant: the log's order is all that orders them
    await rebuild(ledger_config(tmp_path, "init", redis_server.url), [], clock=clock)
    one = await open_ledger(tmp_path, "one", proxy.url, clock)
    try:
        first = await one.reserve("a", "req-1", ASK, {}, DEFAULTS)
        second = await one.reserve("a", "req-2", ASK, {}, DEFAULTS)
        assert isinstance(first, tuple) and isinstance(second, tuple)
        proxy.arm(b"done:req-1")
        one.settle(first[1], Decimal("0.004"), {"status": 200})  # before the reset
        await asyncio.wait_for(proxy.caught.wait(), WAIT)
        await one.reset("a")
        one.settle(second[1], Decimal("0.002"), {"status": 200})  # after it
        assert one.account("a").spent == Decimal("0.002")  # type: ignore[union-attr]
        proxy.release()
        await asyncio.wait_for(one.all_settled(), WAIT)
    finally:
        await close(one)
    assert await agree(tmp_path, redis_server, clock, ["one"]) == Decimal("0.002")


async def test_a_rebuild_puts_a_request_before_a_reset_of_the_same_millisecond(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    def line(ts: str, event: str, **fields: Any) -> str:
        return (
            json.dumps(
                {"ts": f"2026-01-15T12:00:00.{ts}Z", "event": event, "agent_id": "a", **fields}
            )
            + "\n"
        )

    (tmp_path / "a.jsonl").write_text(
        line("000", "request", request_id="r1", cost="0.001") + line("500", "reset", reason="admin")
    )
    (tmp_path / "b.jsonl").write_text(
        line("500", "request", request_id="r2", cost="0.002")  # same ms as a's reset
        + line("501", "request", request_id="r3", cost="0.004")
    )
    clock = Clock()
    clock.now = datetime(2026, 1, 15, 12, 0, 0, 500_000, tzinfo=UTC)
    logs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]  # a first: its reset leads the tie
    done = await rebuild(ledger_config(tmp_path, "x", redis_server.url), logs, clock=clock)
    assert done.spent["a"] == Decimal("0.004")
    # A settlement still queued somewhere is ordered the same way: one whose line has
    # the reset's ms does not count, one after it does.
    one = await open_ledger(tmp_path, "one", redis_server.url, clock)
    try:
        for rid, cost in (("r4", "0.01"), ("r5", "0.02")):
            outcome = await one.reserve("a", rid, ASK, {}, DEFAULTS)
            assert isinstance(outcome, tuple)
            one.settle(outcome[1], Decimal(cost), {"status": 200})
            await one.all_settled()
            clock.now = datetime(2026, 1, 15, 12, 0, 0, 502_000, tzinfo=UTC)
    finally:
        await close(one)
    assert await spent_in(redis_server.url, "execwall:acct:a") == Decimal("0.024")
    again = await rebuild(
        ledger_config(tmp_path, "y", redis_server.url, "check:"),
        [*logs, tmp_path / "one.jsonl"],
        clock=clock,
    )
    assert again.spent["a"] == Decimal("0.024")
