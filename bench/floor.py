"""The floor: the thinnest aiohttp proxy there can be, for the bench to measure the gate
against. `python -m bench.floor --upstream URL [--host H] [--port P]`.

It takes the POST, forwards it on one pooled ClientSession and relays the bytes as they
come (`readany()`), status and content type copied — nothing else. Same Python, same
aiohttp and the same event loop as the gate (`gate.ops.runtime`: uvloop where installed,
else asyncio's own; GATE_LOOP chooses).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from gate.ops import runtime

FORWARDED = ("Authorization", "Content-Type")
SESSION = web.AppKey("session", aiohttp.ClientSession)


def create_app(upstream: str) -> web.Application:
    app = web.Application()

    async def session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)
        app[SESSION] = aiohttp.ClientSession(connector=connector)
        yield
        await app[SESSION].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        headers = {k: request.headers[k] for k in FORWARDED if k in request.headers}
        body = await request.read()
        url = upstream + request.path_qs
        async with app[SESSION].post(url, data=body, headers=headers) as up:
            resp = web.StreamResponse(status=up.status)
            resp.content_type = up.content_type
            await resp.prepare(request)
            while chunk := await up.content.readany():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.cleanup_ctx.append(session)
    app.router.add_post("/{tail:.*}", proxy)
    return app


async def serve(upstream: str, host: str, port: int) -> None:
    runner = web.AppRunner(create_app(upstream), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        for bound_host, bound_port in (a[:2] for a in runner.addresses):
            print(f"floor listening on http://{bound_host}:{bound_port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--upstream", required=True, help="the mock's base URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # the gate's own switch, so that both run on the same loop (bench --loop)
    runtime.run(serve(args.upstream.rstrip("/"), args.host, args.port), os.environ)


if __name__ == "__main__":
    main()
