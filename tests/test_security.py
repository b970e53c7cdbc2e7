"""Lock the door: what an agent on loopback can try against the running gate.

Admin tricks (paths, proxy headers, near-miss tokens), identity (another agent's key,
bytes a client should never send), tier escape, where the gate connects and what it
relays, hostile input (conflicting lengths, slow clients, a flood of requests), and a
canary OpenRouter key driven through all of it that must never come back out.
Raw sockets (asyncio.open_connection) wherever a compliant client would refuse to send
the bytes; slow-header tests against a real subprocess, whose server has the idle
deadline `python -m gate` sets.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import time
import zlib
from collections.abc import Iterable
from contextlib import suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gate.config import ConfigError, load_config, parse_config
from gate.context import GATE
from gate.http.surface import not_served
from mock_upstream import Fault

from .procs import start_gate as spawn_gate
from .support import (
    PREMIUM,
    UPSTREAM_KEY,
    Settlements,
    agent,
    chat,
    make_config,
    raw_config,
    request_lines,
    spend_lines,
    sse_data,
    write_config,
)

CHAT = "/v1/chat/completions"
TOKEN = "adm-" + "5" * 28
KEY_1 = "agent-one-key-" + "1" * 18
KEY_2 = "agent-two-key-" + "2" * 18
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
AGENT_1 = {"X-Agent-ID": "agent-1", "Authorization": f"Bearer {KEY_1}"}


# --- raw HTTP ----------------------------------------------------------------------


def http(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    length: bool = True,
) -> bytes:
    """One HTTP/1.1 request, as bytes, exactly as given (no normalisation)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body and not any(name.lower() == "content-type" for name, _ in headers):
        lines.append("Content-Type: application/json")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


async def exchange(host: str, port: int, data: bytes, timeout: float = 5) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One response (head and Content-Length body), without waiting for the close."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return head + (await reader.readexactly(int(length.group(1))) if length else b"")


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


def assert_error_shape(body: bytes | str, status: int) -> dict[str, Any]:
    parsed = json.loads(body)
    assert set(parsed) == {"error"}, parsed
    error = parsed["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["code"] == status
    return error


async def raw(client: Any, data: bytes, timeout: float = 5) -> bytes:
    return await exchange(client.server.host, client.server.port, data, timeout)


# --- gates -------------------------------------------------------------------------


def keyed_agents() -> dict[str, Any]:
    return {"agent-1": agent(50, api_key=KEY_1), "agent-2": agent(50, api_key=KEY_2)}


async def locked_gate(start_gate: Any, mock: Any, tmp_path: Path, **top: Any) -> Any:
    """agent-1 and agent-2 with keys (required), an admin token, started from a file so
    that /api/reload really reloads."""
    raw_cfg = raw_config(
        tmp_path,
        mock.base_url,
        agents=keyed_agents(),
        admin_token=TOKEN,
        require_agent_keys=True,
        **top,
    )
    path = write_config(tmp_path / "gate.yaml", raw_cfg)
    return await start_gate(load_config(path, {}), env={})


def state_of(client: Any) -> dict[str, Any]:
    ledger = client.app[GATE].ledger
    return {a: ledger.view(a) for a in ledger.agent_ids()}


async def lines(client: Any) -> list[dict[str, Any]]:
    spend_log = client.app[GATE].ledger.spend_log
    await spend_log.flush()
    return spend_lines(spend_log.path) if spend_log.path.exists() else []


# --- admin -------------------------------------------------------------------------

# Spellings of an admin change that a lax router or a path-based check might let through.
CHANGE_TRICKS = [
    ("POST", "//api/reset/agent-1"),
    ("POST", "///api/reset/agent-1"),
    ("POST", "/api//reset/agent-1"),
    ("POST", "/api/reset//agent-1"),
    ("POST", "/api/./reset/agent-1"),
    ("POST", "/api/health/../reset/agent-1"),
    ("POST", "/api/health/%2e%2e/reset/agent-1"),
    ("POST", "/api/health/%2E%2E/reset/agent-1"),
    ("POST", "/api/health%2f..%2freset%2fagent-1"),
    ("POST", "/api/health/..%2freset/agent-1"),
    ("POST", "/api/reset/..%2Fhealth"),  # routes to reset; the path reads as .../health
    ("POST", "/api/reset/%2e%2e%2fhealth"),
    ("POST", "/api/reset/agent-1/"),
    ("POST", "/api/reset/agent-1/."),
    ("POST", "/api/reset/agent-1%2f"),
    ("POST", "/api/reset/agent-1?next=/api/health"),
    ("POST", "/api/reset/agent-1#/api/health"),
    ("POST", "/api/reset/agent-1;/api/health"),
    ("POST", "/%61pi/reset/agent-1"),  # decodes to the real route
    ("POST", "/api/%72eset/agent-1"),
    ("POST", "/API/reset/agent-1"),
    ("POST", "http://127.0.0.1/api/reset/agent-1"),  # absolute form
    ("POST", "/api/budget/agent-1/"),
    ("POST", "/api/budget%2fagent-1"),
    ("POST", "/api/health/../budget/agent-1"),
    ("POST", "/api/reload/"),
    ("POST", "/api/health/../reload"),
    ("POST", "/api/health"),
    ("PUT", "/api/reset/agent-1"),
    ("PATCH", "/api/budget/agent-1"),
    ("DELETE", "/api/spend/agent-1"),
    ("OPTIONS", "/api/reset/agent-1"),
    ("GET", "/api/reset/agent-1"),
]


async def test_path_tricks_never_reach_a_change_without_the_token(
    start_gate, mock, tmp_path: Path
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    resp = await client.post("/api/budget/agent-1", json={"budget_spent": 20}, headers=ADMIN)
    assert resp.status == 200
    before = state_of(client)
    body = json.dumps({"budget_spent": 0, "budget_total": 1000}).encode()
    for method, target in CHANGE_TRICKS:
        answer = await raw(
            client, http(method, target, [("Content-Type", "application/json")], body)
        )
        status = status_of(answer)
        assert status in (400, 401, 404, 405), (method, target, answer[:300])
        if answer.find(b"application/json") >= 0:
            assert_error_shape(body_of(answer), status)
    # Those that decode to a real change route reach it, and stop at the token.
    for target in ("/%61pi/reset/agent-1", "/api/%72eset/agent-1", "/api/reset/..%2Fhealth"):
        answer = await raw(client, http("POST", target))
        assert status_of(answer) == 401, (target, answer)
    assert state_of(client) == before
    assert [r["event"] for r in await lines(client)] == ["budget"]  # only the real change
    resp = await client.get("/api/health/")
    assert resp.status in (401, 404)


async def test_without_a_token_no_trick_makes_a_change(start_gate, mock, tmp_path: Path) -> None:
    client = await start_gate(make_config(tmp_path, mock.base_url))
    before = state_of(client)
    for method, target in CHANGE_TRICKS:
        answer = await raw(client, http(method, target, body=b'{"budget_spent": 0}'))
        assert status_of(answer) in (400, 403, 404, 405), (method, target, answer[:300])
    answer = await raw(client, http("POST", "/%61pi/reset/agent-1"))
    assert status_of(answer) == 403
    assert b"GATE_ADMIN_TOKEN" in answer
    assert state_of(client) == before
    assert await lines(client) == []


PROXY_HEADERS = {
    "Host": "localhost",
    "X-Forwarded-For": "127.0.0.1",
    "X-Forwarded-Host": "localhost",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-User": "admin",
    "X-Forwarded-Prefix": "/api/health",
    "Forwarded": "for=127.0.0.1;host=localhost;proto=https",
    "X-Real-IP": "127.0.0.1",
    "X-Original-URL": "/api/health",
    "X-Rewrite-URL": "/api/health",
    "X-HTTP-Method-Override": "GET",
    "X-Remote-User": "admin",
    "X-Admin-Token": TOKEN,
    "Cookie": f"token={TOKEN}",
}


@pytest.mark.parametrize(
    "auth",
    [
        None,
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN.upper()}",
        f"Basic {TOKEN}",
        f"Token {TOKEN}",
        f"Bearer{TOKEN}",
        f"Bearer {KEY_1}",  # an agent's key is no admin token
        f"Bearer {UPSTREAM_KEY}",
    ],
)
async def test_headers_and_near_miss_tokens_grant_nothing(
    start_gate, mock, tmp_path: Path, auth: str | None
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    headers = dict(PROXY_HEADERS)
    if auth is not None:
        headers["Authorization"] = auth
    before = state_of(client)
    for method, path in [
        ("GET", "/api/spend"),
        ("GET", "/api/spend/agent-1"),
        ("POST", "/api/budget/agent-1"),
        ("POST", "/api/reset/agent-1"),
        ("POST", "/api/reload"),
        ("GET", "/metrics"),
    ]:
        resp = await client.request(method, path, headers=headers, json={"budget_spent": 0})
        text = await resp.text()
        assert resp.status == 401, (method, path, text)
        assert_error_shape(text, 401)
        assert TOKEN not in text and KEY_1 not in text
    assert state_of(client) == before


async def test_admin_token_is_compared_in_constant_time(
    start_gate, mock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gate.http.intake

    compared: list[tuple[bytes, bytes]] = []
    real = gate.http.intake.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(gate.http.intake.hmac, "compare_digest", spy)
    client = await locked_gate(start_gate, mock, tmp_path)
    assert (await client.get("/api/spend", headers={"Authorization": "Bearer nope"})).status == 401
    assert (await client.get("/api/spend", headers=ADMIN)).status == 200
    assert compared == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]
    # Bytes that are not UTF-8 (or not ASCII) are no token: 401, never a 500.
    for token in (b"\xff\xfe", "é".encode(), b"\x01" + TOKEN.encode()):
        answer = await raw(
            client,
            b"GET /api/spend HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Authorization: Bearer " + token + b"\r\n\r\n",
        )
        assert status_of(answer) in (400, 401), answer  # 400: aiohttp refused the byte
        if status_of(answer) == 401:
            assert_error_shape(body_of(answer), 401)


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        # JSON is UTF-8 whatever the charset says (and an unknown charset is no 500)
        ("application/json; charset=no-such-charset", b'{"budget_spent": 0}', 200),
        ("application/json", b"[" * 5000, 400),
        ("application/json", b'{"budget_spent": "\xff"}', 400),
        ("application/json", b'{"budget_spent": NaN}', 400),
        ("application/json", b'{"budget_total": Infinity}', 400),
        ("application/json", b'{"budget_total": 1e999}', 400),
        ("application/json", b"9" * 5000, 400),
        ("application/json", b'{"budget_spent": 0, "x": "' + b"y" * 9000 + b'"}', 413),
    ],
)
async def test_admin_bodies_are_checked_like_chat_bodies(
    start_gate, mock, tmp_path: Path, content_type: str, body: bytes, status: int
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path, limits={"max_body_bytes": 8192})
    before = state_of(client)
    resp = await client.post(
        "/api/budget/agent-1", data=body, headers={**ADMIN, "Content-Type": content_type}
    )
    assert resp.status == status, await resp.text()
    if status != 200:
        assert_error_shape(await resp.text(), status)
    assert state_of(client) == before


# --- identity ----------------------------------------------------------------------


async def test_another_agents_key_is_refused_and_changes_nothing(
    start_gate, mock, tmp_path: Path
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    before = state_of(client)
    attempts = [
        ({"X-Agent-ID": "agent-1", "Authorization": f"Bearer {KEY_2}"}, 401),
        ({"X-Agent-ID": "agent-2", "Authorization": f"Bearer {KEY_1}"}, 401),
        ({"X-Agent-ID": "agent-1"}, 401),
        ({"X-Agent-ID": "agent-1", "Authorization": f"Bearer {UPSTREAM_KEY}"}, 401),
        ({"X-Agent-ID": "agent-1", "Authorization": f"Bearer {KEY_1.upper()}"}, 401),
        ({"X-Agent-ID": "agent-1", "Authorization": f"Bearer {KEY_1[:-1]}"}, 401),
        ({"X-Agent-ID": "agent-1", "Authorization": f"Bearer {TOKEN}"}, 401),
        ({"Authorization": f"Bearer {KEY_1}"}, 403),  # no id: `default`, not configured
        ({"X-Agent-ID": "a" * 65, "Authorization": f"Bearer {KEY_1}"}, 400),
        ({"X-Agent-ID": "agent-1,agent-2", "Authorization": f"Bearer {KEY_1}"}, 400),
    ]
    for headers, status in attempts:
        resp = await client.post(CHAT, json=chat(), headers=headers)
        text = await resp.text()
        assert resp.status == status, (headers, text)
        assert_error_shape(text, status)
        assert KEY_1 not in text and KEY_2 not in text
    # Raw bytes a compliant client would not send.
    for head in (
        b"X-Agent-ID: agent-2\r\nX-Agent-ID: agent-1\r\nAuthorization: Bearer " + KEY_1.encode(),
        b"X-Agent-ID: agent-1\r\nAuthorization: Bearer \xff" + KEY_1.encode(),
        b"X-Agent-ID: agent-1\r\nAuthorization: Bearer " + KEY_1.encode() + b"\x7f",
        b"X-Agent-ID: agent-1\r-2\r\nAuthorization: Bearer " + KEY_1.encode(),
        b"X-Agent-ID: agent-1\n agent-2\r\nAuthorization: Bearer " + KEY_1.encode(),
        b"X-Agent-ID: " + b"a" * 20_000 + b"\r\nAuthorization: Bearer " + KEY_1.encode(),
    ):
        payload = json.dumps(chat()).encode()
        answer = await raw(
            client,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            + head
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload,
        )
        assert status_of(answer) in (400, 401), answer[:300]
        if b"application/json" in answer:
            assert_error_shape(body_of(answer), status_of(answer))
    assert mock.state.chat_count() == 0
    assert state_of(client) == before
    # no known agent authenticated: counted into the next `refusals` line, none each
    assert [r for r in await lines(client) if r["event"] == "request"] == []
    assert client.app[GATE].ledger.refusals.count >= len(attempts)
    # and the right key still works, charging its own agent only
    resp = await client.post(CHAT, json=chat(), headers=AGENT_1)
    assert resp.status == 200
    after = state_of(client)
    assert after["agent-1"]["budget_spent"] > 0
    assert after["agent-2"] == before["agent-2"]


async def test_require_agent_keys_refuses_a_config_with_a_keyless_agent(tmp_path: Path) -> None:
    raw_cfg = raw_config(
        tmp_path, "http://127.0.0.1:9/api/v1", {"agent-1": agent()}, require_agent_keys=True
    )
    with pytest.raises(ConfigError) as err:
        parse_config(raw_cfg, {}, tmp_path)
    assert any("agents.agent-1.api_key" in p for p in err.value.problems), err.value.problems


# --- tier escape -------------------------------------------------------------------

OUTSIDE = "openai/gpt-4o"


@pytest.mark.parametrize(
    "fields",
    [
        {"model": OUTSIDE},
        {"model": "openai/gpt-5:online"},
        {"model": "openai/gpt-5:nitro"},
        {"model": "openai/gpt-5:floor"},
        {"model": "openai/gpt-5:free"},
        {"model": "openai/gpt-5:thinking"},
        {"model": "OpenAI/GPT-5"},
        {"model": " openai/gpt-5"},
        {"model": "openrouter/auto"},
        {"model": "@preset/everything"},
        {"models": [OUTSIDE, "openai/gpt-5"]},
        {"model": "openai/gpt-5", "models": [OUTSIDE]},
        {"route": "fallback", "models": [OUTSIDE]},
        {"preset": "everything"},
        {"provider": {"order": [OUTSIDE], "only": ["x-ai/grok-4"], "sort": "price"}},
        {"provider": {"order": OUTSIDE}},
        {"provider": OUTSIDE},
        {"model": "openai/gpt-5:nitro", "stream": True},
        {"models": [OUTSIDE], "stream": True, "route": "fallback"},
    ],
)
async def test_nothing_in_the_body_widens_the_tier(
    start_gate, mock, tmp_path: Path, fields: dict[str, Any]
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    resp = await client.post(CHAT, json=chat(**fields), headers=AGENT_1)
    await resp.read()
    assert resp.status == 200
    sent = mock.state.requests[-1]["body"]
    assert sent["model"] in PREMIUM
    assert set(sent["models"]) <= set(PREMIUM)
    assert "route" not in sent and "preset" not in sent
    text = json.dumps(sent)
    for name in (OUTSIDE, "x-ai/grok-4", ":online", ":nitro", ":floor", ":free", ":thinking"):
        assert name not in text
    assert "openrouter/auto" not in text and "@preset" not in text
    provider = sent.get("provider")
    if provider is not None:
        assert isinstance(provider, dict)
        assert "order" not in provider and "only" not in provider
    [line] = [r for r in await lines(client) if r["event"] == "request"]
    assert line["model"] in PREMIUM and "model_mismatch" not in line


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_from_outside_the_tier_is_flagged(
    start_gate, mock, tmp_path: Path, stream: bool
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    mock.state.faults.append(Fault(answer_model=OUTSIDE))
    resp = await client.post(CHAT, json=chat(stream=stream), headers=AGENT_1)
    await resp.read()
    assert resp.status == 200
    assert mock.state.requests[-1]["body"]["models"] == PREMIUM  # the gate asked right
    [line] = [r for r in await lines(client) if r["event"] == "request"]
    assert (line["model"], line["model_mismatch"]) == (OUTSIDE, True)
    assert line["tier"] == "premium"


# --- where the gate connects, and what it relays ----------------------------------


class Recorder:
    """A server that must never be reached: it records every request."""

    def __init__(self) -> None:
        self.hits: list[str] = []

    def app(self) -> web.Application:
        async def record(request: web.Request) -> web.Response:
            self.hits.append(f"{request.method} {request.path_qs}")
            return web.json_response({"hijacked": True})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        return app


async def test_nothing_a_client_sends_changes_where_the_gate_connects(
    start_gate, mock, aiohttp_server, tmp_path: Path
) -> None:
    evil = Recorder()
    server = await aiohttp_server(evil.app())
    elsewhere = str(server.make_url("/api/v1"))
    client = await locked_gate(start_gate, mock, tmp_path)
    headers = {
        **AGENT_1,
        "Host": f"{server.host}:{server.port}",
        "X-Forwarded-Host": f"{server.host}:{server.port}",
        "X-Forwarded-Proto": "http",
        "Forwarded": f"host={server.host}:{server.port}",
        "X-Original-URL": elsewhere,
        "X-Upstream": elsewhere,
        "HTTP-Referer": elsewhere,
    }
    fields = {name: elsewhere for name in ("base_url", "api_base", "baseURL", "url", "endpoint")}
    for stream in (False, True):
        resp = await client.post(CHAT, json=chat(stream=stream, **fields), headers=headers)
        await resp.read()
        assert resp.status == 200
    assert evil.hits == []
    assert mock.state.chat_count() == 2
    for sent in mock.state.requests:
        names = {n.lower() for n in sent["headers"]}
        assert not names & {"x-forwarded-host", "forwarded", "x-original-url", "x-upstream"}
        assert names.isdisjoint({"x-agent-id", "http-referer"})


async def test_redirects_from_upstream_are_not_followed(
    start_gate, aiohttp_server, tmp_path: Path
) -> None:
    evil = Recorder()
    target = await aiohttp_server(evil.app())

    async def redirect(request: web.Request) -> web.Response:
        location = str(target.make_url(request.path_qs))
        status = 307 if request.method == "POST" else 302
        return web.Response(status=status, headers={"Location": location})

    redirector = web.Application()
    redirector.router.add_route("*", "/{tail:.*}", redirect)
    upstream = await aiohttp_server(redirector)
    cfg = make_config(
        tmp_path, str(upstream.make_url("/api/v1")), {"agent-1": agent(api_key=KEY_1)}
    )
    client = await start_gate(cfg)
    for stream in (False, True):
        resp = await client.post(CHAT, json=chat(stream=stream), headers=AGENT_1)
        text = await resp.text()
        assert resp.status == 502, text
        error = assert_error_shape(text, 502)
        assert "redirect" in error["message"]
        assert "Location" not in resp.headers
    assert evil.hits == []
    request_rows = [r for r in await lines(client) if r["event"] == "request"]
    assert [(r["status"], r["cost"]) for r in request_rows] == [(502, 0), (502, 0)]


# Random, so that no fragment of it is an English word the gate might write anyway.
SECRET_KEY = "sk-or-v1-" + secrets.token_hex(32)


def fragments(secret: str, size: int = 8) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def assert_no_fragment(text: str, secret: str) -> None:
    found = [f for f in fragments(secret) if f in text]
    assert not found, f"{len(found)} fragment(s) of a secret leaked, e.g. {found[0]!r}"


@pytest.mark.parametrize(
    ("fault", "stream"),
    [
        (Fault(status=400, message=f"bad request for key ...{SECRET_KEY[7:25]}..."), False),
        (Fault(status=401, message=f"invalid key {SECRET_KEY[3:15]} {TOKEN[2:14]}"), False),
        (Fault(status=400, message=f"Bearer {KEY_1}"), True),
        (Fault(error_after=2, message=f"provider saw {SECRET_KEY[5:20]}"), True),
        (Fault(error_after=2, message=f"provider saw {SECRET_KEY}"), False),
    ],
    ids=["400", "401", "400-stream", "mid-stream-error", "200-with-error"],
)
async def test_upstream_errors_that_echo_a_secret_are_scrubbed(
    start_gate, mock, tmp_path: Path, fault: Fault, stream: bool
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path, openrouter={"api_key": SECRET_KEY})
    mock.state.faults.append(fault)
    resp = await client.post(CHAT, json=chat(stream=stream), headers=AGENT_1)
    text = await resp.text()
    for secret in (SECRET_KEY, TOKEN, KEY_1):
        assert_no_fragment(text, secret)
    if resp.status != 200:
        assert_error_shape(text, resp.status)
    elif stream:
        errors = [json.loads(d) for d in sse_data(text.encode()) if '"error"' in d]
        assert errors and "[redacted]" in json.dumps(errors)
    else:
        assert "[redacted]" in json.loads(text)["error"]["message"]
    log_text = json.dumps(await lines(client), default=str)
    for secret in (SECRET_KEY, TOKEN, KEY_1):
        assert_no_fragment(log_text, secret)


# --- hostile input -----------------------------------------------------------------

BODY = json.dumps(chat()).encode()
AUTH_LINES = b"X-Agent-ID: agent-1\r\nAuthorization: Bearer " + KEY_1.encode() + b"\r\n"
AUTH_LINES += b"Content-Type: application/json\r\n"
CONFLICTS = [
    b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 10\r\n\r\n0\r\n\r\n",
    b"Content-Length: %d\r\nContent-Length: 5\r\n\r\n" % len(BODY) + BODY,
    b"Content-Length: %d, 5\r\n\r\n" % len(BODY) + BODY,
    b"Content-Length: +%d\r\n\r\n" % len(BODY) + BODY,
    b"Content-Length: -1\r\n\r\n" + BODY,
    b"Content-Length: 0x10\r\n\r\n" + BODY,
    b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"Transfer-Encoding: identity\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY,
    b"Transfer-Encoding: gzip\r\n\r\n" + BODY,
    b"Transfer-Encoding: xchunked\r\n\r\n" + BODY,
    b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + BODY + b"\r\n0\r\n\r\n",
]


async def test_conflicting_lengths_are_refused_before_the_gate(
    start_gate, mock, tmp_path: Path
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    before = state_of(client)
    for tail in CONFLICTS:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        answer = await raw(client, head + AUTH_LINES + tail)
        assert status_of(answer) == 400, (tail[:60], answer[:300])
    # A request smuggled after a body is just another request: it needs the token too.
    smuggled = http("POST", "/api/reset/agent-1")
    payload = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n" + AUTH_LINES
    payload += b"Content-Length: 4\r\n\r\n{}{}" + smuggled
    answer = await raw(client, payload)
    assert b" 401 " in answer
    assert mock.state.chat_count() == 0
    assert state_of(client) == before
    assert all(r["event"] == "request" and r["cost"] == 0 for r in await lines(client))


async def test_a_slow_body_is_cut_at_the_deadline(start_gate, mock, tmp_path: Path) -> None:
    client = await locked_gate(start_gate, mock, tmp_path, limits={"client_timeout_seconds": 1})
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    started = time.monotonic()

    async def trickle() -> None:  # a body byte every 0.3 s: never the whole body in time
        for byte in BODY:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.3)

    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        + AUTH_LINES
        + b"Content-Length: %d\r\n\r\n" % len(BODY)
    )
    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(8):
            answer = await read_response(reader)
    finally:
        sender.cancel()
        writer.close()
    assert status_of(answer) == 408, answer
    assert_error_shape(body_of(answer), 408)
    assert time.monotonic() - started < 4
    assert mock.state.chat_count() == 0
    [line] = [r for r in await lines(client) if r["event"] == "request"]
    assert (line["status"], line["cost"]) == (408, 0)


async def test_a_compressed_body_is_measured_as_it_inflates(
    start_gate, mock, tmp_path: Path
) -> None:
    """A small gzip body that inflates to 50 MB is cut at max_body_bytes, not inflated
    whole first."""
    client = await locked_gate(start_gate, mock, tmp_path, limits={"max_body_bytes": 65536})
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = packer.compress(b'{"messages": [{"role": "user", "content": "' + b"a" * 50_000_000)
    bomb += packer.flush()
    assert len(bomb) < 65536
    started = time.monotonic()
    headers = {**AGENT_1, "Content-Encoding": "gzip", "Content-Type": "application/json"}
    resp = await client.post(CHAT, data=bomb, headers=headers)
    assert resp.status == 413, await resp.text()
    assert_error_shape(await resp.text(), 413)
    assert time.monotonic() - started < 5
    assert mock.state.chat_count() == 0


async def test_a_stream_reader_that_never_reads_is_cut_and_others_are_served(
    start_gate, mock, tmp_path: Path
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path, limits={"client_timeout_seconds": 1})
    settled = Settlements(client)
    mock.state.faults.append(Fault(long_line=12_000_000, chunks=3))
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    started = time.monotonic()
    try:
        async with asyncio.timeout(20):
            await loop.sock_connect(sock, (client.server.host, client.server.port))
            payload = json.dumps(chat(stream=True)).encode()
            await loop.sock_sendall(sock, http("POST", CHAT, list(AGENT_1.items()), payload))
            while mock.state.chat_count() == 0:
                await asyncio.sleep(0.01)
            # While that reader stalls, everyone else is served at once.
            for _ in range(3):
                t0 = time.monotonic()
                assert (await client.get("/api/health")).status == 200
                resp = await client.post(CHAT, json=chat(), headers=AGENT_1)
                assert resp.status == 200
                assert time.monotonic() - t0 < 2
            await settled.wait(4, timeout=15)
    finally:
        sock.close()
    assert time.monotonic() - started < 15
    rows = [r for r in await lines(client) if r["event"] == "request"]
    [stalled] = [r for r in rows if r["stream"]]
    assert stalled["status"] == 499 and stalled["client_disconnected"] is True
    assert stalled["cost"] > 0  # drained to its usage and billed


async def test_the_concurrency_cap_answers_503_and_health_stays_fast(
    start_gate, mock, tmp_path: Path
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path, limits={"max_concurrent_upstream": 2})
    mock.state.faults.extend([Fault(first_delay=1.5), Fault(first_delay=1.5)])
    async with asyncio.timeout(15):
        busy = [
            asyncio.create_task(client.post(CHAT, json=chat(), headers=AGENT_1)) for _ in range(2)
        ]
        while mock.state.chat_count() < 2:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        resp = await client.post(CHAT, json=chat(), headers=AGENT_1)
        text = await resp.text()
        assert resp.status == 503, text
        assert resp.headers["Retry-After"] == "1"
        assert_error_shape(text, 503)
        health = await client.get("/api/health")
        assert health.status == 200
        assert time.monotonic() - t0 < 0.5
        assert mock.state.chat_count() == 2
        for task in busy:
            answer = await task
            assert answer.status == 200
            await answer.read()
    resp = await client.post(CHAT, json=chat(), headers=AGENT_1)  # room again
    assert resp.status == 200


async def subprocess_gate(mock: Any, tmp_path: Path, env: dict[str, str], **top: Any) -> Any:
    raw_cfg = raw_config(
        tmp_path,
        mock.base_url,
        agents=keyed_agents(),
        require_agent_keys=True,
        openrouter={"api_key": "${OPENROUTER_API_KEY}"},
        **top,
    )
    path = write_config(tmp_path / "gate.yaml", raw_cfg)
    return await spawn_gate(path, tmp_path, env)


async def test_slow_headers_are_cut_and_do_not_starve_others(mock, tmp_path: Path) -> None:
    gate = await subprocess_gate(
        mock,
        tmp_path,
        {"OPENROUTER_API_KEY": UPSTREAM_KEY, "GATE_ADMIN_TOKEN": TOKEN},
        limits={"client_timeout_seconds": 1},
    )
    host, port = gate.url.removeprefix("http://").rsplit(":", 1)
    request = http("POST", CHAT, [("X-Agent-ID", "agent-1")], BODY)

    async def slowloris() -> float:
        """Send a header byte every 0.25 s; return how long until the gate hung up."""
        reader, writer = await asyncio.open_connection(host, int(port))
        started = time.monotonic()
        try:
            for byte in request:
                writer.write(bytes([byte]))
                with suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(1), 0.25) == b"":
                        break
        except ConnectionError:
            pass
        finally:
            writer.close()
        return time.monotonic() - started

    try:
        async with asyncio.timeout(20), aiohttp.ClientSession() as session:
            lorises = [asyncio.create_task(slowloris()) for _ in range(30)]
            await asyncio.sleep(0.3)
            for _ in range(3):  # meanwhile everyone else is served at once
                t0 = time.monotonic()
                async with session.get(gate.url + "/api/health") as resp:
                    assert resp.status == 200
                assert time.monotonic() - t0 < 0.5
                await asyncio.sleep(0.2)
            held = await asyncio.gather(*lorises)
            assert max(held) < 4, held  # cut after ~1 s, not after the whole request
            async with session.post(gate.url + CHAT, json=chat(), headers=AGENT_1) as resp:
                assert resp.status == 200
    finally:
        assert await gate.stop() == 0
    assert mock.state.chat_count() == 1


# --- the OpenAPI description -------------------------------------------------------


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, the admin sub-app's included (not
    the catch-all that says a path is not served)."""
    return {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None and r.handler is not not_served
    }


async def test_openapi_describes_every_route_and_needs_no_token(
    start_gate, mock, tmp_path: Path
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    described = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert described == served_routes(client.app)
    assert ("POST", "/api/reset/{agent_id}") in described
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            inference = path.startswith(("/v1/", "/api/v1/"))  # SPEC: /api/v1/* is inference
            admin = (path.startswith("/api/") and not inference and path != "/api/health") or (
                path == "/metrics"
            )
            assert (operation.get("security") == [{"adminToken": []}]) == admin, path
            for status, answer in operation["responses"].items():
                if (path, status) == ("/api/health", "503") or status < "4":
                    continue
                ref = answer.get("$ref", "")
                found = doc["components"]["responses"][ref.rsplit("/", 1)[1]] if ref else answer
                schema = found["content"]["application/json"]["schema"]
                shape = "AnthropicError" if path.endswith("/messages") else "Error"
                assert schema == {"$ref": f"#/components/schemas/{shape}"}, (path, status)
    text = json.dumps(doc)
    assert TOKEN not in text and UPSTREAM_KEY not in text


# --- the canary --------------------------------------------------------------------


async def test_a_canary_key_never_leaves_the_gate(mock, tmp_path: Path) -> None:
    """A fresh OpenRouter key runs through every attack above against a real gate
    process; no byte of its output may carry the key or any 8 characters of it."""
    canary = "sk-or-v1-" + secrets.token_hex(32)
    admin_token = "adm-" + secrets.token_hex(16)
    mock.state.expected_key = canary  # upstream accepts the canary only
    gate = await subprocess_gate(
        mock,
        tmp_path,
        {"OPENROUTER_API_KEY": canary, "GATE_ADMIN_TOKEN": admin_token},
        limits={"client_timeout_seconds": 2, "max_body_bytes": 8192},
    )
    admin = {"Authorization": f"Bearer {admin_token}"}
    host, port = gate.url.removeprefix("http://").rsplit(":", 1)
    bodies: list[bytes] = []
    echoes: list[bytes] = []
    statuses: list[int] = []

    async def call(session: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> int:
        async with session.request(method, gate.url + path, **kw) as resp:
            bodies.append(await resp.read())
            bodies.append(json.dumps(dict(resp.headers)).encode())
            statuses.append(resp.status)
            return resp.status

    def faults(*items: Fault) -> None:
        mock.state.faults.extend(items)

    try:
        async with asyncio.timeout(60), aiohttp.ClientSession() as s:
            # plain use, both modes
            assert await call(s, "POST", CHAT, json=chat(), headers=AGENT_1) == 200
            assert await call(s, "POST", CHAT, json=chat(stream=True), headers=AGENT_1) == 200
            # upstream errors echoing the key, whole or in part
            faults(Fault(status=400, message=f"bad key {canary}"))
            assert await call(s, "POST", CHAT, json=chat(), headers=AGENT_1) == 400
            faults(Fault(status=401, message=f"User not found: ...{canary[12:40]}..."))
            assert await call(s, "POST", CHAT, json=chat(), headers=AGENT_1) == 401
            faults(*[Fault(status=500, message=f"oops {canary[30:]}")] * 4)
            assert await call(s, "POST", CHAT, json=chat(), headers=AGENT_1) == 500
            faults(*[Fault(status=429, retry_after=0, message=canary[-20:])] * 4)
            assert await call(s, "POST", CHAT, json=chat(stream=True), headers=AGENT_1) == 429
            faults(Fault(status=402, message=f"credits gone for {canary[:30]}"))
            assert await call(s, "POST", CHAT, json=chat(), headers=AGENT_1) == 402
            faults(Fault(error_after=2, message=f"provider echoed {canary}"))
            assert await call(s, "POST", CHAT, json=chat(stream=True), headers=AGENT_1) == 200
            faults(Fault(error_after=1, message=f"provider echoed {canary[9:50]}"))
            assert await call(s, "POST", CHAT, json=chat(), headers=AGENT_1) == 200
            faults(Fault(answer_model=OUTSIDE))
            assert await call(s, "POST", CHAT, json=chat(), headers=AGENT_1) == 200
            # tier escape
            for fields in (
                {"models": [OUTSIDE]},
                {"model": "openai/gpt-5:online"},
                {"provider": {"only": [OUTSIDE]}, "route": "fallback"},
            ):
                assert await call(s, "POST", CHAT, json=chat(**fields), headers=AGENT_1) == 200
            # identity
            other = {"X-Agent-ID": "agent-1", "Authorization": f"Bearer {KEY_2}"}
            assert await call(s, "POST", CHAT, json=chat(), headers=other) == 401
            assert (
                await call(s, "POST", CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"}) == 401
            )
            bad_id = {**AGENT_1, "X-Agent-ID": "a" * 65}
            assert await call(s, "POST", CHAT, json=chat(), headers=bad_id) == 400
            assert await call(s, "POST", CHAT, json=chat(), headers={"X-Agent-ID": "x"}) == 403
            # hostile bodies
            for data in (b"{nope", b"[" * 50_000, b'{"a": "\xff"}', b"x" * 9000):
                json_type = {**AGENT_1, "Content-Type": "application/json"}
                status = await call(s, "POST", CHAT, data=data, headers=json_type)
                assert status in (400, 413)
            # admin: without, with a wrong, and with the right token
            assert await call(s, "POST", "/api/reset/agent-1") == 401
            wrong = {"Authorization": f"Bearer {canary}"}
            assert await call(s, "GET", "/api/spend", headers=wrong) == 401
            for method, path in (
                ("GET", "/api/spend"),
                ("GET", "/api/spend/agent-1"),
                ("POST", "/api/reset/agent-2"),
                ("POST", "/api/reload"),
                ("GET", "/api/prices"),
                ("GET", "/api/alerts"),
                ("GET", "/api/upstream"),
                ("GET", "/metrics"),
            ):
                assert await call(s, method, path, headers=admin) == 200
            budget = {"budget_total": 60}
            assert await call(s, "POST", "/api/budget/agent-1", json=budget, headers=admin) == 200
            for path in ("/api/health", "/openapi.json", "/v1/models", "/nothing"):
                await call(s, "GET", path, headers=AGENT_1)
            # raw bytes: path tricks, CR/LF, a malformed Authorization line, conflicts
            raw_attacks = [http(method, target) for method, target in CHANGE_TRICKS]
            bad_auth = b"Authorization: Bearer " + KEY_1.encode() + b"\r-x\r\n"
            raw_attacks += [
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n" + bad_auth + b"\r\n",
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                b"X-Agent-ID: a\nb\r\n\r\n",
                b"GET /api/spend HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
                + admin_token.encode()
                + b"\x00\r\n\r\n",
            ]
            head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            raw_attacks += [head + AUTH_LINES + tail for tail in CONFLICTS]
            for attack in raw_attacks:  # aiohttp's 400s quote the sender's own bytes back
                echoes.append(await exchange(host, int(port), attack))
    finally:
        assert await gate.stop() == 0
    assert gate.proc.stdout is not None
    stdout = (await gate.proc.stdout.read()).decode(errors="replace")
    stderr = gate.errors()
    spend_log = (tmp_path / "spend.jsonl").read_text()
    answers = b"\n".join(bodies).decode(errors="replace")
    echoed = b"\n".join(echoes).decode(errors="replace")

    assert statuses.count(200) >= 10  # the attacks ran against a working gate
    assert mock.state.chat_count() >= 15
    for name, text in (
        ("stdout", stdout),
        ("stderr", stderr),
        ("spend log", spend_log),
        ("responses", answers),
        ("raw answers", echoed),
    ):
        assert canary not in text, name
        leaked = [f for f in fragments(canary) if f in text]
        assert not leaked, f"{name}: fragment(s) of the canary key: {leaked[:3]}"
    for text in (stdout, stderr, spend_log, answers):
        assert admin_token not in text
    for text in (stdout, stderr, spend_log):  # logs never carry agent keys or headers
        for secret in (KEY_1, KEY_2, admin_token):
            assert_no_fragment(text, secret)
        assert not re.search(r"(?i)authorization|bearer", text), text[-2000:]
    assert "Missing expected LF" in stderr  # the malformed request was logged, safely
    rows = request_lines(tmp_path / "spend.jsonl")
    assert any(r.get("model_mismatch") for r in rows)
    assert sum((Decimal(str(r["cost"])) for r in rows), Decimal(0)) > 0
