"""mock_upstream's other inference APIs — Responses, Anthropic Messages, legacy
completions, embeddings — on a real socket: shapes, billing, every fault, the request
log, and the official `openai` and `anthropic` SDKs as clients."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from mock_upstream import PRICES, Fault

from .conftest import Mock

KEY = "sk-or-v1-SECRETSECRETSECRET"
BEARER = {"Authorization": f"Bearer {KEY}"}
X_API_KEY = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
MODEL = "openai/gpt-5-mini"
EMBED = "openai/text-embedding-3-small"
USER = [{"role": "user", "content": "Say hello to the gate."}]
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]

BODIES: dict[str, dict[str, Any]] = {
    "responses": {
        "model": MODEL,
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
        ],
        "instructions": "You are a test.",
        "max_output_tokens": 8192,
        "store": False,
    },
    "messages": {"model": MODEL, "messages": USER, "max_tokens": 8192, "system": "Be brief."},
    "completions": {"model": MODEL, "prompt": "Once upon a time", "usage": {"include": True}},
    "embeddings": {"model": EMBED, "input": ["one", "two"]},
}
STREAMING = ("responses", "messages", "completions")
PATHS = {
    "responses": "/responses",
    "messages": "/messages",
    "completions": "/completions",
    "embeddings": "/embeddings",
}

CLOCK_TICK = 0.002  # uvloop's loop.time() counts whole milliseconds


def url(mock: Mock, api: str, prefix: str = "/api/v1") -> str:
    query = "?beta=true" if api == "messages" else ""
    return str(mock.server.make_url(prefix + PATHS[api])) + query


def headers(api: str) -> dict[str, str]:
    return X_API_KEY if api == "messages" else BEARER


def price(model: str, prompt: int, completion: int) -> Decimal:
    p, c = PRICES[model]
    return p * prompt + c * completion


def parse_events(text: str) -> tuple[list[str], list[tuple[str | None, Any]]]:
    """(comments, [(event name, data)]) of a whole SSE body; `[DONE]` stays a string."""
    comments: list[str] = []
    events: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            comments.append(block)
            continue
        name, data = None, None
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            else:
                assert field == "data", block
                data = value if value == "[DONE]" else json.loads(value)
        events.append((name, data))
    return comments, events


async def post(
    mock: Mock, api: str, prefix: str = "/api/v1", **extra: Any
) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            url(mock, api, prefix), json={**BODIES[api], **extra}, headers=headers(api)
        )
        await resp.read()
        return resp


async def stream(mock: Mock, api: str, **extra: Any) -> tuple[aiohttp.ClientResponse, list[Any]]:
    async with aiohttp.ClientSession() as session:
        body = {**BODIES[api], "stream": True, **extra}
        resp = await session.post(url(mock, api), json=body, headers=headers(api))
        text = await resp.text()
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    comments, events = parse_events(text)
    assert comments[0] == ": OPENROUTER PROCESSING"
    return resp, events


def final_usage(api: str, events: list[Any]) -> dict[str, Any] | None:
    """The usage the stream reported last, in that API's shape."""
    for name, data in reversed(events):
        if api == "responses" and name in ("response.completed", "response.failed"):
            return data["response"]["usage"]
        if api == "messages" and name == "message_delta":
            return data["usage"]
        if api == "completions" and isinstance(data, dict) and data.get("usage"):
            return data["usage"]
    return None


def tokens_of(api: str, usage: dict[str, Any]) -> tuple[int, int]:
    if api in ("responses", "messages"):
        return usage["input_tokens"], usage["output_tokens"]
    return usage["prompt_tokens"], usage.get("completion_tokens", 0)


# --- non-streaming shapes and cost -----------------------------------------------------


@pytest.mark.parametrize("prefix", ["/api/v1", "/v1"])
async def test_responses_non_stream(mock: Mock, prefix: str) -> None:
    resp = await post(mock, "responses", prefix)
    assert resp.status == 200
    body = await resp.json()
    assert body["id"] == resp.headers["X-Generation-Id"]
    assert (body["object"], body["status"], body["model"]) == ("response", "completed", MODEL)
    assert isinstance(body["created_at"], int) and body["error"] is None
    (item,) = body["output"]
    assert (item["type"], item["role"], item["status"]) == ("message", "assistant", "completed")
    (part,) = item["content"]
    assert part["type"] == "output_text" and part["annotations"] == []
    assert len(part["text"].split()) == mock.state.default_chunks
    usage = body["usage"]
    assert usage["output_tokens"] == mock.state.default_chunks
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"] == {"cached_tokens": 0}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}
    expected = price(MODEL, usage["input_tokens"], usage["output_tokens"])
    assert Decimal(str(usage["cost"])) == expected == mock.state.total_charged()
    assert mock.state.generations[body["id"]]["api"] == "responses"


async def test_responses_max_output_tokens_makes_it_incomplete(mock: Mock) -> None:
    body = await (await post(mock, "responses", max_output_tokens=3)).json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["usage"]["output_tokens"] == 3


@pytest.mark.parametrize("prefix", ["/api/v1", "/v1"])
async def test_messages_non_stream(mock: Mock, prefix: str) -> None:
    resp = await post(mock, "messages", prefix)
    assert resp.status == 200
    body = await resp.json()
    assert body["id"].startswith("msg_") and body["id"] == resp.headers["X-Generation-Id"]
    assert (body["type"], body["role"], body["model"]) == ("message", "assistant", MODEL)
    assert (body["stop_reason"], body["stop_sequence"]) == ("end_turn", None)
    (block,) = body["content"]
    assert block["type"] == "text" and len(block["text"].split()) == mock.state.default_chunks
    usage = body["usage"]
    assert usage["output_tokens"] == mock.state.default_chunks
    expected = price(MODEL, usage["input_tokens"], usage["output_tokens"])
    assert Decimal(str(usage["cost"])) == expected == mock.state.total_charged()


async def test_messages_max_tokens_and_bearer_auth(mock: Mock) -> None:
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            url(mock, "messages"), headers=BEARER, json={**BODIES["messages"], "max_tokens": 2}
        )
        body = await resp.json()
    assert resp.status == 200
    assert body["stop_reason"] == "max_tokens" and body["usage"]["output_tokens"] == 2


async def test_messages_tool_use(mock: Mock) -> None:
    mock.state.faults.append(Fault(tool_call=True))
    body = await (await post(mock, "messages", tools=TOOLS)).json()
    assert body["stop_reason"] == "tool_use"
    text, tool = body["content"]
    assert text["type"] == "text"
    assert tool["type"] == "tool_use" and tool["id"].startswith("toolu_")
    assert tool["name"] == "get_weather" and tool["input"] == {"city": "mock"}
    # once the tool has answered, the model speaks again
    mock.state.faults.append(Fault(tool_call=True))
    turn = [
        *USER,
        {"role": "assistant", "content": [tool]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool["id"], "content": "sunny"}],
        },
    ]
    body = await (await post(mock, "messages", tools=TOOLS, messages=turn)).json()
    assert body["stop_reason"] == "end_turn" and [b["type"] for b in body["content"]] == ["text"]


@pytest.mark.parametrize("prefix", ["/api/v1", "/v1"])
async def test_completions_non_stream(mock: Mock, prefix: str) -> None:
    resp = await post(mock, "completions", prefix)
    body = await resp.json()
    assert resp.status == 200 and body["id"] == resp.headers["X-Generation-Id"]
    assert body["object"] == "text_completion" and body["model"] == MODEL
    (choice,) = body["choices"]
    assert (choice["index"], choice["finish_reason"]) == (0, "stop")
    assert len(choice["text"].split()) == mock.state.default_chunks
    usage = body["usage"]
    expected = price(MODEL, usage["prompt_tokens"], usage["completion_tokens"])
    assert Decimal(str(usage["cost"])) == expected == mock.state.total_charged()
    resp = await post(mock, "completions", max_tokens=2, usage=None)
    body = await resp.json()
    assert body["choices"][0]["finish_reason"] == "length" and "cost" not in body["usage"]


@pytest.mark.parametrize("prefix", ["/api/v1", "/v1"])
async def test_embeddings(mock: Mock, prefix: str) -> None:
    resp = await post(mock, "embeddings", prefix)
    body = await resp.json()
    assert resp.status == 200 and body["id"] == resp.headers["X-Generation-Id"]
    assert body["object"] == "list" and body["model"] == EMBED
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) > 0 for d in body["data"])
    assert body["data"][0]["embedding"] != body["data"][1]["embedding"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] > 0
    assert Decimal(str(usage["cost"])) == price(EMBED, usage["prompt_tokens"], 0)
    assert mock.state.total_charged() == price(EMBED, usage["prompt_tokens"], 0)
    again = await (await post(mock, "embeddings", input="one")).json()
    assert again["data"][0]["embedding"] == body["data"][0]["embedding"]  # deterministic


@pytest.mark.parametrize(
    ("api", "extra", "message"),
    [
        ("responses", {"model": "acme/nope"}, "acme/nope is not a valid model ID"),
        ("responses", {"input": 5}, "'input'"),
        ("messages", {"messages": []}, "messages"),
        ("messages", {"models": [MODEL] * 4}, "3 items or fewer"),
        ("completions", {"prompt": None}, "'prompt'"),
        ("embeddings", {"input": []}, "'input'"),
    ],
)
async def test_bad_requests_are_400s_in_each_apis_shape(
    mock: Mock, api: str, extra: dict[str, Any], message: str
) -> None:
    resp = await post(mock, api, **extra)
    assert resp.status == 400
    body = await resp.json()
    if api == "messages":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    else:
        assert body["error"]["code"] == 400
    assert message in body["error"]["message"]
    assert mock.state.generations == {}


async def test_models_fallback_list(mock: Mock) -> None:
    for api in ("responses", "messages", "completions"):
        body = await (
            await post(mock, api, model=None, models=["nope/x", "anthropic/claude-haiku-4.5"])
        ).json()
        assert body["model"] == "anthropic/claude-haiku-4.5"


async def test_credentials_are_required(mock: Mock) -> None:
    async with aiohttp.ClientSession() as session:
        for api in PATHS:
            resp = await session.post(url(mock, api), json=BODIES[api])
            body = await resp.json()
            assert resp.status == 401
            if api == "messages":
                assert body["error"]["type"] == "authentication_error"
            else:
                assert body["error"]["code"] == 401
        # x-api-key is Anthropic's way only
        resp = await session.post(
            url(mock, "responses"), json=BODIES["responses"], headers={"x-api-key": KEY}
        )
        assert resp.status == 401
        mock.state.expected_key = "right"
        resp = await session.post(
            url(mock, "messages"), json=BODIES["messages"], headers={"x-api-key": "wrong"}
        )
        assert resp.status == 401
        resp = await session.post(
            url(mock, "messages"), json=BODIES["messages"], headers={"x-api-key": "right"}
        )
        assert resp.status == 200
    assert mock.state.requests_by_api() == {
        "responses": 2,
        "messages": 3,
        "completions": 1,
        "embeddings": 1,
    }
    assert mock.state.chat_count() == 0


async def test_unknown_method_on_messages_is_an_anthropic_error(mock: Mock) -> None:
    async with aiohttp.ClientSession() as session:
        resp = await session.get(url(mock, "messages"), headers=X_API_KEY)
        body = await resp.json()
    assert resp.status == 405 and body["type"] == "error"


# --- streaming ----------------------------------------------------------------------------


async def test_responses_stream_events(mock: Mock) -> None:
    resp, events = await stream(mock, "responses")
    names = [name for name, _ in events]
    n = mock.state.default_chunks
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * n,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]  # and no `data: [DONE]`
    assert all(data["type"] == name for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    created = events[0][1]["response"]
    assert created["id"] == resp.headers["X-Generation-Id"] and created["status"] == "in_progress"
    deltas = "".join(data["delta"] for name, data in events if name.endswith(".delta"))
    assert events[-4][1]["text"] == deltas
    final = events[-1][1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == deltas
    usage = final["usage"]
    assert usage["output_tokens"] == n
    expected = price(MODEL, usage["input_tokens"], n)
    assert Decimal(str(usage["cost"])) == expected == mock.state.total_charged()
    assert mock.state.generations[final["id"]]["streamed"] is True


async def test_responses_stream_incomplete_at_the_limit(mock: Mock) -> None:
    _, events = await stream(mock, "responses", max_output_tokens=2)
    name, data = events[-1]
    assert name == "response.incomplete" and data["response"]["usage"]["output_tokens"] == 2


async def test_messages_stream_events(mock: Mock) -> None:
    resp, events = await stream(mock, "messages")
    names = [name for name, _ in events]
    n = mock.state.default_chunks
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * n,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["id"] == resp.headers["X-Generation-Id"] and start["content"] == []
    assert start["usage"]["input_tokens"] > 0 and start["usage"]["output_tokens"] == 0
    assert all(
        d["delta"]["type"] == "text_delta"
        for name, d in events
        if name.endswith("delta") and name != "message_delta"
    )
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    usage = delta["usage"]
    assert usage["output_tokens"] == n
    expected = price(MODEL, usage["input_tokens"], n)
    assert Decimal(str(usage["cost"])) == expected == mock.state.total_charged()


async def test_messages_stream_tool_use(mock: Mock) -> None:
    mock.state.faults.append(Fault(tool_call=True, chunks=2))
    _, events = await stream(mock, "messages", tools=TOOLS)
    names = [name for name, _ in events]
    assert names[-6:] == [
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = next(d for name, d in events if name == "content_block_start" and d["index"] == 1)
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["name"] == "get_weather"
    json_delta = next(d for name, d in events if name == "content_block_delta" and d["index"] == 1)
    assert json.loads(json_delta["delta"]["partial_json"]) == {"city": "mock"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


FUNCTIONS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


async def test_responses_function_call(mock: Mock) -> None:
    mock.state.faults.extend([Fault(tool_call=True, chunks=2)] * 3)
    _, events = await stream(mock, "responses", tools=FUNCTIONS)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    names = [name for name, _ in events]
    assert names[-5:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    message, call = events[-1][1]["response"]["output"]
    assert message["type"] == "message"
    assert (call["type"], call["name"], call["status"]) == (
        "function_call",
        "get_weather",
        "completed",
    )
    assert json.loads(call["arguments"]) == {"city": "mock"} and call["call_id"]
    body = await (await post(mock, "responses", tools=FUNCTIONS)).json()
    assert [item["type"] for item in body["output"]] == ["message", "function_call"]
    answered = [{"type": "function_call_output", "call_id": call["call_id"], "output": "sun"}]
    body = await (await post(mock, "responses", tools=FUNCTIONS, input=answered)).json()
    assert [item["type"] for item in body["output"]] == ["message"]


async def test_completions_stream(mock: Mock) -> None:
    resp, events = await stream(mock, "completions")
    data = [d for _, d in events]
    *content, stop, usage_chunk, done = data
    assert done == "[DONE]" and len(content) == mock.state.default_chunks
    for chunk in content:
        assert (
            chunk["object"] == "text_completion" and chunk["id"] == resp.headers["X-Generation-Id"]
        )
        assert chunk["choices"][0]["text"] and chunk["choices"][0]["finish_reason"] is None
    assert stop["choices"][0]["finish_reason"] == "stop"
    usage = usage_chunk["usage"]
    expected = price(MODEL, usage["prompt_tokens"], usage["completion_tokens"])
    assert Decimal(str(usage["cost"])) == expected == mock.state.total_charged()
    _, events = await stream(mock, "completions", usage=None)  # no usage unless asked
    assert all("usage" not in d for _, d in events[:-1])


# --- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("api", list(PATHS))
async def test_status_fault_with_retry_after(mock: Mock, api: str) -> None:
    mock.state.faults.append(Fault(status=429, retry_after=2, message="slow down"))
    resp = await post(mock, api)
    assert resp.status == 429 and resp.headers["Retry-After"] == "2"
    body = await resp.json()
    if api == "messages":
        assert body == {
            "type": "error",
            "error": {"type": "rate_limit_error", "message": "slow down"},
        }
    else:
        assert body == {"error": {"code": 429, "message": "slow down"}}
    mock.state.faults.append(Fault(status=529))
    resp = await post(mock, api)
    assert resp.status == 529 and "Retry-After" not in resp.headers
    assert mock.state.generations == {}


@pytest.mark.parametrize("api", STREAMING)
async def test_cut_mid_stream_bills_what_was_sent(mock: Mock, api: str) -> None:
    mock.state.faults.append(Fault(cut_after=3, chunks=10))
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            url(mock, api), json={**BODIES[api], "stream": True}, headers=headers(api)
        )
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    (record,) = mock.state.generations.values()
    assert record["tokens_completion"] == 3 and record["cancelled"] is True
    assert record["api"] == api
    assert mock.state.total_charged() == price(MODEL, record["tokens_prompt"], 3)


@pytest.mark.parametrize("api", list(PATHS))
async def test_cut_without_stream_drops_the_connection(mock: Mock, api: str) -> None:
    mock.state.faults.append(Fault(cut_after=2))
    with pytest.raises(aiohttp.ClientError):
        await post(mock, api)
    (record,) = mock.state.generations.values()
    assert record["cancelled"] is True
    assert record["tokens_completion"] == (0 if api == "embeddings" else 2)


@pytest.mark.parametrize("api", STREAMING)
async def test_error_event_mid_stream(mock: Mock, api: str) -> None:
    mock.state.faults.append(Fault(error_after=2, message="provider fell over"))
    _, events = await stream(mock, api)
    (record,) = mock.state.generations.values()
    assert record["tokens_completion"] == 2 and record["finish_reason"] == "error"
    if api == "responses":
        name, data = events[-1]
        assert name == "response.failed" and data["response"]["status"] == "failed"
        assert data["response"]["error"] == {
            "code": "server_error",
            "message": "provider fell over",
        }
        assert data["response"]["usage"]["output_tokens"] == 2
        assert Decimal(str(data["response"]["usage"]["cost"])) == record["total_cost"]
    elif api == "messages":
        assert events[-1] == (
            "error",
            {"type": "error", "error": {"type": "api_error", "message": "provider fell over"}},
        )
        assert "message_stop" not in [name for name, _ in events]
    else:
        *_, error, usage_chunk, done = [d for _, d in events]
        assert error["error"]["message"] == "provider fell over"
        assert error["choices"][0]["finish_reason"] == "error" and done == "[DONE]"
        assert Decimal(str(usage_chunk["usage"]["cost"])) == record["total_cost"]


@pytest.mark.parametrize("api", list(PATHS))
async def test_error_without_stream(mock: Mock, api: str) -> None:
    mock.state.faults.append(Fault(error_after=1, message="provider fell over"))
    resp = await post(mock, api)
    body = await resp.json()
    if api == "responses":
        assert resp.status == 200 and body["status"] == "failed"
        assert body["error"]["message"] == "provider fell over"
    elif api == "messages":
        assert resp.status == 502 and body["error"]["type"] == "api_error"
    elif api == "completions":
        assert resp.status == 200 and body["choices"][0]["finish_reason"] == "error"
    else:
        assert resp.status == 502 and body["error"]["message"] == "provider fell over"
    assert len(mock.state.generations) == 1  # billed all the same


@pytest.mark.parametrize("api", list(PATHS))
async def test_usage_without_cost(mock: Mock, api: str) -> None:
    mock.state.faults.extend([Fault(no_cost=True), Fault(no_cost=True)])
    body = await (await post(mock, api)).json()
    usage = body["usage"]
    assert "cost" not in usage and tokens_of(api, usage)[0] > 0
    if api in STREAMING:
        _, events = await stream(mock, api)
        usage = final_usage(api, events)
        assert usage is not None and "cost" not in usage
    assert len(mock.state.generations) == (2 if api in STREAMING else 1)
    assert mock.state.total_charged() > 0


@pytest.mark.parametrize("api", ["responses", "completions", "embeddings"])
async def test_no_usage(mock: Mock, api: str) -> None:
    mock.state.faults.append(Fault(no_usage=True))
    body = await (await post(mock, api)).json()
    assert body.get("usage") is None and len(mock.state.generations) == 1


@pytest.mark.parametrize("api", STREAMING)
async def test_slow_chunks_and_keepalives(mock: Mock, api: str) -> None:
    mock.state.faults.append(Fault(first_delay=0.35, keepalive=0.1, chunks=3, chunk_delay=0.05))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            url(mock, api), json={**BODIES[api], "stream": True}, headers=headers(api)
        )
        arrivals = [piece async for piece in resp.content.iter_any()]
    assert loop.time() - started >= 0.35 + 2 * 0.05 - CLOCK_TICK
    assert len(arrivals) >= 3
    comments, events = parse_events(b"".join(arrivals).decode())
    assert comments == [": OPENROUTER PROCESSING"] * 4
    assert len(events) > 3


@pytest.mark.parametrize("api", STREAMING)
async def test_a_client_leaving_mid_stream_is_billed(mock: Mock, api: str) -> None:
    mock.state.faults.append(Fault(chunks=4, stall_after=2, stall=60))
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            url(mock, api), json={**BODIES[api], "stream": True}, headers=headers(api)
        )
        seen = b""
        while seen.count(b"lorem") + seen.count(b"ipsum") < 2:
            seen += await resp.content.readany()
        resp.close()
        for _ in range(500):  # billed within moments, not when the 60 s stall ends
            if mock.state.generations:
                break
            await asyncio.sleep(0.01)
    (record,) = mock.state.generations.values()
    assert record["cancelled"] is True and record["tokens_completion"] == 2


@pytest.mark.parametrize("api", list(PATHS))
async def test_answer_model_and_hang(mock: Mock, api: str) -> None:
    mock.state.faults.append(Fault(answer_model="openai/gpt-4o", hang=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = await (await post(mock, api)).json()
    assert loop.time() - started >= 0.2 - CLOCK_TICK
    assert body["model"] == "openai/gpt-4o"
    prompt, completion = tokens_of(api, body["usage"])
    assert mock.state.total_charged() == price("openai/gpt-4o", prompt, completion)


# --- the generation endpoint, the request log ---------------------------------------------


async def test_generation_knows_every_api(mock: Mock) -> None:
    ids = {}
    for api in PATHS:
        resp = await post(mock, api)
        ids[api] = resp.headers["X-Generation-Id"]
    async with aiohttp.ClientSession() as session:
        for api, gen_id in ids.items():
            resp = await session.get(
                str(mock.server.make_url("/api/v1/generation")),
                params={"id": gen_id},
                headers=BEARER,
            )
            data = (await resp.json())["data"]
            record = mock.state.generations[gen_id]
            assert data["id"] == gen_id and data["api"] == api
            assert Decimal(str(data["total_cost"])) == record["total_cost"] > 0
    assert (
        sum(r["total_cost"] for r in mock.state.generations.values()) == mock.state.total_charged()
    )


async def test_request_log_names_the_api_and_redacts_keys(mock: Mock, tmp_path: Path) -> None:
    for api in PATHS:
        await post(mock, api)
    async with aiohttp.ClientSession() as session:
        await session.post(
            url(mock, "messages"), json=BODIES["messages"], headers={**BEARER, **X_API_KEY}
        )
    text = (tmp_path / "openrouter_requests.log").read_text()
    assert KEY not in text and KEY not in json.dumps(mock.state.requests)
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["api"] for line in lines] == [*PATHS, "messages"]
    assert lines[1]["path"] == "/api/v1/messages"
    assert lines[1]["x_api_key"] == "***redacted***" and lines[1]["authorization"] is None
    assert lines[0]["authorization"] == "Bearer ***redacted***" and lines[0]["x_api_key"] is None
    assert lines[-1]["authorization"] and lines[-1]["x_api_key"]
    assert lines[0]["body"]["model"] == MODEL
    async with aiohttp.ClientSession() as session:
        resp = await session.get(str(mock.server.make_url("/_mock/stats")))
        stats = await resp.json()
    assert stats["requests_by_api"] == {api: 1 for api in PATHS} | {"messages": 2}
    assert stats["chat_requests"] == 0 and stats["generations"] == 5


# --- the official SDKs as clients ----------------------------------------------------------


def openai_client(mock: Mock) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mock.base_url, api_key=KEY, max_retries=0)


def anthropic_client(mock: Mock, **auth: Any) -> anthropic.AsyncAnthropic:
    # Anthropic clients take OpenRouter's `https://openrouter.ai/api` as their base URL
    base = str(mock.server.make_url("/api"))
    return anthropic.AsyncAnthropic(base_url=base, max_retries=0, **(auth or {"api_key": KEY}))


async def test_openai_sdk_responses(mock: Mock) -> None:
    async with openai_client(mock) as client:
        answer = await client.responses.create(
            model=MODEL, input="Hello", instructions="Be brief.", max_output_tokens=100
        )
        assert answer.status == "completed" and answer.model == MODEL
        assert answer.output_text == "lorem ipsum dolor sit amet consectetur adipiscing elit "
        assert answer.usage is not None and answer.usage.output_tokens == 8
        record = mock.state.generations[answer.id]
        assert Decimal(str(answer.usage.model_extra["cost"])) == record["total_cost"]

        events = [
            e
            async for e in await client.responses.create(
                model=MODEL, input=[{"role": "user", "content": "Hello"}], stream=True
            )
        ]
    assert [e.type for e in events][:2] == ["response.created", "response.in_progress"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == text and completed.response.usage is not None
    assert completed.response.usage.output_tokens == 8
    assert mock.state.requests_by_api() == {"responses": 2}


async def test_openai_sdk_responses_stream_helper_and_failure(mock: Mock) -> None:
    async with openai_client(mock) as client:
        async with client.responses.stream(model=MODEL, input="Hello") as events:
            final = await events.get_final_response()
        assert final.output_text.split()[0] == "lorem"
        mock.state.faults.append(Fault(status=503))
        with pytest.raises(openai.InternalServerError):
            await client.responses.create(model=MODEL, input="Hello")
        mock.state.faults.append(Fault(error_after=1))
        events = [
            e async for e in await client.responses.create(model=MODEL, input="Hello", stream=True)
        ]
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None


async def test_openai_sdk_responses_function_call(mock: Mock) -> None:
    mock.state.faults.extend([Fault(tool_call=True), Fault(tool_call=True)])
    async with openai_client(mock) as client:
        answer = await client.responses.create(
            model=MODEL,
            input="Weather?",
            tools=FUNCTIONS,
        )
        events = [
            e
            async for e in await client.responses.create(
                model=MODEL,
                input="Weather?",
                tools=FUNCTIONS,
                stream=True,
            )
        ]
    calls = [item for item in answer.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "mock"})]
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [json.loads(e.arguments) for e in done] == [{"city": "mock"}]


async def test_openai_sdk_completions(mock: Mock) -> None:
    async with openai_client(mock) as client:
        answer = await client.completions.create(model=MODEL, prompt="Once", max_tokens=3)
        assert answer.object == "text_completion" and answer.choices[0].finish_reason == "length"
        assert answer.choices[0].text == "lorem ipsum dolor "
        assert answer.usage is not None and answer.usage.completion_tokens == 3
        chunks = [
            c
            async for c in await client.completions.create(
                model=MODEL, prompt="Once", stream=True, stream_options={"include_usage": True}
            )
        ]
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.split() == "lorem ipsum dolor sit amet consectetur adipiscing elit".split()
    assert chunks[-1].usage is not None and chunks[-1].usage.model_extra["cost"] > 0


async def test_openai_sdk_embeddings(mock: Mock) -> None:
    async with openai_client(mock) as client:
        answer = await client.embeddings.create(model=EMBED, input=["one", "two"])
        single = await client.embeddings.create(model=EMBED, input="one", encoding_format="float")
    assert [d.index for d in answer.data] == [0, 1] and answer.model == EMBED
    assert single.data[0].embedding == answer.data[0].embedding
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > 0


async def test_anthropic_sdk_messages_create(mock: Mock, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # the key as `x-api-key` only, as OpenClaw's anthropic-messages adapter sends it
    async with anthropic_client(mock, api_key=None, default_headers={"x-api-key": KEY}) as client:
        message = await client.messages.create(
            model=MODEL, max_tokens=1024, system="Be brief.", messages=USER
        )
        assert message.type == "message" and message.stop_reason == "end_turn"
        assert message.content[0].type == "text"
        assert message.content[0].text.split()[0] == "lorem"
        assert message.usage.output_tokens == 8
        record = mock.state.generations[message.id]
        assert Decimal(str(message.usage.model_extra["cost"])) == record["total_cost"]
    sent = mock.state.requests[-1]
    sent_headers = {name.lower(): value for name, value in sent["headers"].items()}
    assert sent["api"] == "messages" and sent_headers["x-api-key"] == "***redacted***"
    assert "authorization" not in sent_headers and sent_headers["anthropic-version"]


async def test_anthropic_sdk_messages_stream(mock: Mock) -> None:
    async with anthropic_client(mock, auth_token=KEY) as client:  # ANTHROPIC_AUTH_TOKEN way
        async with client.messages.stream(model=MODEL, max_tokens=5, messages=USER) as events:
            text = "".join([piece async for piece in events.text_stream])
            final = await events.get_final_message()
    assert text == "lorem ipsum dolor sit amet "
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 5
    assert final.usage.input_tokens > 0
    sent_headers = {k.lower(): v for k, v in mock.state.requests[-1]["headers"].items()}
    assert sent_headers["authorization"] == "Bearer ***redacted***"


async def test_anthropic_sdk_tool_use(mock: Mock) -> None:
    mock.state.faults.extend([Fault(tool_call=True), Fault(tool_call=True)])
    async with anthropic_client(mock) as client:
        message = await client.messages.create(
            model=MODEL,
            max_tokens=1024,
            messages=USER,
            tools=TOOLS,
        )
        assert message.stop_reason == "tool_use"
        (tool,) = [b for b in message.content if b.type == "tool_use"]
        assert tool.name == "get_weather" and tool.input == {"city": "mock"}
        async with client.messages.stream(
            model=MODEL,
            max_tokens=1024,
            messages=USER,
            tools=TOOLS,
        ) as events:
            final = await events.get_final_message()
    assert final.stop_reason == "tool_use"
    (streamed,) = [b for b in final.content if b.type == "tool_use"]
    assert streamed.name == "get_weather" and streamed.input == {"city": "mock"}


async def test_anthropic_sdk_errors(mock: Mock) -> None:
    mock.state.faults.append(Fault(status=429, retry_after=1))
    async with anthropic_client(mock) as client:
        with pytest.raises(anthropic.RateLimitError) as refused:
            await client.messages.create(model=MODEL, max_tokens=10, messages=USER)
        assert refused.value.body["error"]["type"] == "rate_limit_error"
        mock.state.faults.append(Fault(error_after=2, message="provider fell over"))
        with pytest.raises(anthropic.APIStatusError, match="provider fell over"):
            async with client.messages.stream(model=MODEL, max_tokens=10, messages=USER) as events:
                async for _ in events:
                    pass
