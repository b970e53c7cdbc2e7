"""Upstream through Portkey (fixed headers on every call) and the key's status in
/api/health: confirmed by the background GET /key, rejected on a 401."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from gate.config import load_config, parse_config
from mock_upstream import create_app as create_mock_app

from .support import UPSTREAM_KEY, chat, raw_config, write_config

CHAT = "/v1/chat/completions"
AGENT_1 = {"X-Agent-ID": "agent-1"}
PORTKEY = {
    "x-portkey-virtual-key": "${PORTKEY_VIRTUAL_KEY}",
    "x-portkey-provider": "openrouter",
    "x-portkey-api-key": "${PORTKEY_API_KEY}",
    "HTTP-Referer": "${OPENROUTER_REFERER:-https://execwall.example}",
    "X-Title": "Execwall OR Gate",
}
ENV = {"PORTKEY_VIRTUAL_KEY": "openrouter-fallback", "PORTKEY_API_KEY": "pk-live-secret-0001"}


async def test_portkey_headers_reach_upstream_on_every_call(
    start_gate, aiohttp_server, tmp_path: Path
):
    seen: list[tuple[str, dict[str, str]]] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append((request.path, {k.lower(): v for k, v in request.headers.items()}))
        return await handler(request)

    app = create_mock_app()
    app.middlewares.append(record)
    server = await aiohttp_server(app)
    raw = raw_config(tmp_path, str(server.make_url("/api/v1")), openrouter={"headers": PORTKEY})
    client = await start_gate(parse_config(raw, ENV, tmp_path))
    assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 200
    resp = await client.post(CHAT, json=chat(stream=True), headers=AGENT_1)
    assert resp.status == 200
    await resp.read()
    await wait_key(client, "valid")

    paths = [path for path, _ in seen]
    assert paths.count("/api/v1/chat/completions") == 2
    assert "/api/v1/models" in paths and "/api/v1/key" in paths  # prices, key probe
    # One probe of GET /key serves both the key status and the balance.
    assert paths.count("/api/v1/key") == 1
    for _, headers in seen:
        assert headers["x-portkey-virtual-key"] == "openrouter-fallback"
        assert headers["x-portkey-provider"] == "openrouter"
        assert headers["x-portkey-api-key"] == "pk-live-secret-0001"
        assert headers["http-referer"] == "https://execwall.example"
        assert headers["x-title"] == "Execwall OR Gate"
        assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the gate's own key


async def test_health_confirms_the_key_then_flags_a_401(start_gate, mock, tmp_path: Path):
    client = await start_gate(parse_config(raw_config(tmp_path, mock.base_url), {}, tmp_path))
    key = await wait_key(client, "valid")
    assert key["key_rejected"] is False and key["confirmed_at"] is not None

    mock.state.expected_key = "sk-or-v1-rotated"  # the key was revoked upstream
    resp = await client.post(CHAT, json=chat(), headers=AGENT_1)
    assert resp.status == 401
    health = await (await client.get("/api/health")).json()
    assert health["status"] == "degraded"
    assert health["upstream_key"]["status"] == "rejected"
    assert health["upstream_key"]["key_rejected"] is True
    assert "key rejected" in health["upstream_key"]["detail"]
    assert health["upstream_key"]["confirmed_at"] == key["confirmed_at"]  # when it last worked


async def test_rotating_the_key_clears_the_flag_on_reload(start_gate, mock, tmp_path: Path):
    """The key comes from a command (a secret manager); after rotation, /api/reload runs
    it again and health shows the new key confirmed at once."""
    store = tmp_path / "store"
    store.write_text("sk-or-v1-old")
    read_store = [sys.executable, "-c", f"print(open({str(store)!r}).read())"]
    raw = raw_config(
        tmp_path,
        mock.base_url,
        openrouter={"api_key": {"command": read_store}, "key_check_seconds": 3600},
        admin_token="adm",
    )
    cfg = load_config(write_config(tmp_path / "gate.yaml", raw), {})
    mock.state.expected_key = "sk-or-v1-new"  # upstream already moved on
    client = await start_gate(cfg)
    await wait_key(client, "rejected")  # found by the probe at start, not by a request

    store.write_text("sk-or-v1-new")
    reload = await client.post("/api/reload", headers={"Authorization": "Bearer adm"})
    assert reload.status == 200
    key = await wait_key(client, "valid")
    assert key["key_rejected"] is False and "rejected_at" not in key
    assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 200


async def test_pass_through_has_no_key_to_check(start_gate, mock, tmp_path: Path):
    raw = raw_config(tmp_path, mock.base_url, openrouter={"api_key": ""})
    client = await start_gate(parse_config(raw, {}, tmp_path))
    key = await wait_key(client, "pass-through")
    assert key["key_rejected"] is False
    assert UPSTREAM_KEY not in str(key)


async def wait_key(client: Any, status: str, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            health = await (await client.get("/api/health")).json()
            if health["upstream_key"]["status"] == status:
                return health["upstream_key"]
            await asyncio.sleep(0.02)
