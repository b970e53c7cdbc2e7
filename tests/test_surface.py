"""The inference surface under OpenRouter's own `/api/v1/...` paths as well as `/v1/...`:
the agent rules apply there, an unserved path says so plainly, and no spelling of a path
crosses between the inference and the admin surface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from .support import PREMIUM
from .test_security import AGENT_1, KEY_1, TOKEN, lines, locked_gate, state_of

HELLO = {"model": "openai/gpt-5", "messages": [{"role": "user", "content": "hello"}]}
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
async def test_chat_and_models_under_both_prefixes(
    start_gate, mock, tmp_path: Path, prefix
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    resp = await client.post(f"{prefix}/chat/completions", json=HELLO, headers=AGENT_1)
    assert resp.status == 200
    assert resp.headers["X-Execwall-Tier"] == "premium"
    assert (await resp.json())["_execwall"]["agent_id"] == "agent-1"
    resp = await client.get(f"{prefix}/models", headers=AGENT_1)
    assert resp.status == 200
    assert [m["id"] for m in (await resp.json())["data"]] == PREMIUM
    assert mock.state.chat_count() == 1
    requests = [x for x in await lines(client) if x["event"] == "request"]
    assert [(x["agent_id"], x["status"]) for x in requests] == [("agent-1", 200)]


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
async def test_agent_rules_hold_under_both_prefixes(
    start_gate, mock, tmp_path: Path, prefix
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    for headers in ({"X-Agent-ID": "agent-1"}, {"X-Agent-ID": "agent-1", **ADMIN}):
        resp = await client.post(f"{prefix}/chat/completions", json=HELLO, headers=headers)
        assert resp.status == 401  # the admin token is no agent key
    assert mock.state.chat_count() == 0


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/embeddingz"),
        ("POST", "/api/v1/unknown"),
        ("GET", "/api/v1/spend"),
        ("POST", "/api/v1/reset/agent-1"),
        ("GET", "/api/v1/"),
    ],
)
async def test_an_unserved_inference_path_says_so_plainly(
    start_gate, mock, tmp_path: Path, method: str, path: str
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    before = state_of(client)
    resp = await client.request(method, path, json=HELLO, headers={**AGENT_1, **ADMIN})
    assert resp.status == 404
    error = (await resp.json())["error"]
    assert (error["type"], error["code"]) == ("not_found_error", 404)
    assert "not an endpoint this gate serves" in error["message"]
    assert "POST /v1/chat/completions" in error["message"]
    assert mock.state.chat_count() == 0
    assert state_of(client) == before


async def test_a_served_path_with_another_method_is_405(start_gate, mock, tmp_path: Path) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    resp = await client.get("/api/v1/chat/completions", headers=AGENT_1)
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    assert (await resp.json())["error"]["code"] == 405


@pytest.mark.parametrize(
    "raw",
    [
        "/api/v1/../spend",
        "/api/v1/%2e%2e/spend",
        "/api/v1/%2E%2E/reset/agent-1",
        "/api/v1//spend",
        "/api/v1/./spend",
    ],
)
async def test_no_spelling_crosses_from_inference_to_admin(
    start_gate, mock, tmp_path: Path, raw: str
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    before = state_of(client)
    for method in ("GET", "POST"):
        url = URL(str(client.make_url("/"))).with_path(raw, encoded=True)
        async with client.session.request(method, url, headers=AGENT_1) as resp:
            body: Any = await resp.json()
            # never the admin data, never done with only an agent's key
            assert resp.status in (400, 401, 404), (raw, method, resp.status)
            assert "agents" not in body and "budget_total" not in body
    assert state_of(client) == before
    assert mock.state.chat_count() == 0


BODIES = {
    "/responses": {"model": "openai/gpt-5", "input": "hello"},
    "/messages": {"model": "openai/gpt-5", "max_tokens": 10, "messages": HELLO["messages"]},
    "/completions": {"model": "openai/gpt-5", "prompt": "hello"},
    "/embeddings": {"model": "openai/gpt-5", "input": "hello"},
}


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
@pytest.mark.parametrize("path", list(BODIES))
async def test_every_api_follows_the_agent_rules_under_both_prefixes(
    start_gate, mock, tmp_path: Path, prefix: str, path: str
) -> None:
    """The admin token is no agent key on any API, in either header; the agent's key is."""
    client = await locked_gate(start_gate, mock, tmp_path)
    body = BODIES[path]
    who = {"X-Agent-ID": "agent-1"}
    for headers in (who, {**who, **ADMIN}, {**who, "x-api-key": TOKEN}):
        resp = await client.post(prefix + path, json=body, headers=headers)
        assert resp.status == 401, (headers, await resp.text())
    assert mock.state.requests == []
    for headers in (AGENT_1, {**who, "x-api-key": KEY_1}):
        resp = await client.post(prefix + path, json=body, headers=headers)
        assert resp.status == 200, await resp.text()
    assert len(mock.state.requests) == 2


@pytest.mark.parametrize(
    "raw", ["/api/v1/../budget/agent-1", "/api/v1/messages/../../reset/agent-1"]
)
async def test_no_api_path_spelling_reaches_an_admin_post(
    start_gate, mock, tmp_path: Path, raw: str
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    before = state_of(client)
    url = URL(str(client.make_url("/"))).with_path(raw, encoded=True)
    async with client.session.post(url, json={"budget_spent": 0}, headers=AGENT_1) as resp:
        assert resp.status in (400, 401, 404)
    assert state_of(client) == before
