"""A loopback pass-through in front of the gate that writes down what a client sent.

The mock's request log shows the body after the gate rewrote it; this shows the body
as the agent sent it. Answers are relayed chunk by chunk, unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})
KEPT_HEADERS = ("x-agent-id", "authorization", "x-api-key", "anthropic-version", "user-agent")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    size: int
    status: int = 0


@dataclass
class Recorder:
    target: str
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> Recorder:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw[:200].decode(errors="replace")
        kept = {k.lower(): v for k, v in request.headers.items() if k.lower() in KEPT_HEADERS}
        if "authorization" in kept:
            kept["authorization"] = kept["authorization"].split(" ", 1)[0] + " <redacted>"
        if "x-api-key" in kept:
            kept["x-api-key"] = "<redacted>"
        seen = Seen(request.method, request.path_qs, kept, body, len(raw))
        self.seen.append(seen)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with self._session.request(
            request.method, self.target + request.path_qs, data=raw, headers=headers
        ) as upstream:
            seen.status = upstream.status
            out = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP:
                    out.headers[k] = v
            await out.prepare(request)
            async for chunk in upstream.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out
