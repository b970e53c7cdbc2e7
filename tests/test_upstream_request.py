"""The chat POST the gate writes upstream: its headers, names and order, exactly as
before they were built once per config (a client that reuses them must not leak one
request's Authorization into the next)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from gate.config.types import OpenRouterConfig, RetryConfig
from gate.upstream.client import Upstream

FIXED = {"HTTP-Referer": "https://execwall.example", "X-Title": "Execwall OR Gate"}


async def test_chat_post_headers_in_order_and_per_request_authorization(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    seen: list[list[tuple[str, str]]] = []

    async def completions(request: web.Request) -> web.Response:
        seen.append([(k.decode(), v.decode()) for k, v in request.raw_headers])
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/api/v1/chat/completions", completions)
    server = await aiohttp_server(app)
    config = OpenRouterConfig(str(server.make_url("/api/v1")), None, headers=FIXED)
    async with aiohttp.ClientSession() as session:
        upstream = Upstream(session, config, RetryConfig())
        for auth in ("Bearer sk-one", "Bearer sk-two"):
            resp = await upstream.chat(b'{"model":"m"}', auth)
            assert await resp.json() == {"ok": True}
            resp.release()
    host = f"{server.host}:{server.port}"
    for auth, headers in zip(("Bearer sk-one", "Bearer sk-two"), seen, strict=True):
        assert headers == [
            ("Host", host),
            ("HTTP-Referer", "https://execwall.example"),
            ("X-Title", "Execwall OR Gate"),
            ("Authorization", auth),
            ("Content-Type", "application/json"),
            ("Accept", "*/*"),
            ("Accept-Encoding", headers[6][1]),
            ("User-Agent", headers[7][1]),
            ("Content-Length", "13"),
        ]
    assert config.headers == FIXED  # the config's own mapping is never written into
