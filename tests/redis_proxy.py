"""A TCP proxy in front of the test's redis-server that can hold one command at the
door: once armed with a marker (bytes the command carries, e.g. a settlement's done
key), the first client chunk containing it waits until `release()`; `caught` is set
when it arrives, `answered` when Redis's reply to it has gone back. Everything else
passes through. A slowed Redis for one instance, with events instead of sleeps."""

from __future__ import annotations

import asyncio
import contextlib


class HoldingProxy:
    def __init__(self, port: int) -> None:
        self.port = port
        self.marker: bytes | None = None
        self.caught = asyncio.Event()
        self.answered = asyncio.Event()
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    def arm(self, marker: bytes) -> None:
        self.marker = marker
        self.caught.clear()
        self.answered.clear()
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        held = [False]
        tasks = [
            asyncio.create_task(self._upstream(reader, up_writer, held)),
            asyncio.create_task(self._downstream(up_reader, writer, held)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                w.close()

    async def _upstream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, held: list[bool]
    ) -> None:
        while data := await reader.read(65536):
            if self.marker is not None and self.marker in data:
                self.marker = None
                held[0] = True
                self.caught.set()
                await self._released.wait()
            writer.write(data)
            await writer.drain()

    async def _downstream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, held: list[bool]
    ) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
            if held[0]:
                held[0] = False
                self.answered.set()
