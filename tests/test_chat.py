"""Non-streaming chat completions through a running gate to the mock upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gate.context import GATE
from mock_upstream import Fault

from .support import (
    ECONOMY,
    MID,
    PREMIUM,
    UPSTREAM_KEY,
    agent,
    chat,
    load_prices,
    make_config,
    request_lines,
)

CHAT = "/v1/chat/completions"
AGENT_1 = {"X-Agent-ID": "agent-1"}
ADMIN = {"Authorization": "Bearer t0k"}


async def lines_of(client: Any, tmp_path: Path) -> list[dict[str, Any]]:
    await client.app[GATE].ledger.spend_log.flush()
    return request_lines(tmp_path / "spend.jsonl")


# --- the answer --------------------------------------------------------------------


async def test_answer_carries_execwall_and_headers(gate, mock, tmp_path: Path) -> None:
    resp = await gate.post(CHAT, json=chat(model="openai/gpt-5"), headers=AGENT_1)
    body = await resp.json()
    assert resp.status == 200, body
    assert resp.headers["X-Execwall-Agent"] == "agent-1"
    assert resp.headers["X-Execwall-Tier"] == "premium"
    assert resp.headers["X-Execwall-Models-Allowed"] == ",".join(PREMIUM)

    generation = mock.state.generations[body["id"]]
    charged = generation["total_cost"]
    assert charged > 0
    assert Decimal(str(body["usage"]["cost"])) == charged
    info = body["_execwall"]
    assert info["agent_id"] == "agent-1"
    assert Decimal(str(info["cost"])) == charged
    assert Decimal(str(info["budget_remaining"])) == Decimal(50) - charged
    assert info["models_allowed"] == PREMIUM
    assert info["tier"] == "premium"
    # the upstream answer itself is intact
    assert body["model"] == "openai/gpt-5"
    assert body["choices"][0]["message"]["content"]

    sent = mock.state.requests[-1]["body"]
    assert sent["model"] == "openai/gpt-5"  # the client's own model, allowed, comes first
    assert sent["models"] == ["openai/gpt-5", PREMIUM[0], PREMIUM[2]]
    assert sent["usage"] == {"include": True}

    [line] = await lines_of(gate, tmp_path)
    assert line["status"] == 200
    assert line["cost"] == charged
    assert line["cost_source"] == "usage"
    assert line["generation_id"] == body["id"]
    assert line["model"] == "openai/gpt-5"
    assert (line["prompt_tokens"], line["completion_tokens"]) == (
        generation["tokens_prompt"],
        generation["tokens_completion"],
    )
    spend = await (await gate.get("/api/spend/agent-1")).json()
    assert Decimal(str(spend["budget_spent"])) == charged


@pytest.mark.parametrize("model", ["openai/gpt-4o", "openai/gpt-5:online", "openai/gpt-5-mini"])
async def test_model_outside_the_tier_is_never_sent(gate, mock, model: str) -> None:
    resp = await gate.post(CHAT, json=chat(model=model, models=[model]), headers=AGENT_1)
    body = await resp.json()
    assert resp.status == 200, body
    sent = mock.state.requests[-1]["body"]
    assert sent["model"] == PREMIUM[0]
    assert sent["models"] == PREMIUM
    assert model not in json.dumps(sent)
    assert body["model"] in PREMIUM


async def test_max_tokens_clamped_at_the_edge_of_a_capped_budget(
    start_gate, mock, tmp_path: Path
) -> None:
    cfg = make_config(
        tmp_path, mock.base_url, {"agent-1": agent(budget_total=1, budget_spent=0.995)}
    )
    client = await start_gate(cfg)
    await load_prices(client)
    resp = await client.post(CHAT, json=chat(max_tokens=100_000), headers=AGENT_1)
    body = await resp.json()
    assert resp.status == 200, body
    sent = mock.state.requests[-1]["body"]
    assert sent["models"] == ECONOMY  # 0.5 % left
    assert 1 <= sent["max_tokens"] < 100_000
    assert body["_execwall"]["max_tokens_clamped"] is True
    assert body["_execwall"]["max_tokens"] == sent["max_tokens"]


# --- who is calling ----------------------------------------------------------------


async def test_missing_agent_id_is_default(gate, mock, tmp_path: Path) -> None:
    resp = await gate.post(CHAT, json=chat())
    body = await resp.json()
    assert resp.status == 200, body
    assert resp.headers["X-Execwall-Agent"] == "default"
    assert body["_execwall"]["agent_id"] == "default"
    [line] = await lines_of(gate, tmp_path)
    assert line["agent_id"] == "default"


async def test_unknown_agent_is_403(gate, mock, tmp_path: Path) -> None:
    resp = await gate.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-9"})
    body = await resp.json()
    assert resp.status == 403
    assert body["error"]["code"] == 403
    assert mock.state.chat_count() == 0
    assert await lines_of(gate, tmp_path) == []  # counted into the next `refusals` line
    [reason] = gate.app[GATE].ledger.refusals.take("now")["reasons"]
    assert (reason["status"], reason["count"]) == (403, 1)


@pytest.mark.parametrize("agent_id", ["a" * 65, "agent 1", "agent/1", "ágent", "a\tb", "a:b"])
async def test_bad_agent_id_is_400(gate, mock, tmp_path: Path, agent_id: str) -> None:
    resp = await gate.post(CHAT, json=chat(), headers={"X-Agent-ID": agent_id})
    body = await resp.json()
    assert resp.status == 400, body
    assert "X-Agent-ID" in body["error"]["message"]
    assert mock.state.chat_count() == 0
    assert await lines_of(gate, tmp_path) == []  # counted into the next `refusals` line
    counted = gate.app[GATE].ledger.refusals.take("now")
    assert counted["reasons"] == [{"status": 400, "reason": "invalid X-Agent-ID", "count": 1}]
    assert counted["agent_ids"] == {}  # a malformed id is never written


async def test_agent_id_of_64_characters_is_fine(start_gate, mock, tmp_path: Path) -> None:
    long_id = "a" * 64
    client = await start_gate(make_config(tmp_path, mock.base_url, {long_id: agent()}))
    resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": long_id})
    assert resp.status == 200
    assert resp.headers["X-Execwall-Agent"] == long_id


@pytest.mark.parametrize("raw_id", [b"agent\r-1", b"agent\n-1", b"agent-1\r\n x"])
async def test_agent_id_with_cr_or_lf_never_reaches_upstream(gate, mock, raw_id: bytes) -> None:
    """CR/LF cannot be sent through a compliant client; on a raw socket aiohttp's
    HTTP parser refuses the request before the gate sees it."""
    body = json.dumps(chat()).encode()
    host, port = gate.server.host, gate.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-Agent-ID: "
        + raw_id
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0]
    assert mock.state.chat_count() == 0


# --- keys --------------------------------------------------------------------------

AGENT_KEY = "gate-key-of-agent-one-0123456789"


async def test_per_agent_key(start_gate, mock, tmp_path: Path) -> None:
    agents = {"agent-1": agent(api_key=AGENT_KEY), "default": agent(5)}
    client = await start_gate(make_config(tmp_path, mock.base_url, agents))
    mock.state.expected_key = UPSTREAM_KEY  # only the gate's own key passes upstream

    for auth in (None, "Bearer wrong-key", f"Basic {AGENT_KEY}", f"Bearer {AGENT_KEY}x"):
        headers = dict(AGENT_1)
        if auth is not None:
            headers["Authorization"] = auth
        resp = await client.post(CHAT, json=chat(), headers=headers)
        body = await resp.json()
        assert resp.status == 401, (auth, body)
        assert body["error"]["code"] == 401
        assert AGENT_KEY not in json.dumps(body)
    assert mock.state.chat_count() == 0

    resp = await client.post(
        CHAT, json=chat(), headers={**AGENT_1, "Authorization": f"Bearer {AGENT_KEY}"}
    )
    body = await resp.json()
    assert resp.status == 200, body  # the mock accepted the gate's key, not the agent's
    assert mock.state.chat_count() == 1
    # an agent without a key of its own needs none
    resp = await client.post(CHAT, json=chat())
    assert resp.status == 200
    lines = await lines_of(client, tmp_path)
    assert [line["status"] for line in lines] == [200, 200]  # the 401s: counted only
    assert client.app[GATE].ledger.refusals.count == 4


async def test_pass_through_sends_the_clients_authorization(
    start_gate, mock, tmp_path: Path
) -> None:
    client_key = "sk-or-v1-the-clients-own-key-42"
    cfg = make_config(tmp_path, mock.base_url, openrouter={"api_key": ""})
    assert cfg.openrouter.api_key is None
    client = await start_gate(cfg)
    mock.state.expected_key = client_key

    resp = await client.post(CHAT, json=chat(), headers=AGENT_1)
    assert resp.status == 401  # nothing to pass through: refused at the gate
    assert mock.state.chat_count() == 0

    resp = await client.post(
        CHAT, json=chat(), headers={**AGENT_1, "Authorization": f"Bearer {client_key}"}
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert mock.state.chat_count() == 1

    resp = await client.post(
        CHAT, json=chat(), headers={**AGENT_1, "Authorization": "Bearer sk-or-v1-another-key"}
    )
    body = await resp.json()
    assert resp.status == 401  # upstream refused that key, and the gate relayed it
    assert mock.state.chat_count() == 2
    assert "sk-or-v1-another-key" not in json.dumps(body)


# --- the body ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"a": "\xc3\x28"}', "UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"null", "JSON object"),
        (b'{"messages": "hi"}', "messages"),
        (b"[" * 100_000, "nested"),
        # not JSON (RFC 8259), though Python's json reads it: never forwarded upstream
        (b'{"model": "openai/gpt-5", "messages": [], "temperature": NaN}', "not valid JSON"),
    ],
)
async def test_unsound_body_is_400(gate, mock, tmp_path: Path, raw: bytes, message: str) -> None:
    resp = await gate.post(CHAT, data=raw, headers={**AGENT_1, "Content-Type": "application/json"})
    body = await resp.json()
    assert resp.status == 400, body
    assert message in body["error"]["message"]
    assert mock.state.chat_count() == 0
    [line] = await lines_of(gate, tmp_path)
    assert (line["status"], line["cost"], line["agent_id"]) == (400, 0, "agent-1")


async def test_half_an_emoji_in_a_body_is_forwarded_as_sent(gate, mock) -> None:
    """A lone surrogate escape (a model's answer cut mid-emoji, sent back as history) is
    JSON as `json` and JavaScript read it: forwarded, not refused."""
    raw = b'{"messages": [{"role": "user", "content": "cut \\ud83d"}], "max_tokens": 8}'
    resp = await gate.post(CHAT, data=raw, headers={**AGENT_1, "Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert mock.state.requests[-1]["body"]["messages"][0]["content"] == "cut \ud83d"


LIMIT = 2000


async def small_limit_gate(start_gate, mock, tmp_path: Path) -> Any:
    return await start_gate(make_config(tmp_path, mock.base_url, limits={"max_body_bytes": LIMIT}))


async def test_body_too_large_by_content_length(start_gate, mock, tmp_path: Path) -> None:
    client = await small_limit_gate(start_gate, mock, tmp_path)
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"messages": ['
        await release.wait()  # the rest would come only after the answer
        yield b"]}"

    # The declared length alone must decide: the gate answers before the body is sent.
    headers = {**AGENT_1, "Content-Type": "application/json", "Content-Length": str(LIMIT + 1)}
    async with asyncio.timeout(5):
        resp = await client.post(CHAT, data=slow_body(), headers=headers)
        body = await resp.json()
    release.set()
    assert resp.status == 413, body
    assert body["error"]["code"] == 413
    assert mock.state.chat_count() == 0
    [line] = await lines_of(client, tmp_path)
    assert (line["status"], line["cost"]) == (413, 0)
    resp.close()


async def test_chunked_body_cut_as_soon_as_it_passes_the_limit(
    start_gate, mock, tmp_path: Path
) -> None:
    client = await small_limit_gate(start_gate, mock, tmp_path)
    release = asyncio.Event()

    async def endless_body() -> AsyncIterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "' + b"x" * (LIMIT // 2)
        yield b"x" * LIMIT  # past the limit now
        await release.wait()  # a gate that read to the end would wait here forever
        yield b'"}]}'

    async with asyncio.timeout(5):
        resp = await client.post(
            CHAT, data=endless_body(), headers={**AGENT_1, "Content-Type": "application/json"}
        )
        body = await resp.json()
    release.set()
    assert resp.status == 413, body
    assert mock.state.chat_count() == 0
    [line] = await lines_of(client, tmp_path)
    assert (line["status"], line["cost"]) == (413, 0)
    resp.close()


async def test_body_just_under_the_limit_passes(start_gate, mock, tmp_path: Path) -> None:
    client = await small_limit_gate(start_gate, mock, tmp_path)
    payload = chat("x")
    size = len(json.dumps(payload).encode())
    payload = chat("x" * (LIMIT - size + 1))
    raw = json.dumps(payload).encode()
    assert len(raw) == LIMIT
    resp = await client.post(
        CHAT, data=raw, headers={**AGENT_1, "Content-Type": "application/json"}
    )
    assert resp.status == 200


# --- refusals are all on the books -------------------------------------------------


async def test_every_refusal_of_a_known_agent_writes_a_request_line(
    start_gate, mock, tmp_path: Path
) -> None:
    client = await start_gate(make_config(tmp_path, mock.base_url, admin_token="t0k"))
    await client.post("/api/budget/agent-1", json={"budget_spent": 50}, headers=ADMIN)
    attempts = [
        ({"X-Agent-ID": "nobody"}, chat(), 403),
        ({"X-Agent-ID": "bad id"}, chat(), 400),
        (AGENT_1, {"messages": []}, 400),
        (AGENT_1, chat(), 402),
        ({}, chat(stream=True), 200),
    ]
    for headers, payload, status in attempts:
        resp = await client.post(CHAT, json=payload, headers=headers)
        await resp.read()
        assert resp.status == status
    lines = await lines_of(client, tmp_path)
    assert [(r["status"], r["stream"]) for r in lines] == [
        (400, False),
        (402, False),
        (200, True),
    ]  # the unknown agent and the malformed id: counted into the next `refusals` line
    assert client.app[GATE].ledger.refusals.count == 2
    for line in lines[:2]:
        assert line["cost"] == 0
        assert line["cost_source"] == "none"
        assert line["request_id"].startswith("req-")
        assert line["ts"].endswith("Z")
    assert lines[1]["agent_id"] == "agent-1"
    assert mock.state.chat_count() == 1


# --- GET /v1/models ----------------------------------------------------------------


async def test_models_lists_the_current_tier(start_gate, mock, tmp_path: Path) -> None:
    client = await start_gate(make_config(tmp_path, mock.base_url, admin_token="t0k"))
    resp = await client.get("/v1/models", headers=AGENT_1)
    body = await resp.json()
    assert resp.status == 200
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == PREMIUM
    assert all(m["object"] == "model" for m in body["data"])

    await client.post("/api/budget/agent-1", json={"budget_spent": 20}, headers=ADMIN)
    body = await (await client.get("/v1/models", headers=AGENT_1)).json()
    assert [m["id"] for m in body["data"]] == MID

    await client.post("/api/budget/agent-1", json={"budget_spent": 50}, headers=ADMIN)
    body = await (await client.get("/v1/models", headers=AGENT_1)).json()
    assert body["data"] == []  # nothing may be used now

    resp = await client.get("/v1/models", headers={"X-Agent-ID": "nobody"})
    assert resp.status == 403
    assert mock.state.chat_count() == 0


async def test_answer_without_usage_is_billed_by_generation(gate, mock, tmp_path: Path) -> None:
    mock.state.faults.append(Fault(no_usage=True))
    resp = await gate.post(CHAT, json=chat(), headers=AGENT_1)
    body = await resp.json()
    assert resp.status == 200, body
    assert "usage" not in body
    charged = mock.state.generations[body["id"]]["total_cost"]
    assert Decimal(str(body["_execwall"]["cost"])) == charged
    [line] = await lines_of(gate, tmp_path)
    assert (line["cost"], line["cost_source"]) == (charged, "generation")
    assert line["completion_tokens"] == mock.state.generations[body["id"]]["tokens_completion"]


SPEC_FIELDS = {
    "ts",
    "event",
    "request_id",
    "generation_id",
    "agent_id",
    "model",
    "tier",
    "models_allowed",
    "stream",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "cost_source",
    "budget_remaining",
    "latency_ms",
}


async def test_every_request_line_has_every_spec_field(gate, mock, tmp_path) -> None:
    agent_1 = {"X-Agent-ID": "agent-1"}
    assert (await gate.post(CHAT, json=chat(), headers=agent_1)).status == 200
    resp = await gate.post(CHAT, json=chat(stream=True), headers=agent_1)
    await resp.read()
    assert (await gate.post(CHAT, json=chat(), headers={"X-Agent-ID": "nobody"})).status == 403
    json_type = {**agent_1, "Content-Type": "application/json"}
    assert (await gate.post(CHAT, data=b"[]", headers=json_type)).status == 400
    lines = await lines_of(gate, tmp_path)
    assert len(lines) == 3  # the unknown agent's 403: counted into a `refusals` line
    for line in lines:
        assert SPEC_FIELDS <= set(line), SPEC_FIELDS - set(line)
    refused = [r for r in lines if r["status"] != 200]
    assert refused[0]["budget_remaining"] is not None  # agent-1's, as for any line
    assert [r["api"] for r in lines] == ["chat"] * 3  # served, streamed and refused alike
