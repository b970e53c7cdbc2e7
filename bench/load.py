"""The Python load generator: closed loop, open loop, concurrent and held-open streams.

Every request is timed on the client: open-loop latency from the moment the request was
scheduled (not sent), so a slow server cannot hide its queue; streams from the moment
the request was sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .streamcheck import StreamCheck


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send, and the same request as the gate or the mock wants it."""

    name: str
    url: str
    headers: dict[str, str]
    body: bytes
    stream_body: bytes


def new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=False)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)
    )


@dataclass(slots=True)
class ClosedLoop:
    requests: int
    failures: int
    seconds: float


async def closed_loop(
    session: aiohttp.ClientSession, target: Target, connections: int, duration: float
) -> ClosedLoop:
    """`connections` workers, each sending its next request as soon as the last ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    counts = [0, 0]

    async def worker() -> None:
        while loop.time() < deadline:
            try:
                async with session.post(target.url, data=target.body, headers=target.headers) as r:
                    await r.read()
                    counts[0 if r.status == 200 else 1] += 1
            except aiohttp.ClientError:
                counts[1] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return ClosedLoop(counts[0], counts[1], time.perf_counter() - started)


@dataclass(slots=True)
class OpenLoop:
    latencies: list[float]  # seconds, from each request's scheduled time
    failures: int
    late_starts: int  # requests the client itself could not send within 1 ms of schedule


async def open_loop(
    session: aiohttp.ClientSession, target: Target, rate: float, duration: float
) -> OpenLoop:
    """Send `rate` requests a second at fixed intervals, whatever the answers do."""
    loop = asyncio.get_running_loop()
    result = OpenLoop([], 0, 0)

    async def one(scheduled: float) -> None:
        if loop.time() - scheduled > 0.001:
            result.late_starts += 1
        try:
            async with session.post(target.url, data=target.body, headers=target.headers) as r:
                await r.read()
                ok = r.status == 200
        except aiohttp.ClientError:
            ok = False
        if ok:
            result.latencies.append(loop.time() - scheduled)
        else:
            result.failures += 1

    count = max(1, round(rate * duration))
    start = loop.time() + 0.01
    tasks = []
    for index in range(count):
        when = start + index / rate
        delay = when - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(when)))
    await asyncio.gather(*tasks)
    return result


@dataclass(slots=True)
class StreamResult:
    first_chunk: float  # seconds from send to the first content chunk (NaN if none)
    total: float  # seconds from send to the end of the stream
    problems: list[str]


async def one_stream(
    session: aiohttp.ClientSession, target: Target, chunks: int, want_usage: bool
) -> StreamResult:
    check = StreamCheck(chunks, want_usage)
    sent = time.perf_counter()
    try:
        async with session.post(target.url, data=target.stream_body, headers=target.headers) as r:
            if r.status != 200:
                check.notes.append(f"status {r.status}")
            async for data in r.content.iter_any():
                check.feed(data, time.perf_counter())
    except aiohttp.ClientError as exc:
        check.notes.append(f"client error: {type(exc).__name__}")
    ended = time.perf_counter()
    first = check.first_chunk_at - sent if check.first_chunk_at is not None else float("nan")
    return StreamResult(first, ended - sent, check.problems())


async def streams(
    session: aiohttp.ClientSession, target: Target, count: int, chunks: int, want_usage: bool
) -> list[StreamResult]:
    """`count` streams started together."""
    return list(
        await asyncio.gather(
            *(one_stream(session, target, chunks, want_usage) for _ in range(count))
        )
    )


@dataclass(slots=True)
class Held:
    opened: int = 0
    open_now: int = 0
    max_open: int = 0
    problems: list[str] = field(default_factory=list)
    failed_streams: int = 0
    all_open_after: float = float("nan")  # seconds from the first send to all open


async def held_streams(
    session: aiohttp.ClientSession,
    target: Target,
    count: int,
    chunks: int,
    open_limit: int,
    when_all_open: Callable[[], None],
) -> Held:
    """Open `count` streams (at most `open_limit` connecting at once, so no accept queue
    overflows), call `when_all_open` once every one has its first bytes, then read each
    to its end and check it."""
    held = Held()
    gate = asyncio.Semaphore(open_limit)
    all_open = asyncio.Event()
    started = time.perf_counter()

    async def one() -> None:
        check = StreamCheck(chunks, want_usage=True)
        try:
            async with AsyncExitStack() as stack:
                async with gate:
                    resp = await stack.enter_async_context(
                        session.post(target.url, data=target.stream_body, headers=target.headers)
                    )
                    if resp.status != 200:
                        check.notes.append(f"status {resp.status}")
                    check.feed(await resp.content.readany(), time.perf_counter())
                held.opened += 1
                held.open_now += 1
                held.max_open = max(held.max_open, held.open_now)
                if held.opened == count:
                    held.all_open_after = time.perf_counter() - started
                    all_open.set()
                try:
                    async for data in resp.content.iter_any():
                        check.feed(data, time.perf_counter())
                finally:
                    held.open_now -= 1
        except aiohttp.ClientError as exc:
            check.notes.append(f"client error: {type(exc).__name__}")
        problems = check.problems()
        if problems:
            held.failed_streams += 1
            if len(held.problems) < 5:
                held.problems.extend(problems[:2])

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    waiter: asyncio.Future[Any] = asyncio.ensure_future(all_open.wait())
    everyone: asyncio.Future[Any] = asyncio.gather(*tasks)
    await asyncio.wait({waiter, everyone}, return_when=asyncio.FIRST_COMPLETED)
    if all_open.is_set():
        when_all_open()
    waiter.cancel()
    await everyone
    return held
