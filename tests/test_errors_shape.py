"""Every error path of the gate, and the one shape they all answer in.

`{"error": {"message": str, "type": str, "code": <the HTTP status>}}`, and never a key.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gate.context import GATE
from mock_upstream import Fault

from .support import UPSTREAM_KEY, agent, chat, make_config, sse_data

CHAT = "/v1/chat/completions"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
AGENT_KEY = "agent-key-0123456789abcdef"
SECRETS = (UPSTREAM_KEY, ADMIN_TOKEN, AGENT_KEY)


def assert_error_shape(text: str, status: int) -> dict[str, Any]:
    for secret in SECRETS:
        assert secret not in text
    body = json.loads(text)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["code"] == status and not isinstance(error["code"], bool), error
    return error


@dataclass
class Env:
    client: Any
    mock: Any


Case = Callable[[Env], Awaitable[Any]]


def post_chat(payload: Any = None, headers: dict[str, str] | None = None, **kw: Any) -> Case:
    async def call(env: Env) -> Any:
        h = {"X-Agent-ID": "agent-1", **(headers or {})}
        if payload is not None:
            kw["json"] = payload
        return await env.client.post(CHAT, headers=h, **kw)

    return call


def request(
    method: str, path: str, token: str | None = ADMIN_TOKEN, json_type: bool = False, **kw: Any
) -> Case:
    async def call(env: Env) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if json_type:
            headers["Content-Type"] = "application/json"
        return await env.client.request(method, path, headers=headers, **kw)

    return call


def with_fault(fault: Fault, count: int, case: Case) -> Case:
    async def call(env: Env) -> Any:
        env.mock.state.faults.extend(Fault(**vars(fault)) for _ in range(count))
        return await case(env)

    return call


def exhausted(case: Case) -> Case:
    async def call(env: Env) -> Any:
        resp = await env.client.post(
            "/api/budget/agent-1",
            json={"budget_spent": 50},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert resp.status == 200
        return await case(env)

    return call


def broken_log(case: Case) -> Case:
    async def call(env: Env) -> Any:
        env.client.app[GATE].ledger.spend_log.error = "test"
        return await case(env)

    return call


BIG = {"messages": [{"role": "user", "content": "x" * 3000}]}
LEAKY = f"bad key {UPSTREAM_KEY}"

CASES: list[tuple[str, Case, int]] = [
    ("bad json", post_chat(data=b"{nope", headers={"Content-Type": "application/json"}), 400),
    ("not an object", post_chat([1, 2]), 400),
    ("no messages", post_chat({"model": "openai/gpt-5"}), 400),
    ("bad max_tokens", post_chat(chat(max_tokens=-1)), 400),
    ("bad agent id", post_chat(chat(), {"X-Agent-ID": "no spaces"}), 400),
    ("agent key missing", post_chat(chat(), {"X-Agent-ID": "keyed"}), 401),
    (
        "agent key wrong",
        post_chat(chat(), {"X-Agent-ID": "keyed", "Authorization": "Bearer x"}),
        401,
    ),
    ("budget exhausted", exhausted(post_chat(chat())), 402),
    ("budget exhausted, stream", exhausted(post_chat(chat(stream=True))), 402),
    ("unknown agent", post_chat(chat(), {"X-Agent-ID": "stranger"}), 403),
    ("unknown route", request("GET", "/v1/audio/speech"), 404),
    ("unknown root", request("GET", "/favicon.ico"), 404),  # "/" is the dashboard
    ("wrong method", request("GET", CHAT), 405),
    ("wrong method, admin", request("GET", "/api/budget/agent-1"), 405),
    ("too large", post_chat(BIG), 413),
    ("upstream 429", with_fault(Fault(status=429, message=LEAKY), 4, post_chat(chat())), 429),
    ("upstream 500", with_fault(Fault(status=500, message=LEAKY), 4, post_chat(chat())), 500),
    ("upstream 500, stream", with_fault(Fault(status=500), 4, post_chat(chat(stream=True))), 500),
    ("upstream 402", with_fault(Fault(status=402, message=LEAKY), 1, post_chat(chat())), 402),
    ("upstream 400", with_fault(Fault(status=400, message=LEAKY), 1, post_chat(chat())), 400),
    ("upstream 401", with_fault(Fault(status=401, message=LEAKY), 1, post_chat(chat())), 401),
    ("admin no token", request("GET", "/api/spend", token=None), 401),
    ("admin wrong token", request("POST", "/api/reset/agent-1", token="nope"), 401),
    ("metrics no token", request("GET", "/metrics", token=None), 401),
    ("admin unknown agent", request("GET", "/api/spend/stranger"), 404),
    ("admin unknown agent, post", request("POST", "/api/reset/stranger"), 404),
    ("admin unknown path", request("GET", "/api/nothing"), 404),
    ("admin bad body", request("POST", "/api/budget/agent-1", data=b"[1]", json_type=True), 400),
    ("admin text body", request("POST", "/api/budget/agent-1", data=b"{}"), 415),
    ("admin negative", request("POST", "/api/budget/agent-1", json={"budget_spent": -1}), 400),
    ("admin unknown field", request("POST", "/api/budget/agent-1", json={"spent": 1}), 400),
    ("reload without a file", request("POST", "/api/reload"), 400),
    ("spend log broken", broken_log(post_chat(chat())), 503),
    ("spend log broken, stream", broken_log(post_chat(chat(stream=True))), 503),
]


@pytest.fixture
async def env(start_gate, mock, tmp_path: Path) -> Env:
    agents = {"agent-1": agent(), "keyed": agent(api_key=AGENT_KEY), "default": agent(5)}
    cfg = make_config(
        tmp_path, mock.base_url, agents, admin_token=ADMIN_TOKEN, limits={"max_body_bytes": 2000}
    )
    return Env(await start_gate(cfg), mock)


# The types a client can act on.
TYPES = {
    "budget exhausted": "budget_exhausted",
    "upstream 402": "upstream_credits_exhausted",
    "upstream 429": "upstream_error",
    "spend log broken": "spend_log_unavailable",
    "agent key missing": "authentication_error",
    "unknown agent": "permission_error",
    "bad json": "invalid_request_error",
    "unknown route": "not_found_error",
}


@pytest.mark.parametrize(("name", "case", "status"), CASES, ids=[name for name, _, _ in CASES])
async def test_error_shape(env: Env, name: str, case: Case, status: int) -> None:
    resp = await case(env)
    text = await resp.text()
    assert resp.status == status, text
    assert resp.headers["Content-Type"].startswith("application/json")
    error = assert_error_shape(text, status)
    if name in TYPES:
        assert error["type"] == TYPES[name]
    if status == 405:
        assert resp.headers["Allow"]
    if name.startswith("upstream"):
        assert resp.headers["X-Execwall-Tier"] == "premium"
    spend_log = env.client.app[GATE].ledger.spend_log
    spend_log.error = None  # the broken-log cases: let the refusal's line be written
    await spend_log.flush()
    written = spend_log.path.read_text() if spend_log.path.exists() else ""
    for secret in SECRETS:
        assert secret not in written


async def test_no_admin_token_refuses_changes_in_shape(start_gate, mock, tmp_path: Path) -> None:
    client = await start_gate(make_config(tmp_path, mock.base_url))
    resp = await client.post("/api/reset/agent-1")
    error = assert_error_shape(await resp.text(), 403)
    assert resp.status == 403
    assert "GATE_ADMIN_TOKEN" in error["message"]
    resp = await client.get("/api/spend/agent-1")  # reads stay open
    assert resp.status == 200


async def test_unreachable_upstream_is_502_in_shape(start_gate, mock, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = make_config(tmp_path, f"http://127.0.0.1:{port}/api/v1")
    client = await start_gate(cfg)
    resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 502
    assert_error_shape(await resp.text(), 502)


async def test_error_after_the_stream_started_is_an_event_in_shape(env: Env) -> None:
    env.mock.state.faults.append(Fault(cut_after=1))
    resp = await post_chat(chat(stream=True))(env)
    raw = await resp.read()
    assert resp.status == 200
    last = sse_data(raw)[-1]
    assert_error_shape(last, 502)


async def test_degraded_health_names_the_spend_log_error(env: Env) -> None:
    env.client.app[GATE].ledger.spend_log.error = "disk full"
    resp = await env.client.get("/api/health")
    body = await resp.json()
    assert resp.status == 503
    assert (body["status"], body["spend_log_error"]) == ("degraded", "disk full")
    assert env.mock.state.chat_count() == 0
