"""The shared rate-limit windows on a real redis-server: two clients (as two gate
instances would be) count into one window, atomically."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gate.books.redis_limits import Check, RedisWindows

from .redis_server import RedisServer, free_port, redis_binary


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(redis_binary(), free_port(), tmp_path / "redis.log")
    await server.start()
    yield server
    await server.stop()


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
        later = await windows[1].admit(check, now + 60_000, "late")
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
