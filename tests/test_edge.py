"""The budget edge under concurrency: holds keep the cap, refused requests never go
upstream, and the books equal what upstream charged."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from pathlib import Path

from gate.context import GATE
from mock_upstream import Fault

from .support import agent, books, chat, make_config, request_lines, spend_lines

BUDGET = Decimal("0.005")


async def one(client, stream: bool, max_tokens: int | None) -> int:
    body = chat("what is the budget edge?", stream=stream)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    async with client.post(
        "/v1/chat/completions", json=body, headers={"X-Agent-ID": "edge"}
    ) as resp:
        await resp.read()
        return resp.status


async def test_200_concurrent_requests_at_the_edge(start_gate, mock, tmp_path: Path) -> None:
    # one agent with 200 requests at once: its concurrency share must not be what refuses
    edge = agent(float(BUDGET), max_concurrent=200)
    cfg = make_config(tmp_path, mock.base_url, agents={"edge": edge})
    client = await start_gate(cfg)
    rng = random.Random(7)
    # Slow answers keep many requests in flight at once, all drawing on one budget.
    mock.state.faults.extend(Fault(chunk_delay=0.01, first_delay=0.05) for _ in range(200))
    statuses = await asyncio.gather(
        *(one(client, i % 2 == 0, rng.choice([8, 16, 32, 64])) for i in range(200))
    )
    gate = client.app[GATE]
    await gate.ledger.spend_log.flush()
    log = tmp_path / "spend.jsonl"

    assert set(statuses) <= {200, 402}
    admitted, refused = statuses.count(200), statuses.count(402)
    assert admitted > 10 and refused > 10  # the run really crossed the edge
    assert mock.state.chat_count() == admitted  # refused requests never went upstream
    lines = request_lines(log)
    assert len(lines) == 200
    assert books(log) == mock.state.total_charged()
    holds = {r["request_id"] for r in spend_lines(log) if r["event"] == "hold"}
    settled = {r["request_id"] for r in lines if r["status"] == 200}
    assert holds == settled and not gate.ledger.open_holds()
    spent = gate.ledger.account("edge").spent
    assert spent == books(log)
    largest_hold = max(Decimal(str(r["held"])) for r in spend_lines(log) if r["event"] == "hold")
    assert spent <= BUDGET + largest_hold
    # The holds are conservative, so in fact the cap is never crossed at all.
    assert spent <= BUDGET


async def test_clamped_max_tokens_is_sent_upstream_and_reported(start_gate, mock, tmp_path) -> None:
    cfg = make_config(tmp_path, mock.base_url, agents={"edge": agent(0.001)})
    client = await start_gate(cfg)
    resp = await client.post(
        "/v1/chat/completions", json=chat(max_tokens=100_000), headers={"X-Agent-ID": "edge"}
    )
    body = await resp.json()
    assert resp.status == 200, body
    sent = mock.state.requests[-1]["body"]["max_tokens"]
    assert 0 < sent < 100_000
    assert body["_execwall"]["max_tokens"] == sent and body["_execwall"]["max_tokens_clamped"]


async def test_a_hold_that_cannot_fit_is_refused(start_gate, mock, tmp_path) -> None:
    cfg = make_config(tmp_path, mock.base_url, agents={"edge": agent(0.0000001)})
    client = await start_gate(cfg)
    resp = await client.post(
        "/v1/chat/completions", json=chat("x" * 3000), headers={"X-Agent-ID": "edge"}
    )
    assert resp.status == 402
    assert (await resp.json())["error"]["type"] == "budget_exhausted"
    assert mock.state.chat_count() == 0


async def test_100_streams_cut_by_the_client_are_all_billed(start_gate, mock, tmp_path) -> None:
    cfg = make_config(tmp_path, mock.base_url, agents={"a": agent(1000, max_concurrent=100)})
    client = await start_gate(cfg)
    rng = random.Random(11)
    mock.state.faults.extend(Fault(chunks=12, chunk_delay=0.005) for _ in range(100))

    async def cut_after(n: int) -> None:
        resp = await client.post(
            "/v1/chat/completions", json=chat(stream=True), headers={"X-Agent-ID": "a"}
        )
        assert resp.status == 200
        seen = 0
        while seen < n:
            if not await resp.content.readany():
                break
            seen += 1
        resp.close()  # the client goes away mid-stream

    await asyncio.gather(*(cut_after(rng.randint(0, 10)) for _ in range(100)))
    gate = client.app[GATE]
    # Handlers drain upstream after their client left, then settle.
    await asyncio.wait_for(gate.ledger.all_settled(), 30)
    await gate.ledger.spend_log.flush()
    log = tmp_path / "spend.jsonl"
    lines = request_lines(log)
    assert len(lines) == 100
    assert books(log) == mock.state.total_charged()
    assert all(r["cost"] > 0 for r in lines)
    assert {r["cost_source"] for r in lines} <= {"usage", "generation"}
