"""Streaming chat completions: bytes relayed as they arrive, and billed on every ending."""

from __future__ import annotations

import asyncio
import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp_sse_client import client as sse_client

from gate.context import GATE
from mock_upstream import Fault

from .support import (
    PREMIUM,
    UPSTREAM_KEY,
    Settlements,
    chat,
    load_prices,
    request_lines,
    sse_data,
)

CHAT = "/v1/chat/completions"
AGENT_1 = {"X-Agent-ID": "agent-1"}
_GEN_ID = re.compile(rb"gen-\d+-[0-9a-f]{20}")
_CREATED = re.compile(rb'"created":\d+')


def normalised(raw: bytes) -> bytes:
    """A stream with what differs between two generations (id, timestamp) blanked out."""
    return _CREATED.sub(b'"created":0', _GEN_ID.sub(b"gen-ID", raw))


async def mock_answer(gate: Any, mock: Any, fault: Fault | None = None) -> bytes:
    """What the mock sends for the body the gate sent it last, asked directly."""
    if fault is not None:
        mock.state.faults.append(fault)
    sent = mock.state.requests[-1]["body"]
    async with gate.session.post(
        mock.server.make_url("/api/v1/chat/completions"),
        data=json.dumps(sent, separators=(",", ":")).encode(),
        headers={"Authorization": f"Bearer {UPSTREAM_KEY}", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200
        return await resp.read()


async def stream(gate: Any, **fields: Any) -> tuple[Any, bytes]:
    resp = await gate.post(CHAT, json=chat(stream=True, **fields), headers=AGENT_1)
    raw = await resp.read()
    return resp, raw


def events(raw: bytes) -> list[bytes]:
    """Whole SSE events, each with its blank line."""
    return [block + b"\n\n" for block in raw.split(b"\n\n") if block]


async def lines_of(gate: Any, tmp_path: Path) -> list[dict[str, Any]]:
    await gate.app[GATE].ledger.spend_log.flush()
    return request_lines(tmp_path / "spend.jsonl")


# --- bytes unchanged ---------------------------------------------------------------


async def test_stream_bytes_relayed_unchanged(gate, mock, tmp_path: Path) -> None:
    resp, raw = await stream(gate)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["X-Execwall-Tier"] == "premium"
    assert resp.headers["X-Execwall-Models-Allowed"] == ",".join(PREMIUM)
    assert resp.headers["X-Execwall-Agent"] == "agent-1"
    sent = mock.state.requests[-1]["body"]
    assert sent["stream_options"] == {"include_usage": True}  # asked upstream anyway
    assert sent["usage"] == {"include": True}

    direct = await mock_answer(gate, mock)
    assert raw.startswith(b": OPENROUTER PROCESSING\n\n")
    # The usage-only chunk is the one event held back, since the client did not ask.
    upstream_events = events(normalised(direct))
    usage_events = [e for e in upstream_events if b'"usage"' in e]
    assert len(usage_events) == 1
    assert normalised(raw) == b"".join(e for e in upstream_events if e not in usage_events)
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    assert all("usage" not in json.loads(d) for d in data[:-1])

    [line] = await lines_of(gate, tmp_path)
    gen_id = json.loads(data[0])["id"]
    assert line["generation_id"] == gen_id
    assert line["cost"] == mock.state.generations[gen_id]["total_cost"]
    assert (line["status"], line["stream"], line["cost_source"]) == (200, True, "usage")
    assert line["completion_tokens"] == mock.state.generations[gen_id]["tokens_completion"]


async def test_usage_chunk_reaches_a_client_that_asked(gate, mock, tmp_path: Path) -> None:
    resp, raw = await stream(gate, stream_options={"include_usage": True})
    assert resp.status == 200
    direct = await mock_answer(gate, mock)
    ours, theirs = events(normalised(raw)), events(normalised(direct))
    assert len(ours) == len(theirs)
    for mine, upstream in zip(ours, theirs, strict=True):
        if b'"usage"' not in upstream:
            assert mine == upstream
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    usage_chunk = json.loads(data[-2])
    assert usage_chunk["choices"] == []
    charged = mock.state.generations[usage_chunk["id"]]["total_cost"]
    assert Decimal(str(usage_chunk["usage"]["cost"])) == charged
    info = usage_chunk["_execwall"]
    assert info["agent_id"] == "agent-1"
    assert info["tier"] == "premium"
    assert info["models_allowed"] == PREMIUM
    assert Decimal(str(info["cost"])) == charged
    assert Decimal(str(info["budget_remaining"])) == Decimal(50) - charged
    # everything else in the chunk is upstream's
    upstream_usage = json.loads(sse_data(direct)[-2])
    del usage_chunk["_execwall"]
    for key in ("id", "created"):
        usage_chunk.pop(key), upstream_usage.pop(key)
    assert usage_chunk == upstream_usage


async def test_chunks_arrive_while_upstream_is_still_sending(gate, mock) -> None:
    mock.state.faults.append(Fault(chunks=5, chunk_delay=0.2))
    resp = await gate.post(CHAT, json=chat(stream=True), headers=AGENT_1)
    assert resp.status == 200
    arrivals: list[tuple[float, bytes]] = []
    async for piece in resp.content.iter_any():
        arrivals.append((time.monotonic(), piece))
    raw = b"".join(piece for _, piece in arrivals)
    first_content = next(t for t, piece in arrivals if b'"content":"lorem' in piece)
    done = next(t for t, piece in arrivals if b"[DONE]" in piece)
    # upstream spends 4 x 0.2 s between its first and its last content chunk
    assert done - first_content >= 0.6, arrivals
    assert len([t for t, _ in arrivals if t < done - 0.3]) >= 2
    assert sse_data(raw)[-1] == "[DONE]"


async def test_very_long_line_relayed_intact(gate, mock) -> None:
    mock.state.faults.append(Fault(long_line=2_000_000, chunks=3))
    resp, raw = await stream(gate)
    assert resp.status == 200
    data = sse_data(raw)
    first = json.loads(data[0])
    assert first["choices"][0]["delta"]["content"] == "x" * 2_000_000
    assert data[-1] == "[DONE]"
    direct = await mock_answer(gate, mock, Fault(long_line=2_000_000, chunks=3))
    without_usage = b"".join(e for e in events(normalised(direct)) if b'"usage"' not in e)
    assert normalised(raw) == without_usage


async def test_keepalive_comments_are_relayed(gate, mock) -> None:
    mock.state.faults.append(Fault(first_delay=0.25, keepalive=0.1, chunks=2))
    resp, raw = await stream(gate)
    assert resp.status == 200
    comments = [e for e in events(raw) if e.startswith(b":")]
    assert len(comments) == 3  # the opening one and two keep-alives
    assert sse_data(raw)[-1] == "[DONE]"


# --- endings that are not [DONE] ---------------------------------------------------


async def test_mid_stream_error_is_relayed_and_billed(gate, mock, tmp_path: Path) -> None:
    mock.state.faults.append(Fault(error_after=2, message="Provider fell over"))
    resp, raw = await stream(gate)
    assert resp.status == 200  # the stream had started
    data = sse_data(raw)
    errors = [json.loads(d) for d in data if d != "[DONE]" and "error" in json.loads(d)]
    assert len(errors) == 1
    assert errors[0]["error"]["message"] == "Provider fell over"
    content = [json.loads(d) for d in data[:2]]
    assert all(c["choices"][0]["delta"]["content"] for c in content)

    [line] = await lines_of(gate, tmp_path)
    charged = mock.state.generations[errors[0]["id"]]["total_cost"]
    assert charged > 0
    assert line["cost"] == charged
    assert line["cost_source"] == "usage"
    assert line["status"] != 200 and 400 <= line["status"] < 600
    assert line["completion_tokens"] == 2


async def test_cut_stream_ends_with_an_error_and_is_billed_by_generation(
    gate, mock, tmp_path: Path
) -> None:
    mock.state.faults.append(Fault(cut_after=2))
    mock.state.generation_404_seconds = 0.05  # as OpenRouter: unknown for a moment
    settled = Settlements(gate)
    async with asyncio.timeout(10):  # never a hang
        resp, raw = await stream(gate)
    assert resp.status == 200
    data = sse_data(raw)
    assert "[DONE]" not in data
    last = json.loads(data[-1])
    assert last["error"]["code"] == 502
    assert last["error"]["type"] == "upstream_error"
    gen_id = json.loads(data[0])["id"]

    await settled.wait(1)
    [line] = await lines_of(gate, tmp_path)
    record = mock.state.generations[gen_id]
    assert record["cancelled"] is True
    assert line["cost"] == record["total_cost"] > 0
    assert line["cost_source"] == "generation"
    assert line["status"] == 502
    assert line["completion_tokens"] == 2


async def test_client_that_leaves_mid_stream_is_still_billed(gate, mock, tmp_path: Path) -> None:
    mock.state.faults.append(Fault(chunks=20, chunk_delay=0.05))
    settled = Settlements(gate)
    resp = await gate.post(CHAT, json=chat(stream=True), headers=AGENT_1)
    assert resp.status == 200
    seen = b""
    while b'"content":"lorem' not in seen:
        seen += await resp.content.readany()
    resp.close()  # the client is gone after its first chunk

    await settled.wait(1)
    [line] = await lines_of(gate, tmp_path)
    [record] = mock.state.generations.values()
    assert record["tokens_completion"] == 20  # the gate read on to the usage chunk
    assert line["cost"] == record["total_cost"] > 0
    assert line["cost_source"] == "usage"
    assert line["status"] == 499
    assert line["client_disconnected"] is True
    spend = await (await gate.get("/api/spend/agent-1")).json()
    assert Decimal(str(spend["budget_spent"])) == record["total_cost"]
    assert spend["budget_held"] == 0


async def test_response_starts_when_upstream_answers(gate, mock) -> None:
    mock.state.faults.append(Fault(first_delay=0.5, chunks=2))
    started = time.monotonic()
    resp = await gate.post(CHAT, json=chat(stream=True), headers=AGENT_1)
    headers_at = time.monotonic()
    assert resp.status == 200
    assert resp.headers["X-Execwall-Tier"] == "premium"
    seen = b""
    while b'"content"' not in seen:
        seen += await resp.content.readany()
    content_at = time.monotonic()
    await resp.read()
    assert headers_at - started < 0.4
    assert content_at - headers_at >= 0.3


async def test_stream_without_usage_is_billed_by_generation(gate, mock, tmp_path: Path) -> None:
    mock.state.faults.append(Fault(no_usage=True))
    settled = Settlements(gate)
    resp, raw = await stream(gate, stream_options={"include_usage": True})
    assert resp.status == 200
    assert sse_data(raw)[-1] == "[DONE]"
    await settled.wait(1)
    [line] = await lines_of(gate, tmp_path)
    [record] = mock.state.generations.values()
    assert line["cost"] == record["total_cost"] > 0
    assert (line["cost_source"], line["status"]) == ("generation", 200)


async def test_usage_without_cost_is_priced_from_the_table(gate, mock, tmp_path: Path) -> None:
    await load_prices(gate)
    mock.state.faults.append(Fault(no_cost=True))
    resp, _ = await stream(gate)
    assert resp.status == 200
    [line] = await lines_of(gate, tmp_path)
    [record] = mock.state.generations.values()
    assert line["cost"] == record["total_cost"] > 0
    assert line["cost_source"] == "price_table"


# --- an independent reader ---------------------------------------------------------


async def test_event_source_reads_one_stream_once(gate, mock) -> None:
    received: list[str] = []
    async with (
        asyncio.timeout(10),
        sse_client.EventSource(
            str(gate.make_url(CHAT)),
            option={"method": "POST"},
            session=gate.session,
            json=chat(stream=True, stream_options={"include_usage": True}),
            headers={"X-Agent-ID": "agent-1"},
        ) as source,
    ):
        async for event in source:
            received.append(event.data)
            if event.data == "[DONE]":
                break  # an EventSource would connect again: a second, billed request
    assert mock.state.chat_count() == 1
    assert received[-1] == "[DONE]"
    chunks = [json.loads(d) for d in received[:-1]]
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"])
    assert text.split() == [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
    ]
    assert chunks[-1]["_execwall"]["tier"] == "premium"
