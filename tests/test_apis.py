"""Every inference API beside chat — Responses, Anthropic Messages, completions,
embeddings — through the same admission, holds, relay and books, end to end against
the mock on real sockets, each answering in its own shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gate.context import GATE
from gate.core.cost import IMAGE_PROMPT_TOKENS
from gate.core.jsonfmt import dumpb
from mock_upstream import Fault

from .support import (
    ECONOMY,
    PREMIUM,
    Settlements,
    agent,
    load_prices,
    make_config,
    request_lines,
    spend_lines,
)

AGENT_1 = {"X-Agent-ID": "agent-1"}
OUTSIDE = "openai/gpt-4o"  # priced by the mock, in no tier


def responses_body(model: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"model": model or PREMIUM[1], "input": "hello", "max_output_tokens": 64, **fields}


def messages_body(model: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "model": model or PREMIUM[1],
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}],
        **fields,
    }


def completions_body(model: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"model": model or PREMIUM[1], "prompt": "hello", "max_tokens": 64, **fields}


def embeddings_body(model: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"model": model or PREMIUM[1], "input": "hello", **fields}


Body = Callable[..., dict[str, Any]]
# (api, path, body, the output-limit field it sends upstream, streams)
APIS: list[tuple[str, str, Body, str | None]] = [
    ("responses", "/v1/responses", responses_body, "max_output_tokens"),
    ("messages", "/v1/messages", messages_body, "max_tokens"),
    ("completions", "/v1/completions", completions_body, "max_tokens"),
    ("embeddings", "/v1/embeddings", embeddings_body, None),
]
STREAMING = [a for a in APIS if a[0] != "embeddings"]
IDS = [a[0] for a in APIS]
STREAM_IDS = [a[0] for a in STREAMING]


def upstream_bodies(mock: Any, api: str) -> list[dict[str, Any]]:
    return [r["body"] for r in mock.state.requests if r["api"] == api]


def is_anthropic(api: str) -> bool:
    return api == "messages"


def error_of(api: str, body: dict[str, Any]) -> dict[str, Any]:
    """The error object in the API's own shape (and a check of that shape)."""
    if is_anthropic(api):
        assert body["type"] == "error" and set(body) == {"type", "error"}, body
        assert set(body["error"]) >= {"type", "message"}
    else:
        assert set(body) == {"error"}, body
        assert set(body["error"]) >= {"type", "message", "code"}
    error: dict[str, Any] = body["error"]
    return error


def events(raw: bytes) -> list[tuple[str | None, dict[str, Any] | str]]:
    """(event name, parsed data) of every SSE event with data, in order."""
    out: list[tuple[str | None, dict[str, Any] | str]] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        name = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip())
        if data:
            text = b"\n".join(data).decode()
            out.append((name, text if text == "[DONE]" else json.loads(text)))
    return out


def execwall_of(api: str, raw: bytes) -> dict[str, Any]:
    """The `_execwall` note of a stream: on the API's last usage event."""
    found = [d["_execwall"] for _, d in events(raw) if isinstance(d, dict) and "_execwall" in d]
    assert len(found) == 1, raw[-600:]
    where = {
        "responses": "response.completed",
        "messages": "message_delta",
        "completions": None,
    }[api]
    carrier = next((n, d) for n, d in events(raw) if isinstance(d, dict) and "_execwall" in d)
    if where is not None:
        assert carrier[0] == where and carrier[1]["type"] == where
    note: dict[str, Any] = found[0]
    return note


@pytest.fixture
async def gate(start_gate, mock, tmp_path: Path):
    client = await start_gate(make_config(tmp_path, mock.base_url))
    await load_prices(client)
    return client


# --- answered in their own shape, billed to the cent --------------------------------


@pytest.mark.parametrize(("api", "path", "body", "limit"), APIS, ids=IDS)
async def test_a_json_answer_is_routed_relayed_and_billed(
    gate, mock, tmp_path: Path, api: str, path: str, body: Body, limit: str | None
) -> None:
    for prefix in ("", "/api"):  # OpenRouter's own path shape too
        resp = await gate.post(prefix + path, json=body(), headers=AGENT_1)
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        assert resp.headers["X-Execwall-Tier"] == "premium"
        assert answer["_execwall"]["agent_id"] == "agent-1"
        assert answer["_execwall"]["tier"] == "premium"
        assert answer["model"] == PREMIUM[1]  # the wish, honoured: it is in the tier
    sent = upstream_bodies(mock, api)
    assert len(sent) == 2
    assert sent[0]["model"] == PREMIUM[1] and sent[0]["models"][0] == PREMIUM[1]
    assert set(sent[0]["models"]) <= set(PREMIUM)
    lines = request_lines(tmp_path / "spend.jsonl")
    assert [(x["api"], x["status"], x["cost_source"]) for x in lines] == [(api, 200, "usage")] * 2
    assert sum(x["cost"] for x in lines) == mock.state.total_charged() > 0
    assert all(x["prompt_tokens"] > 0 for x in lines)
    holds = [x for x in spend_lines(tmp_path / "spend.jsonl") if x["event"] == "hold"]
    assert {x["api"] for x in holds} == {api}


@pytest.mark.parametrize(("api", "path", "body", "limit"), STREAMING, ids=STREAM_IDS)
async def test_a_stream_is_relayed_in_its_own_events_and_billed(
    gate, mock, tmp_path: Path, api: str, path: str, body: Body, limit: str | None
) -> None:
    mock.state.faults.append(Fault(chunks=5))
    extra: dict[str, Any] = {"stream": True}
    if api == "completions":
        extra["stream_options"] = {"include_usage": True}
    resp = await gate.post(path, json=body(**extra), headers=AGENT_1)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    raw = await resp.read()
    names = [n for n, _ in events(raw)]
    if api == "responses":
        assert names[0] == "response.created" and names[-1] == "response.completed"
    elif api == "messages":
        assert names[0] == "message_start" and names[-1] == "message_stop"
        assert "ping" in names  # kept
    else:
        assert events(raw)[-1][1] == "[DONE]"
    note = execwall_of(api, raw)
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert (line["api"], line["stream"], line["status"]) == (api, True, 200)
    assert line["cost"] == mock.state.total_charged() > 0
    assert Decimal(str(note["cost"])) == line["cost"]
    assert line["completion_tokens"] == 5
    [sent] = upstream_bodies(mock, api)
    assert sent["stream"] is True


async def test_a_stream_passes_every_upstream_byte_but_the_note(gate, mock) -> None:
    """Responses: the gate's stream is upstream's, byte for byte, but for the one
    `_execwall` member it splices into `response.completed`."""
    mock.state.faults.append(Fault(chunks=4))
    resp = await gate.post("/v1/responses", json=responses_body(stream=True), headers=AGENT_1)
    relayed = await resp.read()
    note = b',"_execwall":' + dumpb(execwall_of("responses", relayed))  # the gate's encoder
    assert relayed.count(note) == 1
    unspliced = relayed.replace(note, b"")
    assert b'"type":"response.completed"' in unspliced
    for _, data in events(unspliced):  # every event is still the JSON upstream sent
        assert isinstance(data, dict) and "_execwall" not in data


# --- the tier decides -----------------------------------------------------------------


@pytest.mark.parametrize(("api", "path", "body", "limit"), APIS, ids=IDS)
async def test_a_model_outside_the_tier_is_never_sent_upstream(
    gate, mock, tmp_path: Path, api: str, path: str, body: Body, limit: str | None
) -> None:
    wide = body(OUTSIDE, models=[OUTSIDE], route="fallback", provider={"order": [OUTSIDE]})
    resp = await gate.post(path, json=wide, headers=AGENT_1)
    assert resp.status == 200
    [sent] = upstream_bodies(mock, api)
    assert sent["model"] == PREMIUM[0] and sent["models"] == PREMIUM
    assert OUTSIDE not in json.dumps(sent)
    assert "route" not in sent


@pytest.mark.parametrize(("api", "path", "body", "limit"), APIS, ids=IDS)
async def test_a_drained_budget_routes_to_economy(
    gate, mock, tmp_path: Path, api: str, path: str, body: Body, limit: str | None
) -> None:
    await gate.app[GATE].ledger.set_budget("agent-1", None, Decimal(45))  # 10 % left
    resp = await gate.post(path, json=body(), headers=AGENT_1)
    assert resp.status == 200
    assert resp.headers["X-Execwall-Tier"] == "economy"
    [sent] = upstream_bodies(mock, api)
    assert sent["models"] == ECONOMY


# --- the budget's refusal and its edge ------------------------------------------------


@pytest.mark.parametrize(("api", "path", "body", "limit"), APIS, ids=IDS)
async def test_an_exhausted_budget_is_a_402_in_the_apis_shape(
    gate, mock, tmp_path: Path, api: str, path: str, body: Body, limit: str | None
) -> None:
    await gate.app[GATE].ledger.set_budget("agent-1", None, Decimal(50))
    resp = await gate.post(path, json=body(), headers=AGENT_1)
    assert resp.status == 402
    assert resp.headers["x-should-retry"] == "false"
    assert "Retry-After" not in resp.headers
    assert resp.headers["X-Execwall-Budget-Resets-At"]
    error = error_of(api, await resp.json())
    assert "budget" in error["message"] and "credits" in error["message"]
    assert error["resets_at"] == resp.headers["X-Execwall-Budget-Resets-At"]
    if is_anthropic(api):
        assert error["type"] == "billing_error"
    else:
        assert error["type"] == "budget_exhausted"
    assert upstream_bodies(mock, api) == []
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert (line["api"], line["status"], line["cost"]) == (api, 402, 0)


@pytest.mark.parametrize(("api", "path", "body", "limit"), STREAMING, ids=STREAM_IDS)
async def test_the_output_limit_is_clamped_at_the_budget_edge(
    start_gate, mock, tmp_path: Path, api: str, path: str, body: Body, limit: str | None
) -> None:
    assert limit is not None
    cfg = make_config(tmp_path, mock.base_url, {"agent-1": agent(0.01)})
    client = await start_gate(cfg)
    await load_prices(client)
    resp = await client.post(path, json={**body(), limit: 100_000}, headers=AGENT_1)
    assert resp.status == 200, await resp.text()
    note = (await resp.json())["_execwall"]
    [sent] = upstream_bodies(mock, api)
    assert 1 <= sent[limit] < 100_000
    assert note["max_tokens_clamped"] is True and note["max_tokens"] == sent[limit]
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert line["cost"] <= Decimal("0.01")


async def test_an_embedding_holds_its_input_alone(gate, mock, tmp_path: Path) -> None:
    resp = await gate.post("/v1/embeddings", json=embeddings_body(), headers=AGENT_1)
    assert resp.status == 200
    [hold] = [x for x in spend_lines(tmp_path / "spend.jsonl") if x["event"] == "hold"]
    chat_sized = Decimal("0.00001") * 4096  # what a 4096-token default answer would hold
    assert 0 < hold["held"] < chat_sized / 100


IMAGE_PARTS = {
    "chat": {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    "responses": {"type": "input_image", "image_url": "https://example.com/a.png"},
    "messages": {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
}


@pytest.mark.parametrize("api", sorted(IMAGE_PARTS))
async def test_an_image_in_the_apis_own_shape_is_held_for(
    gate, mock, tmp_path: Path, api: str
) -> None:
    """The hold of a request with one image exceeds the same request's without it by the
    tokens one image may be billed as: an image left uncounted could cost more than was
    held at a hard cap."""
    path = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}.get(api, "/v1/messages")
    key = "input" if api == "responses" else "messages"
    texts = {"chat": "text", "responses": "input_text", "messages": "text"}

    def body(*parts: dict[str, Any]) -> dict[str, Any]:
        content = [{"type": texts[api], "text": "what is this?"}, *parts]
        made = {"responses": responses_body, "messages": messages_body}.get(api)
        base = made() if made else {"model": PREMIUM[1], "max_tokens": 64}
        return {**base, key: [{"role": "user", "content": content}]}

    for sent in (body(), body(IMAGE_PARTS[api])):
        assert (await gate.post(path, json=sent, headers=AGENT_1)).status == 200
    lines = spend_lines(tmp_path / "spend.jsonl")
    plain, with_image = [x["held"] for x in lines if x["event"] == "hold"]
    prices = gate.app[GATE].prices.prices
    cheapest_prompt = min(prices[m].prompt for m in PREMIUM)
    assert cheapest_prompt > 0
    assert with_image - plain >= cheapest_prompt * IMAGE_PROMPT_TOKENS


# --- hang-ups, cuts and error events mid-stream -----------------------------------------


@pytest.mark.parametrize(("api", "path", "body", "limit"), STREAMING, ids=STREAM_IDS)
async def test_a_client_that_leaves_mid_stream_is_billed_to_the_cent(
    gate, mock, tmp_path: Path, api: str, path: str, body: Body, limit: str | None
) -> None:
    mock.state.faults.append(Fault(chunks=20, chunk_delay=0.03))
    settled = Settlements(gate)
    resp = await gate.post(path, json=body(stream=True), headers=AGENT_1)
    assert resp.status == 200
    seen = b""
    while b"lorem" not in seen:
        seen += await resp.content.readany()
    resp.close()  # gone after its first token
    await settled.wait(1)
    [line] = request_lines(tmp_path / "spend.jsonl")
    [record] = mock.state.generations.values()
    assert line["cost"] == record["total_cost"] > 0
    assert line["status"] == 499 and line["client_disconnected"] is True
    assert line["api"] == api


@pytest.mark.parametrize(("api", "path", "body", "limit"), STREAMING, ids=STREAM_IDS)
async def test_a_cut_mid_stream_ends_in_the_apis_error_event(
    gate, mock, tmp_path: Path, api: str, path: str, body: Body, limit: str | None
) -> None:
    mock.state.faults.append(Fault(chunks=10, cut_after=3))
    settled = Settlements(gate)
    resp = await gate.post(path, json=body(stream=True), headers=AGENT_1)
    raw = await resp.read()
    name, last = events(raw)[-1]
    assert isinstance(last, dict)
    if api == "responses":
        assert name == "response.failed" and last["response"]["status"] == "failed"
        assert last["response"]["error"]["message"]
    elif api == "messages":
        assert name == "error" and error_of(api, last)["type"] == "api_error"
    else:
        assert last["error"]["code"] == 502
    await settled.wait(1)
    [line] = request_lines(tmp_path / "spend.jsonl")
    [record] = mock.state.generations.values()
    assert line["status"] == 502
    assert line["cost"] == record["total_cost"] > 0  # by /generation: 3 tokens' worth
    assert line["cost_source"] == "generation"


@pytest.mark.parametrize(("api", "path", "body", "limit"), STREAMING, ids=STREAM_IDS)
async def test_an_error_event_mid_stream_is_relayed_and_recorded(
    gate, mock, tmp_path: Path, api: str, path: str, body: Body, limit: str | None
) -> None:
    mock.state.faults.append(Fault(chunks=10, error_after=2))
    settled = Settlements(gate)
    resp = await gate.post(path, json=body(stream=True), headers=AGENT_1)
    raw = await resp.read()
    assert b"Provider disconnected unexpectedly" in raw  # upstream's own event, relayed
    await settled.wait(1)
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert line["status"] >= 500
    assert line["cost"] == mock.state.total_charged() > 0


@pytest.mark.parametrize(("api", "path", "body", "limit"), STREAMING, ids=STREAM_IDS)
async def test_a_stream_without_cost_is_billed_from_the_price_table(
    gate, mock, tmp_path: Path, api: str, path: str, body: Body, limit: str | None
) -> None:
    mock.state.faults.append(Fault(chunks=4, no_cost=True))
    extra: dict[str, Any] = {"stream": True}
    if api == "completions":
        extra["stream_options"] = {"include_usage": True}
    resp = await gate.post(path, json=body(**extra), headers=AGENT_1)
    await resp.read()
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert line["cost_source"] == "price_table"
    assert line["cost"] == mock.state.total_charged() > 0


# --- identity and errors in each API's way --------------------------------------------


async def test_anthropic_clients_present_their_key_as_x_api_key(
    start_gate, mock, tmp_path: Path
) -> None:
    key = "agent-key-0123456789abcdef"
    cfg = make_config(tmp_path, mock.base_url, {"agent-1": agent(api_key=key)})
    client = await start_gate(cfg)
    headers = {**AGENT_1, "anthropic-version": "2023-06-01", "anthropic-beta": "tools-1"}
    resp = await client.post("/v1/messages", json=messages_body(), headers=headers)
    assert resp.status == 401
    error = error_of("messages", await resp.json())
    assert error["type"] == "authentication_error"
    resp = await client.post(
        "/v1/messages?beta=true", json=messages_body(), headers={**headers, "x-api-key": key}
    )
    assert resp.status == 200
    [sent] = [r for r in mock.state.requests if r["api"] == "messages"]
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["headers"]["anthropic-beta"] == "tools-1"
    assert key not in json.dumps(sent)  # the gate's own key went upstream
    resp = await client.post(  # ANTHROPIC_AUTH_TOKEN: the same key as a bearer token
        "/api/v1/messages",
        json=messages_body(),
        headers={**AGENT_1, "Authorization": f"Bearer {key}"},
    )
    assert resp.status == 200


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b"not json", 400, "invalid_request_error"),
        (json.dumps({"model": PREMIUM[0], "max_tokens": 5}).encode(), 400, "invalid_request_error"),
        (json.dumps(messages_body(max_tokens=0)).encode(), 400, "invalid_request_error"),
    ],
)
async def test_a_messages_refusal_is_in_anthropics_shape(
    gate, mock, body: bytes, status: int, kind: str
) -> None:
    resp = await gate.post(
        "/v1/messages", data=body, headers={**AGENT_1, "Content-Type": "application/json"}
    )
    assert resp.status == status
    assert error_of("messages", await resp.json())["type"] == kind
    resp = await gate.post("/v1/messages", json=messages_body(), headers={"X-Agent-ID": "nobody"})
    assert resp.status == 403
    assert error_of("messages", await resp.json())["type"] == "permission_error"
    resp = await gate.get("/v1/messages", headers=AGENT_1)
    assert resp.status == 405
    assert error_of("messages", await resp.json())["type"] == "invalid_request_error"
    resp = await gate.post("/v1/messages/count_tokens", json={}, headers=AGENT_1)
    assert resp.status == 404
    error = error_of("messages", await resp.json())
    assert error["type"] == "not_found_error" and "not an endpoint" in error["message"]
    assert mock.state.requests == []


@pytest.mark.parametrize(
    ("api", "status", "expect"),
    [
        ("messages", 429, "rate_limit_error"),
        ("messages", 529, "overloaded_error"),
        ("responses", 429, "upstream_error"),
    ],
)
async def test_an_upstream_error_is_relayed_in_the_apis_shape(
    gate, mock, api: str, status: int, expect: str
) -> None:
    mock.state.faults.extend([Fault(status=status)] * 4)  # past the retries
    path, body = (
        ("/v1/messages", messages_body())
        if api == "messages"
        else ("/v1/responses", responses_body())
    )
    resp = await gate.post(path, json=body, headers=AGENT_1)
    assert resp.status == status
    assert error_of(api, await resp.json())["type"] == expect


async def test_models_are_listed_in_anthropics_shape_for_anthropic_clients(gate) -> None:
    resp = await gate.get("/v1/models", headers={**AGENT_1, "anthropic-version": "2023-06-01"})
    listed = await resp.json()
    assert [m["id"] for m in listed["data"]] == PREMIUM
    assert all(m["type"] == "model" for m in listed["data"])
    assert listed["has_more"] is False and listed["first_id"] == PREMIUM[0]
    resp = await gate.get("/api/v1/models", headers=AGENT_1)
    assert (await resp.json())["object"] == "list"


# --- one budget, one set of books -------------------------------------------------------


async def test_a_mixed_concurrent_run_across_every_api_keeps_the_books(
    gate, mock, tmp_path: Path
) -> None:
    settled = Settlements(gate)
    calls = []
    for n in range(3):
        for api, path, body, _ in APIS:
            streams = api != "embeddings" and n % 2 == 0
            calls.append(
                gate.post(path, json=body(stream=True) if streams else body(), headers=AGENT_1)
            )
        calls.append(
            gate.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "stream": n % 2 == 0},
                headers=AGENT_1,
            )
        )
    responses = await asyncio.gather(*calls)
    for resp in responses:
        assert resp.status == 200
        await resp.read()
    await settled.wait(len(calls))
    lines = request_lines(tmp_path / "spend.jsonl")
    assert sorted({x["api"] for x in lines}) == sorted([*IDS, "chat"])
    books = sum((x["cost"] for x in lines), Decimal(0))
    assert books == mock.state.total_charged() > 0
    spend = await (await gate.get("/api/spend/agent-1")).json()
    assert Decimal(str(spend["budget_spent"])) == books and spend["budget_held"] == 0


async def test_codex_is_told_its_usage_limit_so_it_does_not_retry(
    gate, mock, tmp_path: Path
) -> None:
    """Codex CLI retries a 402 five times; a 429 `usage_limit_reached` with `resets_at`
    in epoch seconds is the refusal it stops at. The spend log still says 402."""
    await gate.app[GATE].ledger.set_budget("agent-1", None, Decimal(50))
    codex = {**AGENT_1, "originator": "codex_exec", "User-Agent": "codex_exec/0.171.0"}
    resp = await gate.post("/v1/responses", json=responses_body(stream=True), headers=codex)
    assert resp.status == 429
    assert "Retry-After" not in resp.headers and resp.headers["x-should-retry"] == "false"
    body = await resp.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["type"] == error["code"] == "usage_limit_reached"  # a string, as Codex reads it
    resets = resp.headers["X-Execwall-Budget-Resets-At"]
    assert error["resets_at"] == int(
        datetime.fromisoformat(resets.replace("Z", "+00:00")).timestamp()
    )
    assert "budget" in error["message"] and "credits" in error["message"]
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert (line["status"], line["client_status"], line["cost"]) == (402, 429, 0)
    resp = await gate.post("/v1/responses", json=responses_body(), headers=AGENT_1)
    assert resp.status == 402  # every other client: the budget's 402
