"""Run every section against the mock (direct), through the floor (bench/floor.py, the
thinnest aiohttp proxy) and through the gate, in one run.

Each measurement is repeated; within a repeat the order is direct, floor, gate, direct
again (the second direct run against the first is the noise floor), so drift over the
run hits all of them alike. Before every run the mock
is left to finish what it was doing and reset; after every gate run the books are
checked: the request lines the gate wrote since the reset must cost exactly what the
mock charged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from . import spend
from .books import BooksResult, LogReader, Mock, SpendCursor, check_books
from .load import (
    StreamResult,
    Target,
    closed_loop,
    held_streams,
    new_session,
    open_loop,
    streams,
)
from .procs import Foreign, Proc, raise_fd_limit, start_floor, start_gate, start_mock
from .settings import Settings
from .shared_store import SharedStore, start_shared_store
from .startup import write_spend_log
from .stats import percentile
from .world import direct_target, floor_target, gate_target, write_gate_config
from .wrk import run_wrk, wrk_path

log = logging.getLogger("bench")

T = TypeVar("T")
ROLES = ("direct", "floor", "gate", "direct2")
PROXIES = ("floor", "gate")  # the roles whose own CPU is measured
SECTIONS = "abcdefr"
# requests, seconds, errors, load generator CPU s, gate CPU s, mock CPU s
Measured = tuple[int, float, int, float, float, float]


class Bench:
    def __init__(
        self, settings: Settings, workdir: Path, use_wrk: bool, only: str = SECTIONS
    ) -> None:
        self.s = settings
        self.only = only
        self.dir = workdir
        self.use_wrk = use_wrk
        self.series: dict[str, list[float]] = defaultdict(list)
        self.failures: list[str] = []
        self.warnings: list[str] = []
        self.books: list[BooksResult] = []
        self.meta: dict[str, Any] = {"streams_checked": 0, "chunks_checked": 0}
        self.proc_cpu: dict[str, float] = {}  # the floor's or gate's CPU s in its last run

    def add(self, key: str, value: float) -> None:
        self.series[key].append(value)

    def step(self, message: str) -> None:
        log.info("%s", message)

    # -- the run ----------------------------------------------------------------------

    async def run(self) -> None:
        self.meta["fd_limit"] = raise_fd_limit()
        self.meta["section_seconds"] = {}
        started = time.perf_counter()
        mock = await start_mock(self.dir)
        self.mock_proc = mock
        try:
            async with new_session() as session:
                self.session = session
                self.mock = Mock(session, mock.url)
                if set(self.only) & set("abcr"):
                    await self.main_gate(mock.url)
                await self.timed("d", self.held_open(mock.url))
            await self.timed("e", self.spend_log())
            await self.timed("f", self.startup(mock.url))
        finally:
            await mock.stop()
        self.meta["wall_seconds"] = round(time.perf_counter() - started, 1)

    async def main_gate(self, mock_url: str) -> None:
        """(a), (b) and (c) against one gate and one floor; (r) compares the same gate (JSONL store)
        with two on a shared Redis, started beside it."""
        spend_log = self.dir / "spend.jsonl"
        config = write_gate_config(self.dir / "gate.json", spend_log, mock_url)
        pending: asyncio.Future[SharedStore | None] | None = None
        if "r" in self.only:
            pending = asyncio.ensure_future(start_shared_store(self, mock_url))
        started = await asyncio.gather(
            start_gate(config, self.dir), start_floor(mock_url, self.dir), return_exceptions=True
        )
        gate, floor = started
        if not isinstance(gate, Proc) or not isinstance(floor, Proc):
            for proc in started:
                if isinstance(proc, Proc):
                    await proc.stop()
            await self._stop_shared(pending)
            raise next(e for e in started if isinstance(e, BaseException))
        self.gate, self.floor = gate, floor
        try:
            if pending is not None and not self.s.smoke:
                await pending  # nothing else starts while (a)–(c) measure
            self.targets = {
                "direct": direct_target(mock_url),
                "direct2": direct_target(mock_url),
                "floor": floor_target(self.floor.url, mock_url),
                "gate": gate_target(gate.url),
            }
            cursor = SpendCursor(spend_log)
            await self.timed("a", self.throughput(cursor))
            await self.timed("b", self.latency(cursor))
            await self.timed("c", self.concurrent_streams(cursor))
            shared = None if pending is None else await pending
            if shared is not None:
                await self.timed("r", shared.run(gate, cursor))
        finally:
            await self._stop_shared(pending)
            if await self.floor.stop() != 0:
                self.failures.append(f"floor exited badly:\n{self.floor.errors()}")
            if await gate.stop() != 0:
                self.failures.append(f"gate exited badly:\n{gate.errors()}")

    async def _stop_shared(self, pending: asyncio.Future[SharedStore | None] | None) -> None:
        """Stop (r)'s redis-server and gates, however far their start got."""
        if pending is None:
            return
        started = (await asyncio.gather(pending, return_exceptions=True))[0]
        if isinstance(started, SharedStore):
            await started.stop()

    async def timed(self, section: str, work: Coroutine[Any, Any, None]) -> None:
        if section not in self.only:
            work.close()
            return
        started = time.perf_counter()
        await work
        self.meta["section_seconds"][section] = round(time.perf_counter() - started, 1)

    # -- runs with fresh books --------------------------------------------------------

    async def _fresh_mock(self) -> None:
        """Let the mock finish requests still in flight (billing them), then reset it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        previous = None
        while loop.time() < deadline:
            stats = await self.mock.stats()
            now = (stats["chat_requests"], stats["generations"])
            if now == previous and stats["generations"] >= stats["chat_requests"]:
                break
            previous = now
            await asyncio.sleep(0.05)
        else:
            self.warnings.append("the mock was still busy when it was reset")
        await self.mock.reset()

    async def direct_run(self, work: Callable[[], Awaitable[T]]) -> T:
        await self._fresh_mock()
        return await work()

    async def gate_run(self, cursor: LogReader, label: str, work: Callable[[], Awaitable[T]]) -> T:
        await self._fresh_mock()
        cursor.mark()
        result = await work()
        books = await check_books(cursor, self.mock)
        self.books.append(books)
        if not books.ok:
            self.failures.append(f"books differ after {label}: {books.detail}")
        return result

    def proxy(self, role: str) -> Proc | None:
        return {"gate": self.gate, "floor": self.floor}.get(role)

    async def each(
        self,
        cursor: SpendCursor,
        label: str,
        work: Callable[[Target], Awaitable[T]],
        key: str,
    ) -> dict[str, T]:
        """One repeat: direct, floor, gate, direct again. Records the Python client's own
        CPU use as `{key}.{role}.client_cpu_pct` (is the load generator keeping up?) and
        the floor's or gate's CPU seconds over its run in `self.proc_cpu[role]`."""
        out: dict[str, T] = {}
        for role in ROLES:
            target = self.targets[role]
            proxy = self.proxy(role)
            cpu, wall = time.process_time(), time.perf_counter()
            foreign = Foreign(self.mock_proc, self.gate, self.floor)
            own = proxy.cpu_seconds() if proxy else 0.0
            if role == "gate":
                out[role] = await self.gate_run(cursor, label, partial(work, target))
            else:
                out[role] = await self.direct_run(partial(work, target))
            if proxy:
                self.proc_cpu[role] = proxy.cpu_seconds() - own
            used = (time.process_time() - cpu) / (time.perf_counter() - wall)
            self.add(f"{key}.{role}.client_cpu_pct", 100 * used)
            self.add(f"{key}.{role}.foreign_cpu_pct", foreign.percent())
        return out

    # -- (a) throughput and CPU -------------------------------------------------------

    async def _closed(
        self,
        target: Target,
        seconds: float,
        connections: int | None = None,
        wrk: bool | None = None,
    ) -> tuple[int, float, int, float]:
        """(requests, seconds, errors, load generator CPU seconds). A smoke run uses wrk
        for the gate only (when wrk is here) and the Python client for the direct runs,
        so both code paths run; `wrk` overrides that choice (False: the Python client)."""
        connections = connections or self.s.connections
        if wrk is None:
            wrk = not (self.s.smoke and target.name != "gate")
        if self.use_wrk and wrk:
            r = await run_wrk(target, connections, seconds)
            return r.requests, r.seconds, r.errors, r.client_cpu_seconds
        cpu = time.process_time()
        c = await closed_loop(self.session, target, connections, seconds)
        return c.requests, c.seconds, c.failures, time.process_time() - cpu

    async def throughput(self, cursor: SpendCursor) -> None:
        s = self.s
        self.meta["load_generator"] = "wrk" if self.use_wrk else "python (aiohttp)"
        if self.use_wrk and s.smoke:
            self.meta["load_generator"] = "wrk (gate), python (direct)"
        self.step(f"(a) throughput at {s.connections} connections")
        targets = self.targets
        if s.warmup_seconds:
            await self.direct_run(lambda: self._closed(targets["direct"], s.warmup_seconds))
            await self.direct_run(lambda: self._closed(targets["floor"], s.warmup_seconds))
            await self.gate_run(
                cursor, "warm-up", lambda: self._closed(targets["gate"], s.warmup_seconds)
            )
        for _ in range(s.repeats):
            for role in ROLES:
                target, proxy = targets[role], self.proxy(role)

                async def measure(
                    t: Target = target, role: str = role, proxy: Proc | None = proxy
                ) -> Measured:
                    g0 = proxy.cpu_seconds() if proxy else 0.0
                    m0 = self.mock_proc.cpu_seconds()
                    foreign = Foreign(self.gate, self.floor, self.mock_proc)
                    requests, seconds, errors, client = await self._closed(t, s.throughput_seconds)
                    g1 = proxy.cpu_seconds() if proxy else 0.0
                    m1 = self.mock_proc.cpu_seconds()
                    self.add(f"a.{role}.foreign_cpu_pct", foreign.percent())
                    return requests, seconds, errors, client, g1 - g0, m1 - m0

                if role == "gate":
                    got = await self.gate_run(cursor, "throughput", measure)
                else:
                    got = await self.direct_run(measure)
                requests, seconds, errors, client, proxy_cpu, mock_cpu = got
                if errors:
                    self.failures.append(f"(a) {role}: {errors} of {requests} requests failed")
                served = max(requests, 1)
                self.add(f"a.{role}.rps", requests / seconds)
                self.add(f"a.{role}.mock_cpu_ms", 1000 * mock_cpu / served)
                self.add(f"a.{role}.mock_cpu_pct", 100 * mock_cpu / seconds)
                self.add(f"a.{role}.client_cpu_pct", 100 * client / seconds)
                if proxy:
                    self.add(f"a.{role}.cpu_ms", 1000 * proxy_cpu / served)
                    self.add(f"a.{role}.gate_cpu_pct", 100 * proxy_cpu / seconds)

    # -- (b) open-loop latency --------------------------------------------------------

    async def latency(self, cursor: SpendCursor) -> None:
        for rate, seconds in self.s.rates:
            self.step(f"(b) open-loop latency at {rate} req/s")

            async def work(target: Target, rate: int = rate, seconds: float = seconds) -> Any:
                for _ in range(5):  # warm the connection pool (not measured)
                    async with self.session.post(
                        target.url, data=target.body, headers=target.headers
                    ) as resp:
                        await resp.read()
                return await open_loop(self.session, target, rate, seconds)

            for _ in range(self.s.tail_repeats):
                runs = await self.each(cursor, f"latency at {rate} req/s", work, f"b.{rate}")
                for role, result in runs.items():
                    if result.failures:
                        self.failures.append(
                            f"(b) {role} at {rate} req/s: {result.failures} failed"
                        )
                    ms = [1000 * x for x in result.latencies]
                    for p in (50, 90, 99):
                        self.add(f"b.{rate}.{role}.p{p}", percentile(ms, p))
                    late = 100 * result.late_starts / max(len(ms), 1)
                    self.add(f"b.{rate}.{role}.late_pct", late)

    # -- (c) concurrent streams -------------------------------------------------------

    async def concurrent_streams(self, cursor: SpendCursor) -> None:
        s = self.s
        self.step(f"(c) {s.streams} concurrent streams of {s.stream_chunks} chunks")
        fault = {"chunks": s.stream_chunks, "chunk_delay": s.chunk_delay}

        async def work(target: Target) -> list[StreamResult]:
            results: list[StreamResult] = []
            for _ in range(s.stream_waves):
                await self.mock.faults([fault] * s.streams)
                results += await streams(self.session, target, s.streams, s.stream_chunks, True)
            return results

        for _ in range(s.tail_repeats):
            runs = await self.each(cursor, "concurrent streams", work, "c")
            for role, results in runs.items():
                self._check_streams(f"(c) {role}", results)
                if role in PROXIES:
                    cpu = self.proc_cpu[role]
                    self.add(f"c.{role}.cpu_ms", 1000 * cpu / max(len(results), 1))
                first = [1000 * r.first_chunk for r in results]
                total = [1000 * r.total for r in results]
                for p in (50, 99):
                    self.add(f"c.{role}.first_p{p}", percentile(first, p))
                    self.add(f"c.{role}.total_p{p}", percentile(total, p))

    def _check_streams(self, label: str, results: list[StreamResult]) -> None:
        self.meta["streams_checked"] += len(results)
        self.meta["chunks_checked"] += len(results) * self.s.stream_chunks
        broken = [r for r in results if r.problems]
        if broken:
            sample = "; ".join(broken[0].problems[:3])
            self.failures.append(
                f"{label}: {len(broken)} of {len(results)} streams lost or reordered chunks"
                f" (first: {sample})"
            )

    # -- (d) streams held open --------------------------------------------------------

    async def held_open(self, mock_url: str) -> None:
        s = self.s
        for repeat in range(s.repeats):
            for count in s.held:
                for role in PROXIES:
                    self.step(f"(d) {count} streams held open, {role} (repeat {repeat + 1})")
                    await self._held_once(mock_url, count, repeat, role)

    async def _held_once(self, mock_url: str, count: int, repeat: int, role: str) -> None:
        """A fresh gate (keys `d.{count}.*`) or floor (`d.{count}.floor.*`)."""
        s = self.s
        spend_log = self.dir / f"spend-held-{count}-{repeat}.jsonl"
        if role == "floor":
            proc = await start_floor(mock_url, self.dir, label=f"floor-held-{count}")
        else:
            config = write_gate_config(self.dir / f"gate-held-{count}.json", spend_log, mock_url)
            proc = await start_gate(config, self.dir, label=f"gate-held-{count}")
        try:
            await asyncio.sleep(0.1)  # let start-up work settle before the idle sample
            idle = proc.rss_kib()[0]
            cursor = SpendCursor(spend_log)
            if role == "floor":
                target = floor_target(proc.url, mock_url)
            else:
                target = gate_target(proc.url)
            hold = s.hold_base + count * s.hold_per_stream
            seen: dict[str, int] = {}

            def sample() -> None:
                seen["rss"] = proc.rss_kib()[0]

            async def work() -> Any:
                await self.mock.faults([{"chunks": 2, "first_delay": hold}] * count)
                connector = aiohttp.TCPConnector(limit=0)
                async with aiohttp.ClientSession(connector=connector) as session:
                    return await held_streams(session, target, count, 2, s.open_limit, sample)

            if role == "floor":
                held = await self.direct_run(work)
            else:
                held = await self.gate_run(cursor, f"{count} held streams", work)
            peak = proc.rss_kib()[1]
        finally:
            await proc.stop()
        self.meta["streams_checked"] += count
        self.meta["chunks_checked"] += count * 2
        if held.failed_streams:
            self.failures.append(
                f"(d) {role}, {count} streams: {held.failed_streams} lost or reordered chunks"
                f" ({'; '.join(held.problems[:2])})"
            )
        if held.max_open < count:
            self.warnings.append(
                f"(d) {role}: only {held.max_open} of {count} streams were open at once:"
                " raise hold_per_stream"
            )
        key = f"d.{count}" if role == "gate" else f"d.{count}.{role}"
        self.add(f"{key}.idle_mib", idle / 1024)
        self.add(f"{key}.held_mib", seen.get("rss", 0) / 1024)
        self.add(f"{key}.peak_mib", peak / 1024)
        self.add(f"{key}.per_stream_kib", (peak - idle) / count)
        self.add(f"{key}.max_open", held.max_open)
        self.add(f"{key}.ramp_s", held.all_open_after)

    # -- (e) spend log ----------------------------------------------------------------

    async def spend_log(self) -> None:
        s = self.s
        fsync = spend.shipped_fsync()
        self.meta["spend_log_fsync_shipped"] = fsync
        self.step(f"(e) spend log throughput (fsync {'on' if fsync else 'off'}, as shipped)")
        path = self.dir / "spendlog-bench.jsonl"
        for _ in range(s.repeats):
            self.add("e.burst", await spend.burst(path, s.burst_lines, fsync))
            self.add(
                "e.path",
                await spend.request_path(path, s.path_requests, s.path_concurrency, fsync),
            )
            if not fsync:
                self.add(
                    "e.path_fsync",
                    await spend.request_path(path, s.fsync_requests, s.path_concurrency, True),
                )

    # -- (f) start-up -----------------------------------------------------------------

    async def startup(self, mock_url: str) -> None:
        """Each repeat and size: a first start on the generated log (no snapshot in it,
        so the gate replays every line and then appends a snapshot); then `restart_tail`
        more lines are appended, as a running gate would write after its last snapshot,
        and the gate is restarted. The log is cut back to its generated size before the
        next repeat."""
        s = self.s
        logs: dict[int, tuple[Path, int]] = {}
        for size in s.log_sizes:
            self.step(f"(f) writing a spend log of {size} lines")
            path = self.dir / f"startup-{size}.jsonl"
            written = await asyncio.to_thread(write_spend_log, path, size)
            length = path.stat().st_size
            self.meta[f"startup_log_{size}"] = {"lines": written, "bytes": length}
            logs[size] = (path, length)
        tail_path = self.dir / "startup-tail.jsonl"
        await asyncio.to_thread(write_spend_log, tail_path, s.restart_tail)
        tail = tail_path.read_bytes()
        config = self.dir / "gate-startup.json"
        for repeat in range(s.repeats):
            for size, (path, length) in logs.items():
                self.step(f"(f) start-up with {size} lines (repeat {repeat + 1})")
                os.truncate(path, length)
                write_gate_config(config, path, mock_url)
                await self._start_once(config, f"f.{size}.first")
                with path.open("ab") as f:
                    f.write(tail)
                await self._start_once(config, f"f.{size}.restart")
        for path, _ in logs.values():
            path.unlink()

    async def _start_once(self, config: Path, key: str) -> None:
        gate = await start_gate(config, self.dir, label="gate-startup")
        try:
            self.add(key, gate.spawn_seconds)
            self.add(key + "_rss_mib", gate.rss_kib()[0] / 1024)
        finally:
            await gate.stop()


def wrk_available() -> bool:
    return wrk_path() is not None
