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
from gate.upstream.sendmark import SendMarkConnector

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


async def test_before_send_runs_on_new_and_reused_connections_before_the_request(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    events: list[str] = []

    async def completions(request: web.Request) -> web.Response:
        events.append("upstream " + (await request.read()).decode())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/api/v1/chat/completions", completions)
    server = await aiohttp_server(app)
    config = OpenRouterConfig(str(server.make_url("/api/v1")), None)

    def mark(name: str) -> Callable[[], Awaitable[None]]:
        async def before_send() -> None:
            events.append("mark " + name)
            if name == "refused":
                raise RuntimeError("the mark cannot be written")

        return before_send

    connector = SendMarkConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        upstream = Upstream(session, config, RetryConfig())
        for name in ("first", "reused", "refused", "after"):
            try:
                resp = await upstream.chat(name.encode(), "Bearer k", before_send=mark(name))
            except RuntimeError:
                assert name == "refused"
                continue
            await resp.read()
            resp.release()
        resp = await upstream.chat(b"unmarked", "Bearer k")  # no before_send: none runs
        await resp.read()
        resp.release()
    assert events == [
        "mark first",
        "upstream first",
        "mark reused",
        "upstream reused",
        "mark refused",  # never reached upstream
        "mark after",
        "upstream after",
        "upstream unmarked",
    ]
