"""The shared rate-limit windows on a real redis-server: two clients (as two gate
instances would be) count into one window, atomically."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from gate.books.redis_limits import Check, RedisWindows
from gate.books.redis_rebuild import rebuild
from gate.config import GateConfig
from gate.context import GATE

from .redis_server import RedisServer
from .support import agent, chat, make_config, request_lines

CHAT = "/v1/chat/completions"


async def test_two_clients_share_one_window(redis_server: RedisServer) -> None:
    one = Redis.from_url(redis_server.url, decode_responses=True)
    two = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        windows = [RedisWindows(one), RedisWindows(two)]
        check = [Check("gate:limit:requests:a", 10, 1)]
        now = 1_000_000
        burst = [windows[i % 2].admit(check, now + i, f"r{i}") for i in range(30)]
        results = await asyncio.gather(*burst)
        assert sum(not r.blocked for r in results) == 10
        refused = [r for r in results if r.blocked]
        oldest = min(now + i for i, r in enumerate(results) if not r.blocked)
        # a refusal waits until the oldest admitted entry leaves the window
        for i, r in enumerate(results):
            if r.blocked:
                assert r.waits_ms[0] == oldest + 60_000 - (now + i)
        assert refused[0].used == [10]
        # once the oldest admitted entry left its window (the burst interleaves across
        # the two connections, so it need not be the first sent), one more fits
        later = await windows[1].admit(check, oldest + 60_000, "late")
        assert not later.blocked and later.used == [10]
    finally:
        await one.aclose()
        await two.aclose()


async def test_correction_frees_tokens(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        windows = RedisWindows(client)
        key = "gate:limit:tokens:a"
        first = await windows.admit([Check(key, 1000, 800)], 5_000, "t1")
        assert not first.blocked
        assert (await windows.admit([Check(key, 1000, 500)], 5_001, "t2")).blocked
        assert await windows.correct(key, "t1", 800, 100)  # settled: it used 100
        second = await windows.admit([Check(key, 1000, 500)], 5_002, "t3")
        assert not second.blocked and second.used == [600]
    finally:
        await client.aclose()


def shared_config(tmp_path: Path, name: str, base_url: str, server: RedisServer) -> GateConfig:
    """One instance's config: its own spend log, the one Redis every instance shares."""
    home = tmp_path / name
    home.mkdir()
    agents = {"agent-1": agent(requests_per_minute=5), "default": agent(5)}
    store = {"backend": "redis", "url": server.url}
    return make_config(home, base_url, agents, spend_store=store, admin_token="t0k")


async def _post(client: Any, agent_id: str) -> tuple[int, dict[str, str], bytes]:
    resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": agent_id})
    return resp.status, dict(resp.headers), await resp.read()


async def test_two_gates_on_one_redis_share_requests_per_minute(
    start_gate, mock, redis_server: RedisServer, tmp_path: Path
) -> None:
    one_cfg = shared_config(tmp_path, "one", mock.base_url, redis_server)
    await rebuild(one_cfg, [])
    one = await start_gate(one_cfg)
    two = await start_gate(shared_config(tmp_path, "two", mock.base_url, redis_server))
    burst = [_post(one if i % 2 else two, "agent-1") for i in range(12)]
    answers = await asyncio.gather(*burst)
    assert mock.state.chat_count() == 5  # not 5 per instance: one window for both
    assert sorted(status for status, _, _ in answers) == [200] * 5 + [429] * 7
    for status, headers, body in answers:
        assert headers["x-ratelimit-limit-requests"] == "5"
        if status == 429:
            assert b'"rate_limit_exceeded"' in body
            assert 1 <= int(headers["Retry-After"]) <= 60
            assert 1 <= int(headers["retry-after-ms"]) <= 60_000
            assert headers["x-ratelimit-remaining-requests"] == "0"
    remaining = sorted(int(h["x-ratelimit-remaining-requests"]) for s, h, _ in answers if s == 200)
    assert remaining == [0, 1, 2, 3, 4]  # each admission saw the others' counts
    status, _, _ = await _post(two, "default")  # another agent is not limited
    assert status == 200
    for instance in (one, two):  # the admin API shows the shared window, on either
        resp = await instance.get("/api/spend/agent-1", headers={"Authorization": "Bearer t0k"})
        shown = (await resp.json())["rate_limits"]
        assert shown["requests_per_minute"] == 5 and shown["requests_remaining"] == 0
        assert 0 < shown["requests_reset_seconds"] <= 60
        assert shown["tokens_per_minute"] is None
    refused = [
        r
        for name in ("one", "two")
        for r in request_lines(tmp_path / name / "spend.jsonl")
        if r["status"] == 429
    ]
    assert len(refused) == 7  # every refusal wrote its line, on the instance that refused


async def test_a_refusal_after_admission_gives_the_shared_count_back(
    start_gate, mock, redis_server: RedisServer, tmp_path: Path
) -> None:
    agents = {"spent": agent(1, requests_per_minute=2)}
    store = {"backend": "redis", "url": redis_server.url}
    cfg = make_config(tmp_path, mock.base_url, agents, spend_store=store, admin_token="t0k")
    await rebuild(cfg, [])
    gate = await start_gate(cfg)
    admin = {"Authorization": "Bearer t0k"}
    resp = await gate.post("/api/budget/spent", json={"budget_spent": 1}, headers=admin)
    assert resp.status == 200
    for _ in range(4):  # a 402 is counted by the limit at admission, then given back
        status, _, _ = await _post(gate, "spent")
        assert status == 402
    await gate.app[GATE].limits.shared.drain()
    resp = await gate.post("/api/budget/spent", json={"budget_spent": 0}, headers=admin)
    assert resp.status == 200
    statuses = [(await _post(gate, "spent"))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]  # the four 402s left both requests of the minute


async def test_settled_tokens_replace_the_estimate_in_redis(
    start_gate, mock, redis_server: RedisServer, tmp_path: Path
) -> None:
    agents = {"agent-1": agent(tokens_per_minute=3000)}
    store = {"backend": "redis", "url": redis_server.url}
    cfg = make_config(tmp_path, mock.base_url, agents, spend_store=store)
    await rebuild(cfg, [])
    gate = await start_gate(cfg)
    resp = await gate.post(CHAT, json=chat(max_tokens=2000), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 200
    assert int(resp.headers["x-ratelimit-remaining-tokens"]) <= 1000  # the estimate counted
    await gate.app[GATE].ledger.spend_log.flush()
    await gate.app[GATE].limits.shared.drain()
    line = request_lines(tmp_path / "spend.jsonl")[-1]
    real = line["prompt_tokens"] + line["completion_tokens"]
    assert 0 < real < 2000
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        members = await client.zrange("execwall:limit:tokens:agent-1", 0, -1)
    finally:
        await client.aclose()
    assert [m.split("|")[1] for m in members] == [str(real)]  # settled: the real usage
    resp = await gate.post(CHAT, json=chat(max_tokens=2000), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 200  # fits again only because the estimate was corrected


async def test_redis_away_answers_the_stores_503(
    start_gate, mock, redis_server: RedisServer, tmp_path: Path
) -> None:
    cfg = shared_config(tmp_path, "one", mock.base_url, redis_server)
    await rebuild(cfg, [])
    gate = await start_gate(cfg)
    await redis_server.stop()
    status, headers, body = await _post(gate, "agent-1")
    assert status == 503 and b'"spend_store_unavailable"' in body
    assert headers["Retry-After"] == "5"
    assert mock.state.chat_count() == 0


async def test_open_mode_counts_in_this_instance_while_redis_is_away(
    start_gate, mock, redis_server: RedisServer, tmp_path: Path
) -> None:
    agents = {"agent-1": agent(requests_per_minute=2)}
    store = {"backend": "redis", "url": redis_server.url, "on_store_error": "open"}
    cfg = make_config(tmp_path, mock.base_url, agents, spend_store=store)
    await rebuild(cfg, [])
    gate = await start_gate(cfg)
    await redis_server.stop()
    statuses = [(await _post(gate, "agent-1"))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]  # admitted, and still limited, by its own windows
    assert mock.state.chat_count() == 2
    ledger = gate.app[GATE].ledger
    await redis_server.start()  # back (empty): rebuilt from the log, the books catch up
    await ledger.spend_log.flush()
    await rebuild(cfg, [cfg.spend_log])
    await asyncio.wait_for(ledger.all_settled(), 10)
