"""Two gate instances as real subprocesses sharing one redis-server (its own port, no
persistence) in front of one mock upstream: the budget edge, a kill -9 while holding,
Redis going away and coming back empty, admin changes seen everywhere."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .procs import ROOT, Proc, spawn, start_mock
from .redis_server import RedisServer, free_port, redis_binary
from .support import agent, books, chat, raw_config, spend_lines, write_config

ADMIN = {"Authorization": "Bearer admin-secret"}
EDGE_BUDGET = Decimal("0.002")
POLL = 0.05  # bounded polling of subprocesses' HTTP endpoints and files


@dataclass
class Cluster:
    tmp: Path
    redis: RedisServer
    mock: Proc
    configs: dict[str, Path]
    gates: dict[str, Proc]
    session: aiohttp.ClientSession

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.jsonl"

    def books(self) -> Decimal:
        return sum((books(self.log(n)) for n in self.configs if self.log(n).exists()), Decimal(0))

    async def start_gate(self, name: str) -> Proc:
        self.gates[name] = await spawn(
            "gate", ["--config", str(self.configs[name]), "--port", "0"], self.tmp / f"{name}.err"
        )
        return self.gates[name]

    async def post(self, name: str, agent_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(
            self.gates[name].url + "/v1/chat/completions",
            json=body,
            headers={"X-Agent-ID": agent_id},
        ) as resp:
            raw = await resp.read()
            return resp.status, raw

    async def get(self, name: str, path: str) -> tuple[int, Any]:
        async with self.session.get(self.gates[name].url + path, headers=ADMIN) as resp:
            return resp.status, await resp.json()

    async def spend(self, name: str, agent_id: str) -> dict[str, Any]:
        status, body = await self.get(name, f"/api/spend/{agent_id}")
        assert status == 200, body
        return body

    async def mock_stats(self) -> dict[str, Any]:
        async with self.session.get(self.mock.url + "/_mock/stats") as resp:
            return await resp.json()

    async def settled(self, name: str, agent_id: str, timeout: float = 20) -> dict[str, Any]:
        """Wait until the shared state holds nothing for the agent and equals the books."""
        view: dict[str, Any] = {}
        for _ in range(int(timeout / POLL)):
            view = await self.spend(name, agent_id)
            spent = Decimal(str(view["budget_spent"]))
            if Decimal(str(view["budget_held"])) == 0 and spent == self.books():
                return view
            await asyncio.sleep(POLL)
        raise AssertionError(f"never settled: {view}, books {self.books()}")


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    redis = RedisServer(redis_binary(), free_port(), tmp_path / "redis.log")
    await redis.start()
    mock = await start_mock(tmp_path)
    configs = {}
    for name in ("a", "b"):
        raw = raw_config(
            tmp_path,
            mock.url + "/api/v1",
            agents={"edge": agent(float(EDGE_BUDGET), max_concurrent=200), "agent-1": agent(50)},
            admin_token="admin-secret",
            spend_log=str(tmp_path / f"{name}.jsonl"),
            spend_store={
                "backend": "redis",
                "url": redis.url,
                "key_prefix": "test:",
                "hold_ttl_seconds": 1,
                "refresh_seconds": 0.2,
            },
        )
        configs[name] = write_config(tmp_path / f"{name}.yaml", raw)
    session = aiohttp.ClientSession()
    c = Cluster(tmp_path, redis, mock, configs, {}, session)
    try:
        # A Redis without gate state: the gate refuses to start and names the command.
        code, out = await run("--config", str(configs["a"]), "--port", "0")
        assert code == 1 and "python -m gate store-rebuild" in out, out
        code, out = await run("store-rebuild", "--config", str(configs["a"]))
        assert code == 0, out
        await c.start_gate("a")
        await c.start_gate("b")
        yield c
    finally:
        for gate in c.gates.values():
            await gate.stop()
        await session.close()
        await mock.stop()
        await redis.stop()
    for name, gate in c.gates.items():
        assert "Traceback" not in gate.errors(), name


async def test_200_requests_across_two_instances_at_one_budget_edge(cluster: Cluster) -> None:
    c = cluster
    # Slow answers keep many requests in flight at once, all drawing on one budget.
    faults = [{"chunk_delay": 0.01, "first_delay": 0.15}] * 200
    async with c.session.post(c.mock.url + "/_mock/faults", json=faults) as resp:
        assert resp.status == 200
    rng = random.Random(7)
    bodies = [
        chat("edge?", stream=i % 2 == 0, max_tokens=rng.choice([8, 16, 32, 64])) for i in range(200)
    ]
    started = time.perf_counter()
    results = await asyncio.gather(
        *(c.post("a" if i % 2 else "b", "edge", body) for i, body in enumerate(bodies))
    )
    seconds = time.perf_counter() - started
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 402}, statuses
    admitted = statuses.count(200)
    assert admitted > 10 and statuses.count(402) > 10  # the run crossed the edge
    view = await c.settled("a", "edge")
    stats = await c.mock_stats()
    assert stats["chat_requests"] == admitted  # refused requests never went upstream
    assert c.books() == Decimal(stats["total_charged_str"])  # books == upstream's charges
    lines = [r for n in ("a", "b") for r in spend_lines(c.log(n)) if r["event"] == "request"]
    assert len(lines) == 200 and {r["agent_id"] for r in lines} == {"edge"}
    assert {r["status"] for r in lines if r["event"] == "request"} <= {200, 402}
    holds = [r for n in ("a", "b") for r in spend_lines(c.log(n)) if r["event"] == "hold"]
    largest = max(Decimal(str(r["held"])) for r in holds)
    spent = Decimal(str(view["budget_spent"]))
    overshoot = spent - EDGE_BUDGET
    assert overshoot <= largest  # within one request's hold (in fact not at all:)
    assert spent <= EDGE_BUDGET
    # What both instances committed (spent + held) at any moment, replayed from their
    # logs in time order: the shared cap held across instances, not just per instance.
    committed, peak, open_holds = Decimal(0), Decimal(0), {}
    merged = sorted((r for n in ("a", "b") for r in spend_lines(c.log(n))), key=lambda r: r["ts"])
    for r in merged:
        if r["event"] == "hold" and "generation_id" not in r:
            open_holds[r["request_id"]] = Decimal(str(r["held"]))
            committed += open_holds[r["request_id"]]
        elif r["event"] == "request" and r["request_id"] in open_holds:
            committed += Decimal(str(r["cost"])) - open_holds.pop(r["request_id"])
        peak = max(peak, committed)
    assert peak <= EDGE_BUDGET + largest
    print(
        f"\ntwo instances: {admitted} admitted / 200 in {seconds:.2f}s "
        f"({200 / seconds:.0f} req/s), spent {spent} of {EDGE_BUDGET}, "
        f"overshoot {max(overshoot, Decimal(0))}, largest hold {largest}, "
        f"peak committed {peak}"
    )
    # An admin change on one instance is what the other shows, at once.
    async with c.session.post(c.gates["a"].url + "/api/reset/edge", headers=ADMIN) as resp:
        assert resp.status == 200
    assert Decimal(str((await c.spend("b", "edge"))["budget_spent"])) == 0
    async with c.session.post(
        c.gates["b"].url + "/api/budget/edge", json={"budget_total": 7}, headers=ADMIN
    ) as resp:
        assert resp.status == 200
    assert (await c.spend("a", "edge"))["budget_total"] == 7
    status, _ = await c.post("a", "edge", chat("after the reset"))
    assert status == 200


async def test_kill_9_while_holding_the_survivor_settles_once(cluster: Cluster) -> None:
    c = cluster
    streams = 4
    faults = [{"chunks": 200, "chunk_delay": 0.05}] * streams
    async with c.session.post(c.mock.url + "/_mock/faults", json=faults) as resp:
        assert resp.status == 200
    responses = []
    for _ in range(streams):
        resp = await c.session.post(
            c.gates["a"].url + "/v1/chat/completions",
            json=chat(stream=True),
            headers={"X-Agent-ID": "agent-1"},
        )
        assert resp.status == 200
        await resp.content.readany()
        responses.append(resp)
    named: list[dict[str, Any]] = []
    for _ in range(400):
        lines = spend_lines(c.log("a"))
        named = [r for r in lines if r["event"] == "hold" and "generation_id" in r]
        if len(named) == streams:
            break
        await asyncio.sleep(POLL)
    assert len(named) == streams
    held = Decimal(str((await c.spend("b", "agent-1"))["budget_held"]))
    assert held > 0  # b sees a's holds
    await c.gates["a"].stop(signal.SIGKILL)
    for resp in responses:
        resp.close()
    assert not [r for r in spend_lines(c.log("a")) if r["event"] == "request"]
    view = await c.settled("b", "agent-1")
    recovered = [r for r in spend_lines(c.log("b")) if r["event"] == "request"]
    assert len(recovered) == streams
    assert all(r["recovered"] and r["cost_source"] == "generation" for r in recovered)
    assert c.books() == Decimal((await c.mock_stats())["total_charged_str"])
    assert Decimal(str(view["budget_spent"])) == c.books()
    # A restarted a: the holds are settled once, nothing more is charged.
    await c.start_gate("a")
    assert (await c.spend("a", "agent-1"))["budget_spent"] == view["budget_spent"]


async def test_redis_stopped_and_started_empty_during_traffic(cluster: Cluster) -> None:
    c = cluster
    statuses: list[int] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        i = 0
        while not stop.is_set():
            status, _ = await c.post("ab"[i % 2], "agent-1", chat(f"n{i}"))
            statuses.append(status)
            i += 1

    runner = asyncio.create_task(traffic())
    while statuses.count(200) < 10:
        await asyncio.sleep(POLL)
    await c.redis.stop()
    status, body = await c.post("a", "agent-1", chat())
    assert status == 503, body
    assert b"spend_store_unavailable" in body
    status, health = await c.get("b", "/api/health")
    assert status == 503 and health["status"] == "degraded" and health["spend_store_error"]
    await c.redis.start()  # no persistence: it comes back empty
    for _ in range(100):  # the next request finds it empty (a reconnect may fail first)
        status, body = await c.post("b", "agent-1", chat())
        if b"store-rebuild" in body:
            break
        await asyncio.sleep(POLL)
    assert status == 503 and b"store-rebuild" in body, body  # never starts from zero
    code, out = await run(
        "store-rebuild",
        "--config",
        str(c.configs["a"]),
        "--log",
        str(c.log("a")),
        "--log",
        str(c.log("b")),
    )
    assert code == 0, out
    before = len(statuses)
    while statuses[before:].count(200) < 10:
        await asyncio.sleep(POLL)
    stop.set()
    await runner
    assert set(statuses) <= {200, 503}
    view = await c.settled("a", "agent-1")
    assert c.books() == Decimal((await c.mock_stats())["total_charged_str"])
    assert Decimal(str(view["budget_spent"])) == c.books()
    _, health = await c.get("a", "/api/health")
    assert health["status"] == "ok" and "spend_store_error" not in health
