"""The OpenRouter look-alike: shapes, billing, faults, control endpoints, the CLI."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections.abc import Awaitable, Callable
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gate.core.calibrate import DEFAULT_FACTOR
from gate.core.prompt import estimate_prompt
from mock_upstream import MOCK_STATE, PRICES, Fault, MockState, create_app
from mock_upstream.prices import count_prompt_tokens
from mock_upstream.state import _FAULT_KINDS

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

KEY = "sk-or-v1-SECRETSECRETSECRET"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = "/api/v1/chat/completions"
MODEL = "openai/gpt-5-mini"
MESSAGES = [{"role": "user", "content": "Say hello to the gate."}]

CLOCK_TICK = 0.002  # uvloop's loop.time() counts whole milliseconds


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, **extra}


def parse_sse(text: str) -> tuple[list[str], list[Any]]:
    """(comments, data payloads) of a whole SSE body; `[DONE]` stays a string."""
    assert text.endswith("\n\n") or not text
    comments: list[str] = []
    data: list[Any] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        assert "\n" not in block, block
        if block.startswith(":"):
            comments.append(block)
        else:
            assert block.startswith("data: "), block
            payload = block[len("data: ") :]
            data.append(payload if payload == "[DONE]" else json.loads(payload))
    return comments, data


def price_cost(model: str, prompt: int, completion: int) -> Decimal:
    prompt_price, completion_price = PRICES[model]
    return prompt_price * prompt + completion_price * completion


@pytest.fixture
def state() -> MockState:
    return MockState()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "openrouter_requests.log"


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, state: MockState, log_path: Path
) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(state, request_log=log_path))


async def post_chat(
    client: TestClient[Any, Any], body: dict[str, Any], path: str = CHAT
) -> aiohttp.ClientResponse:
    return await client.post(path, json=body, headers=AUTH)


# --- models, prices, tokens -------------------------------------------------------------


async def test_models_lists_the_price_table(client: TestClient[Any, Any]) -> None:
    for path in ("/api/v1/models", "/v1/models"):
        resp = await client.get(path)
        assert resp.status == 200
        data = (await resp.json())["data"]
        listed = {m["id"]: m for m in data}
        assert set(listed) == set(PRICES)
        sonnet = listed["anthropic/claude-sonnet-4.5"]
        assert sonnet["pricing"] == {
            "prompt": "0.000003",
            "completion": "0.000015",
            "request": "0",
            "image": "0",
        }
        assert sonnet["context_length"] > 0 and sonnet["name"]
    for model, (prompt, completion) in PRICES.items():
        assert Decimal(listed[model]["pricing"]["prompt"]) == prompt
        assert Decimal(listed[model]["pricing"]["completion"]) == completion


def test_price_table_has_the_gate_default_models() -> None:
    assert PRICES["anthropic/claude-sonnet-4.5"] == (Decimal("0.000003"), Decimal("0.000015"))
    assert PRICES["mistralai/mistral-small-3.2-24b-instruct"] == (
        Decimal("0.00000005"),
        Decimal("0.0000001"),
    )
    for model in ("openai/gpt-5:online", "openai/gpt-4o", "deepseek/deepseek-chat-v3.1"):
        assert model in PRICES


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "user", "content": "x"}],
        [{"role": "user", "content": "日本語のテキスト" * 50}],
        [{"role": "user", "content": "emoji 🎉" * 30, "name": "n"}],
        [{"role": "system", "content": "a" * 10_000}, {"role": "user", "content": "b"}],
    ],
)
def test_prompt_tokens_are_four_bytes_of_json_and_a_fresh_gate_holds_them(
    messages: list[Any],
) -> None:
    compact = json.dumps(messages, ensure_ascii=False, separators=(",", ":")).encode()
    tokens = count_prompt_tokens(messages)
    assert tokens == -(-len(compact) // 4) == count_prompt_tokens(messages)
    # uncapped, as a provider bills; a gate with no model calibrated yet holds at least it
    assert tokens <= math.ceil(estimate_prompt({"messages": messages}) * DEFAULT_FACTOR)


def test_fault_fields_can_all_be_set_from_json() -> None:
    assert set(_FAULT_KINDS) == {f.name for f in fields(Fault)}
    assert Fault.from_dict({"status": 429, "retry_after": 1, "no_cost": True}) == Fault(
        status=429, retry_after=1.0, no_cost=True
    )
    bad_faults: list[Any] = [
        {"nope": 1},
        {"status": "429"},
        {"status": 200},
        {"chunks": True},
        {"chunk_delay": -1},
        ["not", "an", "object"],
    ]
    for bad in bad_faults:
        with pytest.raises(ValueError):
            Fault.from_dict(bad)


# --- non-streaming ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, "/v1/chat/completions"])
async def test_non_stream_shape_and_cost(
    client: TestClient[Any, Any], state: MockState, path: str
) -> None:
    resp = await post_chat(client, chat_body(usage={"include": True}), path)
    assert resp.status == 200
    body = await resp.json()
    assert body["id"].startswith("gen-") and resp.headers["X-Generation-Id"] == body["id"]
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL and body["provider"] == "OpenAI"
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == state.default_chunks
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == state.default_chunks
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["is_byok"] is False
    assert {"prompt_tokens_details", "completion_tokens_details", "cost_details"} <= set(usage)
    expected = price_cost(MODEL, usage["prompt_tokens"], usage["completion_tokens"])
    assert usage["cost"] == pytest.approx(float(expected), abs=1e-12)
    assert state.total_charged() == expected
    record = state.generations[body["id"]]
    assert record["streamed"] is False and record["cancelled"] is False


async def test_non_stream_reports_cost_only_when_asked(
    client: TestClient[Any, Any], state: MockState
) -> None:
    body = await (await post_chat(client, chat_body())).json()
    assert "cost" not in body["usage"] and body["usage"]["completion_tokens"] == 8
    assert state.total_charged() > 0  # billed all the same


async def test_max_tokens_caps_the_completion(client: TestClient[Any, Any]) -> None:
    body = await (await post_chat(client, chat_body(max_tokens=3))).json()
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["finish_reason"] == "length"


async def test_models_list_picks_the_first_priced_model(client: TestClient[Any, Any]) -> None:
    body = {"models": ["nope/unknown", "anthropic/claude-haiku-4.5"], "messages": MESSAGES}
    answer = await (await post_chat(client, body)).json()
    assert answer["model"] == "anthropic/claude-haiku-4.5"
    assert answer["provider"] == "Anthropic"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "acme/nope", "messages": MESSAGES}, "acme/nope is not a valid model ID"),
        ({"messages": MESSAGES}, "No models provided"),
        ({"models": [MODEL] * 4, "messages": MESSAGES}, "3 items or fewer"),
        (chat_body(max_tokens="ten"), "max_tokens"),
    ],
)
async def test_bad_requests_get_openrouter_400s(
    client: TestClient[Any, Any], state: MockState, body: dict[str, Any], message: str
) -> None:
    resp = await post_chat(client, body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == 400 and message in error["message"]
    assert state.generations == {}


async def test_authorization_is_required(client: TestClient[Any, Any], state: MockState) -> None:
    resp = await client.post(CHAT, json=chat_body())
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == 401
    assert (await client.get("/api/v1/key")).status == 401
    state.expected_key = "right"
    resp = await client.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    resp = await client.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer right"})
    assert resp.status == 200
    assert state.chat_count() == 3


async def test_non_json_body_is_a_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post(CHAT, data=b"[1, 2", headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == 400


async def test_unknown_route_has_openrouter_error_shape(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/nothing-here")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == 404


# --- streaming --------------------------------------------------------------------------


async def stream_chat(
    client: TestClient[Any, Any], **extra: Any
) -> tuple[aiohttp.ClientResponse, list[str], list[Any]]:
    resp = await post_chat(client, chat_body(stream=True, **extra))
    assert resp.status == 200
    comments, data = parse_sse(await resp.text())
    return resp, comments, data


async def test_stream_shape_with_usage(client: TestClient[Any, Any], state: MockState) -> None:
    resp, comments, data = await stream_chat(client, usage={"include": True})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert comments == [": OPENROUTER PROCESSING"]
    *content, stop, usage_chunk, done = data
    assert done == "[DONE]"
    assert len(content) == state.default_chunks
    for chunk in content:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"] == resp.headers["X-Generation-Id"]
        assert chunk["model"] == MODEL and chunk["provider"] == "OpenAI"
        (choice,) = chunk["choices"]
        assert choice["delta"]["role"] == "assistant" and choice["delta"]["content"]
        assert choice["finish_reason"] is None and choice["logprobs"] is None
    assert stop["choices"][0]["finish_reason"] == "stop"
    assert stop["choices"][0]["delta"]["content"] == ""
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == state.default_chunks
    expected = price_cost(MODEL, usage["prompt_tokens"], usage["completion_tokens"])
    assert usage["cost"] == pytest.approx(float(expected), abs=1e-12)
    assert state.total_charged() == expected
    assert state.generations[usage_chunk["id"]]["streamed"] is True


async def test_stream_usage_only_when_asked(client: TestClient[Any, Any]) -> None:
    _, _, data = await stream_chat(client)
    assert all("usage" not in d for d in data[:-1]) and data[-1] == "[DONE]"
    _, _, data = await stream_chat(client, stream_options={"include_usage": True})
    assert "cost" in data[-2]["usage"]


async def test_stream_writes_each_chunk_separately(client: TestClient[Any, Any]) -> None:
    await client.post("/_mock/faults", json=[{"chunks": 3, "chunk_delay": 0.05}])
    resp = await post_chat(client, chat_body(stream=True))
    arrivals: list[bytes] = []
    async for piece in resp.content.iter_any():
        arrivals.append(piece)
    # three content chunks 50 ms apart cannot arrive in fewer than three reads
    assert len(arrivals) >= 3


# --- faults -----------------------------------------------------------------------------


async def test_status_fault_with_retry_after_then_normal(
    client: TestClient[Any, Any], state: MockState
) -> None:
    state.faults.append(Fault(status=429, retry_after=2, message="slow down " + KEY[-6:]))
    resp = await post_chat(client, chat_body())
    assert resp.status == 429 and resp.headers["Retry-After"] == "2"
    assert await resp.json() == {"error": {"code": 429, "message": "slow down " + KEY[-6:]}}
    assert (await post_chat(client, chat_body())).status == 200
    assert state.chat_count() == 2 and len(state.generations) == 1


async def test_faults_are_fifo_and_default_messages(
    client: TestClient[Any, Any], state: MockState
) -> None:
    state.faults.extend([Fault(status=503), Fault(status=502)])
    first = await post_chat(client, chat_body())
    second = await post_chat(client, chat_body())
    assert (first.status, second.status) == (503, 502)
    assert "Retry-After" not in first.headers
    assert (await first.json())["error"]["message"]


async def test_cut_after_cuts_the_stream_and_bills_what_was_sent(
    client: TestClient[Any, Any], state: MockState
) -> None:
    state.faults.append(Fault(cut_after=3, chunks=10))
    resp = await post_chat(client, chat_body(stream=True, usage={"include": True}))
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for piece in resp.content.iter_any():
            received += piece
    _, data = parse_sse(received.decode())
    assert len(data) == 3 and "[DONE]" not in data
    (record,) = state.generations.values()
    assert record["tokens_completion"] == 3 and record["cancelled"] is True
    assert state.total_charged() == price_cost(MODEL, record["tokens_prompt"], 3)


async def test_cut_after_without_stream_drops_the_connection(
    client: TestClient[Any, Any], state: MockState
) -> None:
    state.faults.append(Fault(cut_after=2))
    with pytest.raises(aiohttp.ClientError):
        await post_chat(client, chat_body())
    (record,) = state.generations.values()
    assert record["tokens_completion"] == 2 and record["cancelled"] is True


async def test_error_after_sends_error_event_then_usage(
    client: TestClient[Any, Any], state: MockState
) -> None:
    state.faults.append(Fault(error_after=2, message="provider fell over"))
    _, _, data = await stream_chat(client, usage={"include": True})
    *content, error, usage_chunk, done = data
    assert len(content) == 2 and done == "[DONE]"
    assert error["error"]["message"] == "provider fell over"
    assert error["choices"][0]["finish_reason"] == "error"
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == 2
    assert usage["cost"] == pytest.approx(float(state.total_charged()), abs=1e-12)
    assert state.generations[usage_chunk["id"]]["cancelled"] is False


async def test_error_after_without_stream(client: TestClient[Any, Any], state: MockState) -> None:
    state.faults.append(Fault(error_after=1))
    resp = await post_chat(client, chat_body(usage={"include": True}))
    assert resp.status == 200
    body = await resp.json()
    assert body["error"]["message"] and body["choices"][0]["finish_reason"] == "error"
    assert body["usage"]["completion_tokens"] == 1


async def test_no_cost_and_no_usage(client: TestClient[Any, Any], state: MockState) -> None:
    state.faults.extend([Fault(no_cost=True), Fault(no_usage=True), Fault(no_cost=True)])
    _, _, data = await stream_chat(client, usage={"include": True})
    assert "cost" not in data[-2]["usage"] and data[-2]["usage"]["completion_tokens"] == 8
    _, _, data = await stream_chat(client, usage={"include": True})
    assert all("usage" not in d for d in data[:-1])
    body = await (await post_chat(client, chat_body(usage={"include": True}))).json()
    assert "cost" not in body["usage"]
    assert len(state.generations) == 3  # all billed, even when not reported


async def test_keepalive_comments_during_first_delay(
    client: TestClient[Any, Any], state: MockState
) -> None:
    state.faults.append(Fault(first_delay=0.35, keepalive=0.1, chunks=2))
    _, comments, data = await stream_chat(client)
    assert comments == [": OPENROUTER PROCESSING"] * 4  # the opening one plus three
    assert len(data) == 4


async def test_stall_goes_silent_mid_stream_with_keepalives(
    client: TestClient[Any, Any], state: MockState
) -> None:
    state.faults.append(Fault(chunks=4, stall_after=2, stall=0.35, keepalive=0.1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await post_chat(client, chat_body(stream=True))
    blocks = [b for b in (await resp.text()).split("\n\n") if b]
    assert loop.time() - started >= 0.35 - CLOCK_TICK
    kinds = ["comment" if b.startswith(":") else "data" for b in blocks]
    # opening comment, two content chunks, three keep-alives, the rest of the answer
    assert kinds[:6] == ["comment", "data", "data", "comment", "comment", "comment"]
    assert kinds[6:] == ["data"] * (len(kinds) - 6)
    assert blocks[-1] == "data: [DONE]"
    (record,) = state.generations.values()
    assert record["tokens_completion"] == 4 and not record["cancelled"]


async def test_stall_after_the_last_chunk_waits_before_the_end(
    client: TestClient[Any, Any], state: MockState
) -> None:
    state.faults.append(Fault(chunks=2, stall_after=5, stall=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, comments, data = await stream_chat(client)
    assert loop.time() - started >= 0.2 - CLOCK_TICK
    assert comments == [": OPENROUTER PROCESSING"] and data[-1] == "[DONE]"


@pytest.mark.parametrize(
    "fault",
    [
        Fault(chunks=4, stall_after=2, stall=60),
        Fault(chunks=4, first_delay=60),
        Fault(chunks=4, chunk_delay=60),
    ],
    ids=["stall", "first_delay", "chunk_delay"],
)
async def test_a_client_leaving_a_silent_stream_is_billed_at_once(
    client: TestClient[Any, Any], state: MockState, fault: Fault
) -> None:
    state.faults.append(fault)
    resp = await post_chat(client, chat_body(stream=True))
    await resp.content.readuntil(b": OPENROUTER PROCESSING\n\n")
    sent = 2 if fault.stall_after else (0 if fault.first_delay else 1)
    for _ in range(sent):
        await resp.content.readuntil(b"\n\n")
    resp.close()
    for _ in range(500):  # billed within moments, not when the 60 s silence ends
        if state.generations:
            break
        await asyncio.sleep(0.01)
    (record,) = state.generations.values()
    assert record["cancelled"] is True and record["tokens_completion"] == sent
    assert state.total_charged() == price_cost(MODEL, record["tokens_prompt"], sent)


async def test_long_line(client: TestClient[Any, Any], state: MockState) -> None:
    state.faults.append(Fault(long_line=200_000, chunks=2))
    _, _, data = await stream_chat(client)
    assert len(data[0]["choices"][0]["delta"]["content"]) == 200_000


async def test_answer_model_and_hang(client: TestClient[Any, Any], state: MockState) -> None:
    state.faults.append(Fault(answer_model="openai/gpt-4o", hang=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = await (await post_chat(client, chat_body(usage={"include": True}))).json()
    assert loop.time() - started >= 0.2 - CLOCK_TICK
    assert body["model"] == "openai/gpt-4o"
    usage = body["usage"]
    expected = price_cost("openai/gpt-4o", usage["prompt_tokens"], usage["completion_tokens"])
    assert state.total_charged() == expected


async def test_client_disconnect_mid_stream_is_billed(
    client: TestClient[Any, Any], state: MockState
) -> None:
    state.faults.append(Fault(chunks=50, chunk_delay=0.02))
    resp = await post_chat(client, chat_body(stream=True))
    await resp.content.readuntil(b"chat.completion.chunk")
    resp.close()
    for _ in range(200):
        if state.generations:
            break
        await asyncio.sleep(0.01)
    (record,) = state.generations.values()
    assert record["cancelled"] is True and 1 <= record["tokens_completion"] < 50
    expected = price_cost(MODEL, record["tokens_prompt"], record["tokens_completion"])
    assert state.total_charged() == expected


async def test_total_charged_matches_reported_costs_plus_cut_ones(
    client: TestClient[Any, Any], state: MockState
) -> None:
    state.faults.extend([Fault(), Fault(cut_after=4), Fault(error_after=1), Fault(chunks=3)])
    reported = 0.0
    for stream in (True, True, True, False):
        resp = await post_chat(client, chat_body(stream=stream, usage={"include": True}))
        try:
            text = await resp.text() if stream else ""
        except aiohttp.ClientPayloadError:
            continue
        if stream:
            reported += parse_sse(text)[1][-2]["usage"]["cost"]
        else:
            reported += (await resp.json())["usage"]["cost"]
    cut = [g["total_cost"] for g in state.generations.values() if g["cancelled"]]
    assert float(state.total_charged()) == pytest.approx(reported + float(sum(cut)), abs=1e-9)


# --- generation, key, request log -------------------------------------------------------


async def test_generation_endpoint_and_404_window(
    client: TestClient[Any, Any], state: MockState
) -> None:
    resp = await client.get("/api/v1/generation", params={"id": "gen-nope"}, headers=AUTH)
    assert resp.status == 404
    assert await resp.json() == {"error": {"code": 404, "message": "Generation not found"}}
    state.generation_404_seconds = 0.2
    gen_id = (await (await post_chat(client, chat_body())).json())["id"]
    resp = await client.get("/api/v1/generation", params={"id": gen_id}, headers=AUTH)
    assert resp.status == 404
    await asyncio.sleep(0.25)
    resp = await client.get("/v1/generation", params={"id": gen_id}, headers=AUTH)
    assert resp.status == 200
    data = (await resp.json())["data"]
    assert data["id"] == gen_id and data["model"] == MODEL
    assert data["total_cost"] == pytest.approx(float(state.total_charged()), abs=1e-12)
    assert data["tokens_completion"] == 8 and data["streamed"] is False
    assert data["cancelled"] is False and data["created_at"]


async def test_key_endpoint(client: TestClient[Any, Any], state: MockState) -> None:
    await post_chat(client, chat_body())
    data = (await (await client.get("/api/v1/key", headers=AUTH)).json())["data"]
    assert data["limit"] == 100.0 and data["is_free_tier"] is False
    assert data["usage"] == pytest.approx(float(state.total_charged()))
    assert data["limit_remaining"] == pytest.approx(100.0 - data["usage"])
    assert KEY not in json.dumps(data)


async def test_request_log_redacts_authorization(
    client: TestClient[Any, Any], state: MockState, log_path: Path
) -> None:
    await post_chat(client, chat_body(models=[MODEL, "openai/gpt-5"]))
    await client.post(CHAT, json=chat_body())  # no Authorization at all
    await client.get("/api/v1/models", headers=AUTH)
    await client.get("/_mock/stats")  # control calls are not logged
    text = log_path.read_text()
    assert KEY not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(line["method"], line["path"]) for line in lines] == [
        ("POST", CHAT),
        ("POST", CHAT),
        ("GET", "/api/v1/models"),
    ]
    assert lines[0]["authorization"] == "Bearer ***redacted***"
    assert lines[0]["body"]["models"] == [MODEL, "openai/gpt-5"]
    assert lines[1]["authorization"] is None and lines[2]["body"] is None
    assert all(line["ts"] for line in lines)
    assert KEY not in json.dumps(state.requests)
    assert state.requests[0]["headers"]["Authorization"] == "Bearer ***redacted***"
    assert state.requests[0]["path"] == CHAT


# --- control endpoints ------------------------------------------------------------------


async def test_control_endpoints(client: TestClient[Any, Any], state: MockState) -> None:
    resp = await client.post("/_mock/faults", json=[{"status": 502}, {"chunks": 2}])
    assert resp.status == 200 and (await resp.json())["queued"] == 2
    assert (await client.post("/_mock/faults", json=[{"bogus": 1}])).status == 400
    assert (await client.post("/_mock/faults", data=b"{")).status == 400
    assert (await post_chat(client, chat_body())).status == 502
    body = await (await post_chat(client, chat_body(usage={"include": True}))).json()
    assert body["usage"]["completion_tokens"] == 2

    stats = await (await client.get("/_mock/stats")).json()
    assert stats["chat_requests"] == 2 and stats["generations"] == 1
    assert Decimal(stats["total_charged_str"]) == state.total_charged()
    assert stats["total_charged"] == pytest.approx(body["usage"]["cost"])

    config = {"generation_404_seconds": 1.5, "expected_key": "k", "default_chunks": 4}
    resp = await client.post("/_mock/config", json={**config, "key_limit": 5})
    assert resp.status == 200 and (await resp.json())["key_limit"] == 5.0
    assert state.generation_404_seconds == 1.5 and state.expected_key == "k"
    assert state.default_chunks == 4
    assert (await client.post("/_mock/config", json={"default_chunks": "x"})).status == 400
    assert (await client.post("/_mock/config", json={"key_limit": None})).status == 400

    assert (await client.post("/_mock/reset")).status == 200
    assert state.faults == [] and state.requests == [] and state.generations == {}
    stats = await (await client.get("/_mock/stats")).json()
    assert stats["chat_requests"] == 0 and stats["total_charged_str"] == "0"


async def test_state_lives_under_the_app_key(aiohttp_client: ClientFactory) -> None:
    app = create_app()
    assert isinstance(app[MOCK_STATE], MockState)
    client = await aiohttp_client(app)
    assert (await post_chat(client, chat_body())).status == 200
    assert app[MOCK_STATE].chat_count() == 1


async def test_disabled_request_log_writes_nothing(
    aiohttp_server: Callable[[web.Application], Awaitable[Any]], tmp_path: Path
) -> None:
    server = await aiohttp_server(create_app())
    async with aiohttp.ClientSession() as session:
        resp = await session.get(server.make_url("/v1/models"))
        assert resp.status == 200
    assert list(tmp_path.iterdir()) == []


# --- console mode ----------------------------------------------------------------------


async def test_console_mode_serves_budgets_and_keeps_snapshots(
    client: TestClient[Any, Any], state: MockState, log_path: Path
) -> None:
    console_key = {"Authorization": "Bearer jp-key"}
    setup = {"budgets": {"agent-j": {"budget_total": 40}}, "expected_key": "jp-key"}
    resp = await client.post("/_mock/console", json=setup)
    assert resp.status == 200
    assert (await resp.json())["budgets"] == {"agent-j": {"budget_total": 40}}

    assert (await client.get("/api/gate/budgets")).status == 401  # no key
    assert (await client.get("/api/gate/budgets", headers=AUTH)).status == 401  # wrong key
    resp = await client.get("/api/gate/budgets", headers=console_key)
    assert resp.status == 200
    assert await resp.json() == {"budgets": {"agent-j": {"budget_total": 40}}}
    snapshot = {"ts": "2025-01-01T00:00:00.000Z", "agents": {"agent-j": {"budget_spent": 1.5}}}
    resp = await client.post("/api/gate/spend", json=snapshot, headers=console_key)
    assert resp.status == 200 and await resp.json() == {"received": True}

    # faults: one per console call, FIFO, whichever of the two it is
    await client.post("/_mock/console", json={"faults": [503, 429]})
    assert (await client.post("/api/gate/spend", json={}, headers=console_key)).status == 503
    assert (await client.get("/api/gate/budgets", headers=console_key)).status == 429
    assert (await client.get("/api/gate/budgets", headers=console_key)).status == 200

    seen = await (await client.get("/_mock/console")).json()
    assert seen["snapshots"] == [snapshot]
    assert (seen["spend_calls"], seen["budget_calls"], seen["faults_queued"]) == (2, 5, 0)
    assert state.console.snapshots == [snapshot]
    # the console's calls are not OpenRouter's: they stay out of the request log
    assert not log_path.exists() or "/api/gate/" not in log_path.read_text()

    for bad in (
        {"faults": [200]},
        {"faults": "503"},
        {"budgets": []},
        {"other": 1},
        {"expected_key": 5},
        [1],
    ):
        assert (await client.post("/_mock/console", json=bad)).status == 400, bad
    resp = await client.post("/_mock/console", json={"reset": True})
    assert (await resp.json())["snapshots"] == [] and state.console.expected_key is None
    state.console.budgets["x"] = {"budget_total": 1}
    assert (await client.post("/_mock/reset")).status == 200  # resets the console too
    assert state.console.budgets == {}


# --- the command line -------------------------------------------------------------------


async def test_cli_announces_the_real_port(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    log = tmp_path / "requests.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mock_upstream",
        "--port",
        "0",
        "--log",
        str(log),
        cwd=repo,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        prefix = "mock_upstream listening on http://127.0.0.1:"
        assert line.startswith(prefix)
        port = int(line[len(prefix) :])
        assert port > 0
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/api/v1/chat/completions"
            async with session.post(url, json=chat_body(), headers=AUTH) as resp:
                assert resp.status == 200
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["authorization"] == "Bearer ***redacted***"
