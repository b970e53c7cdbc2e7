"""A throwaway `redis-server` for the shared-store tests: own port, no persistence."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from contextlib import suppress
from pathlib import Path

import pytest
from redis.asyncio import Redis

READY_TIMEOUT = 10.0


def redis_binary() -> str:
    """The redis-server binary; in CI (CI=true) a missing one fails, locally it skips."""
    found = shutil.which("redis-server")
    if found is None:
        message = "redis-server is not installed: the shared spend store (Redis) is NOT tested"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, binary: str, port: int, log: Path) -> None:
        self.binary = binary
        self.port = port
        self.log = log
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                self.binary,
                "--save",
                "",
                "--appendonly",
                "no",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                stdout=out,
                stderr=out,
            )
        client = Redis.from_url(self.url)
        try:
            for _ in range(int(READY_TIMEOUT / 0.02)):  # bounded polling of a subprocess
                with suppress(OSError, ConnectionError, Exception):
                    if await client.ping():
                        return
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        raise AssertionError(f"redis-server did not start:\n{self.log.read_text()}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self.proc = None
