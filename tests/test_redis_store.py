"""The shared spend store in process: its Lua scripts against a real redis-server.
Two (or three) RedisLedgers on one Redis stand for gate instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gate.books.holds import Hold, HoldDefaults, HoldRequest
from gate.books.redis_rebuild import rebuild
from gate.books.redis_store import RedisLedger, SpendStoreError, SpendStoreStartError
from gate.books.spendlog import SpendLog
from gate.config import GateConfig
from gate.core.router import Admission

from .redis_server import RedisServer
from .support import agent, make_config, spend_lines

BUDGET = Decimal("0.01")
DEFAULTS = HoldDefaults(unknown_price=Decimal("0.000001"), default_max_tokens=1000)
ASK = HoldRequest(None, 10, None)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 15, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def store_config(tmp_path: Path, server: RedisServer, name: str, **store: Any) -> GateConfig:
    return make_config(
        tmp_path,
        "http://127.0.0.1:9/api/v1",
        agents={"a": agent(float(BUDGET))},
        spend_log=str(tmp_path / f"{name}.jsonl"),
        spend_store={"backend": "redis", "url": server.url, **store},
    )


Opener = Callable[..., Any]


@pytest.fixture
async def open_ledger(
    redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    opened: list[tuple[RedisLedger, SpendLog]] = []

    async def open_(name: str, clock: Clock, **store: Any) -> RedisLedger:
        cfg = store_config(tmp_path, redis_server, name, **store)
        spend_log = SpendLog(cfg.spend_log)
        await spend_log.start()
        ledger = RedisLedger(cfg.agents, spend_log, clock, cfg.spend_store)
        try:
            await ledger.start()
        except SpendStoreStartError:
            await spend_log.close()
            raise
        opened.append((ledger, spend_log))
        return ledger

    yield open_
    for ledger, spend_log in reversed(opened):
        await ledger.aclose()
        await spend_log.close()


async def initialise(tmp_path: Path, server: RedisServer, clock: Clock) -> None:
    await rebuild(store_config(tmp_path, server, "init"), [], clock=clock)


async def shared(server: RedisServer) -> dict[str, str]:
    client = Redis.from_url(server.url, decode_responses=True)
    try:
        return await client.hgetall("execwall:acct:a")
    finally:
        await client.aclose()


def usd(units: str) -> Decimal:
    return Decimal(units) / Decimal(10) ** 12


async def reserve(ledger: RedisLedger, rid: str) -> Hold | None:
    outcome = await ledger.reserve("a", rid, ASK, {}, DEFAULTS)
    return outcome[1] if isinstance(outcome, tuple) else None


async def test_two_instances_never_hold_past_the_cap(
    open_ledger: Opener, redis_server: RedisServer, tmp_path: Path
) -> None:
    clock = Clock()
    await initialise(tmp_path, redis_server, clock)
    one, two = await open_ledger("one", clock), await open_ledger("two", clock)
    holds = await asyncio.gather(*(reserve(one if i % 2 else two, f"req-{i}") for i in range(60)))
    placed = [h for h in holds if h is not None]
    assert 0 < len(placed) < 60
    assert sum(h.amount for h in placed) <= BUDGET  # the script's check: never past the cap
    state = await shared(redis_server)
    assert usd(state["held"]) == sum(h.amount for h in placed)
    for i, hold in enumerate(placed):
        owner = one if any(h is hold for h in one.open_holds()) else two
        owner.settle(hold, hold.amount / 2, {"status": 200, "n": i})
    await asyncio.gather(one.all_settled(), two.all_settled())
    state = await shared(redis_server)
    assert usd(state["held"]) == 0
    assert usd(state["spent"]) == sum(h.amount / 2 for h in placed)
    await two.refresh()
    assert two.account("a").spent == usd(state["spent"])  # type: ignore[union-attr]


async def test_a_period_rolls_once_for_all_instances(
    open_ledger: Opener, redis_server: RedisServer, tmp_path: Path
) -> None:
    clock = Clock()
    await initialise(tmp_path, redis_server, clock)
    one, two = await open_ledger("one", clock), await open_ledger("two", clock)
    hold = await reserve(one, "req-1")
    assert hold is not None
    one.settle(hold, Decimal("0.004"), {"status": 200})
    await one.all_settled()
    clock.now = datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)
    await asyncio.gather(one.refresh(), two.refresh(), one.refresh(), two.refresh())
    await one.spend_log.flush()
    await two.spend_log.flush()
    rolled = [
        r
        for name in ("one", "two")
        for r in spend_lines(tmp_path / f"{name}.jsonl")
        if r["event"] == "reset" and r["reason"] == "period"
    ]
    assert len(rolled) == 1
    assert usd((await shared(redis_server))["spent"]) == 0
    assert one.account("a").spent == two.account("a").spent == 0  # type: ignore[union-attr]


async def test_a_dead_instances_hold_is_claimed_and_settled_once(
    open_ledger: Opener, redis_server: RedisServer, tmp_path: Path
) -> None:
    clock = Clock()
    await initialise(tmp_path, redis_server, clock)
    dead = await open_ledger("dead", clock, hold_ttl_seconds=5)
    outcome = await dead.reserve("a", "req-dead", replace(ASK, api="messages"), {}, DEFAULTS)
    assert isinstance(outcome, tuple)
    hold = outcome[1]
    for task in dead._tasks:  # it stops renewing: as good as killed
        task.cancel()
    two, three = await open_ledger("two", clock), await open_ledger("three", clock)
    assert await two.claim_expired() == []  # not expired yet
    clock.now += timedelta(seconds=6)
    claims = await asyncio.gather(two.claim_expired(), three.claim_expired())
    assert sorted(len(c) for c in claims) == [0, 1]
    claimer = two if claims[0] else three
    claimed = (claims[0] or claims[1])[0]
    assert (claimed.request_id, claimed.amount) == ("req-dead", hold.amount)
    assert claimed.api == "messages"  # its recovered line names the API it was asked through
    claimer.settle(claimed, claimed.amount, {"status": None, "recovered": True})
    await claimer.all_settled()
    state = await shared(redis_server)
    assert (usd(state["held"]), usd(state["spent"])) == (0, hold.amount)
    # The dead instance's own settlement, should it come after all, counts nothing.
    dead._tasks = [asyncio.create_task(dead.shared.writer.run())]
    dead.settle(hold, hold.amount, {"status": 200})
    await dead.all_settled()
    assert usd((await shared(redis_server))["spent"]) == hold.amount


async def test_an_empty_redis_refuses_to_start_and_is_rebuilt_from_the_logs(
    open_ledger: Opener, redis_server: RedisServer, tmp_path: Path
) -> None:
    clock = Clock()
    with pytest.raises(SpendStoreStartError, match="python -m gate store-rebuild"):
        await open_ledger("one", clock)
    await initialise(tmp_path, redis_server, clock)
    one, two = await open_ledger("one", clock), await open_ledger("two", clock)
    await one.set_budget("a", Decimal("0.02"), None)
    for i in range(6):
        hold = await reserve(one if i % 2 else two, f"req-{i}")
        assert hold is not None
        (one if i % 2 else two).settle(hold, Decimal("0.001"), {"status": 200})
    left_open = await reserve(two, "req-open")
    assert left_open is not None
    await asyncio.gather(one.all_settled(), two.spend_log.flush(), one.spend_log.flush())
    before = await shared(redis_server)
    client = Redis.from_url(redis_server.url)
    await client.flushall()  # Redis restarted empty
    await client.aclose()
    with pytest.raises(SpendStoreError, match="store-rebuild"):
        await reserve(one, "req-refused")
    done = await rebuild(
        store_config(tmp_path, redis_server, "x"),
        [tmp_path / "one.jsonl", tmp_path / "two.jsonl"],
        clock=clock,
    )
    assert done.spent == {"a": Decimal("0.006")}
    after = await shared(redis_server)
    assert (after["spent"], after["budget_total"], after["admin"]) == (
        before["spent"],
        before["budget_total"],
        "1",
    )
    assert usd(after["held"]) == 0  # the open hold was left out ...
    two.settle(left_open, Decimal("0.001"), {"status": 200})  # ... and counts once settled
    await two.all_settled()
    assert usd((await shared(redis_server))["spent"]) == Decimal("0.007")


async def test_open_mode_admits_while_redis_is_away_and_counts_once_after(
    open_ledger: Opener, redis_server: RedisServer, tmp_path: Path
) -> None:
    clock = Clock()
    await initialise(tmp_path, redis_server, clock)
    closed = await open_ledger("closed", clock)
    one = await open_ledger("one", clock, on_store_error="open")
    await redis_server.stop()
    with pytest.raises(SpendStoreError):
        await reserve(closed, "req-closed")
    outcome = await one.reserve("a", "req-away", ASK, {}, DEFAULTS)
    assert isinstance(outcome, tuple) and isinstance(outcome[0], Admission)
    assert one.store_error is not None
    one.settle(outcome[1], Decimal("0.002"), {"status": 200})
    await redis_server.start()  # empty: the settlement waits for the rebuild
    await one.spend_log.flush()
    await rebuild(store_config(tmp_path, redis_server, "x"), [tmp_path / "one.jsonl"], clock=clock)
    await asyncio.wait_for(one.all_settled(), 10)
    assert usd((await shared(redis_server))["spent"]) == Decimal("0.002")
    assert one.store_error is None


async def test_an_agent_removed_by_a_reload_keeps_its_spend_in_redis_and_resumes_it(
    open_ledger: Opener, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A reload removes agent `a` while its request runs: the settlement is charged to
    its (dormant) account and reaches Redis; the reload that adds it back resumes it."""
    clock = Clock()
    await initialise(tmp_path, redis_server, clock)
    one = await open_ledger("one", clock)
    agents = store_config(tmp_path, redis_server, "one").agents
    hold = await reserve(one, "req-1")
    assert hold is not None
    one.apply_policies({})  # a reload without `a`
    assert one.account("a") is None and one.agent_ids() == []
    line: dict[str, Any] = {"status": 200}
    one.settle(hold, Decimal("0.004"), line)
    assert line["agent_id"] == "a" and line["budget_remaining"] == BUDGET - Decimal("0.004")
    await one.all_settled()
    assert usd((await shared(redis_server))["spent"]) == Decimal("0.004")
    one.apply_policies(agents)  # `a` is back
    await one.all_settled()
    await one.refresh()
    assert one.account("a").spent == Decimal("0.004")  # type: ignore[union-attr]
