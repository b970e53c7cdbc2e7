"""The books balance: what the gate records is what upstream charged, on every path."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gate.context import GATE
from mock_upstream import Fault

from .support import (
    UPSTREAM_KEY,
    Settlements,
    agent,
    chat,
    make_config,
    request_lines,
    spend_lines,
    sse_data,
)

CHAT = "/v1/chat/completions"
CENT_NANO = Decimal("1e-9")
AGENTS = ("agent-1", "agent-2", "default")


def headers_for(agent_id: str) -> dict[str, str]:
    return {} if agent_id == "default" else {"X-Agent-ID": agent_id}


async def flushed(client: Any) -> None:
    await client.app[GATE].ledger.spend_log.flush()


async def test_books_balance_after_a_mixed_concurrent_run(start_gate, mock, tmp_path: Path) -> None:
    agents = {a: agent(50) for a in AGENTS}
    client = await start_gate(make_config(tmp_path, mock.base_url, agents))
    settled = Settlements(client)
    readers: list[asyncio.Task[Any]] = []

    async def read_to_end(resp: Any) -> bytes:
        async with resp:
            return await resp.read()

    async def leave_after_first_chunk(resp: Any) -> None:
        seen = b""
        while b'"content"' not in seen:
            seen += await resp.content.readany()
        resp.close()

    # Streams whose fault must be their own: each is started, and its fault taken by
    # the mock (its headers are in), before the next fault is queued.
    special = [
        (Fault(cut_after=2, chunk_delay=0.05), read_to_end),
        (Fault(cut_after=1, chunk_delay=0.05), read_to_end),
        (Fault(chunks=20, chunk_delay=0.02), leave_after_first_chunk),
        (Fault(chunks=20, chunk_delay=0.02), leave_after_first_chunk),
    ]
    for i, (fault, reader) in enumerate(special):
        mock.state.faults.append(fault)
        resp = await client.post(
            CHAT, json=chat(f"special {i}", stream=True), headers=headers_for(AGENTS[i % 3])
        )
        assert resp.status == 200
        assert not mock.state.faults
        readers.append(asyncio.create_task(reader(resp)))

    # Faults any request may take, streaming or not, while everything else runs at once.
    mock.state.faults.extend(
        [
            Fault(status=429, retry_after=0.01),
            Fault(status=429, retry_after=0.01),
            Fault(status=503),
            Fault(error_after=3),
            Fault(error_after=1),
            Fault(chunks=12, chunk_delay=0.01),
        ]
    )

    async def one(i: int) -> tuple[int, bytes]:
        stream = i % 2 == 0
        payload = chat(f"request {i} " + "x" * (i * 7), stream=stream)
        if stream and i % 4 == 0:
            payload["stream_options"] = {"include_usage": True}
        if i % 5 == 0:
            payload["model"] = "openai/gpt-5"
        async with client.post(CHAT, json=payload, headers=headers_for(AGENTS[i % 3])) as resp:
            return resp.status, await resp.read()

    results = await asyncio.gather(*(one(i) for i in range(36)))
    await asyncio.gather(*readers)
    await settled.wait(40)
    await flushed(client)

    assert [status for status, _ in results] == [200] * 36
    for i, (_, raw) in enumerate(results):
        if i % 2 == 0:
            assert sse_data(raw)[-1] == "[DONE]"

    records = spend_lines(tmp_path / "spend.jsonl")
    requests = [r for r in records if r["event"] == "request"]
    holds = [r for r in records if r["event"] == "hold"]
    assert len(requests) == 40
    # the sum of the books is what upstream charged, exactly
    books = sum((r["cost"] for r in requests), Decimal(0))
    assert abs(books - mock.state.total_charged()) <= CENT_NANO
    assert mock.state.total_charged() > 0
    # each request line is one generation's charge
    charged = {g: rec["total_cost"] for g, rec in mock.state.generations.items()}
    for r in requests:
        assert abs(r["cost"] - charged[r["generation_id"]]) <= CENT_NANO, r
    assert len({r["generation_id"] for r in requests}) == 40
    # every hold is settled by exactly one request line
    request_ids = Counter(r["request_id"] for r in requests)
    assert set(request_ids.values()) == {1}
    assert {h["request_id"] for h in holds} == set(request_ids)
    assert client.app[GATE].ledger.open_holds() == []
    # the paths taken
    sources = Counter(r["cost_source"] for r in requests)
    assert sources["generation"] == 2  # the cut streams
    statuses = Counter(r["status"] for r in requests)
    assert statuses[499] == 2
    assert statuses[502] >= 2  # two cuts (and the mid-stream errors)
    assert mock.state.chat_count() == 40 + 3  # the three retried answers

    # the admin view agrees with the lines, agent by agent
    per_agent: dict[str, Decimal] = defaultdict(Decimal)
    for r in requests:
        per_agent[r["agent_id"]] += r["cost"]
    view = await (await client.get("/api/spend")).json()
    for agent_id in AGENTS:
        state = view["agents"][agent_id]
        assert abs(Decimal(str(state["budget_spent"])) - per_agent[agent_id]) <= CENT_NANO
        assert state["budget_held"] == 0
        assert (
            abs(Decimal(str(state["budget_remaining"])) - (Decimal(50) - per_agent[agent_id]))
            <= CENT_NANO
        )


# --- upstream errors before the answer ---------------------------------------------


async def test_429_with_retry_after_twice_then_200(start_gate, mock, tmp_path: Path) -> None:
    retry = {"max_retries": 3, "backoff_seconds": 0.01, "max_backoff_seconds": 0.2}
    gate = await start_gate(make_config(tmp_path, mock.base_url, retry=retry))
    # Retry-After is honoured (0.15 s) and capped (30 s -> max_backoff_seconds, 0.2 s);
    # the plain backoff would wait 0.01 + 0.02 s.
    mock.state.faults.extend(
        [Fault(status=429, retry_after=0.15), Fault(status=429, retry_after=30)]
    )
    started = time.monotonic()
    resp = await gate.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"})
    body = await resp.json()
    elapsed = time.monotonic() - started
    assert resp.status == 200, body
    assert 0.3 <= elapsed < 5
    assert mock.state.chat_count() == 3
    assert len(mock.state.generations) == 1
    await flushed(gate)
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert line["status"] == 200
    assert line["cost"] == mock.state.total_charged() > 0
    spend = await (await gate.get("/api/spend/agent-1")).json()
    assert Decimal(str(spend["budget_spent"])) == mock.state.total_charged()


@pytest.mark.parametrize("stream", [False, True])
async def test_402_from_upstream_is_relayed_at_once(gate, mock, tmp_path: Path, stream) -> None:
    mock.state.faults.append(Fault(status=402))
    resp = await gate.post(CHAT, json=chat(stream=stream), headers={"X-Agent-ID": "agent-1"})
    body = await resp.json()
    assert resp.status == 402
    assert body["error"]["type"] == "upstream_credits_exhausted"
    assert body["error"]["code"] == 402
    assert "credits" in body["error"]["message"].lower()
    assert resp.headers["X-Execwall-Tier"] == "premium"
    assert mock.state.chat_count() == 1
    await flushed(gate)
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert (line["status"], line["cost"], line["stream"]) == (402, 0, stream)


async def test_402_with_retry_after_is_transient(gate, mock) -> None:
    mock.state.faults.append(Fault(status=402, retry_after=0.01))
    resp = await gate.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 200
    assert mock.state.chat_count() == 2


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
@pytest.mark.parametrize("stream", [False, True])
async def test_retryable_error_retried_then_relayed(
    gate, mock, tmp_path: Path, status: int, stream: bool
) -> None:
    mock.state.faults.extend(Fault(status=status, message=f"boom {status}") for _ in range(4))
    resp = await gate.post(CHAT, json=chat(stream=stream), headers={"X-Agent-ID": "agent-1"})
    body = await resp.json()
    assert resp.status == status
    assert body["error"]["code"] == status
    assert body["error"]["type"] == "upstream_error"
    assert body["error"]["message"] == f"boom {status}"
    assert mock.state.chat_count() == 1 + 3  # max_retries: 3
    assert not mock.state.faults
    await flushed(gate)
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert (line["status"], line["cost"]) == (status, 0)
    spend = await (await gate.get("/api/spend/agent-1")).json()
    assert (spend["budget_spent"], spend["budget_held"]) == (0, 0)


async def test_upstream_error_body_is_scrubbed_of_keys(gate, mock) -> None:
    leak = f"invalid key {UPSTREAM_KEY} (Bearer {UPSTREAM_KEY[:12]}...)"
    mock.state.faults.append(Fault(status=400, message=leak))
    resp = await gate.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"})
    text = await resp.text()
    assert resp.status == 400
    assert UPSTREAM_KEY not in text
    assert UPSTREAM_KEY[:12] not in text
    assert json.loads(text)["error"]["code"] == 400
