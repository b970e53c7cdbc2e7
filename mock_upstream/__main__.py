"""`python -m mock_upstream [--host H] [--port P] [--log PATH]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from .app import create_app


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mock_upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument(
        "--log",
        type=Path,
        default=Path("openrouter_requests.log"),
        help="request log, one JSON line per request (default: %(default)s)",
    )
    return parser.parse_args(argv)


def _url(address: Sequence[Any]) -> str:
    """`http://host:port` from a socket name (IPv4 or IPv6)."""
    host, port = address[0], address[1]
    host = f"[{host}]" if ":" in str(host) else str(host)
    return f"http://{host}:{port}"


async def serve(host: str, port: int, log_path: Path) -> None:
    """Serve until SIGINT/SIGTERM; announce the real bound address once listening."""
    runner = web.AppRunner(create_app(request_log=log_path))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        print(f"mock_upstream listening on {_url(runner.addresses[0])}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(serve(args.host, args.port, args.log))
    except OSError as exc:
        print(f"mock_upstream: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
