"""(r) The shared spend store (Redis) beside the JSONL store, in the same run.

A private redis-server (a free port, no persistence), initialised as a new deployment
would be (`python -m gate store-rebuild --config PATH`, no logs), and two gates (a, b)
sharing it on the one mock, started beside the gate of (a)–(c), which is the JSONL
store's instance here. Each repeat:

- closed-loop throughput and gate CPU with the settings of (a): the JSONL gate, Redis
  gate a alone, then a and b at once with the connections split between them (combined
  throughput; CPU summed over both gates); the order flips every other repeat;
- the budget edge: `EDGE_REQUESTS` concurrent requests of one small, hard-capped agent
  (a fresh one each repeat) split over a and b: admitted, refused, overshoot (what Redis
  says was spent − the budget), at most one hold.

After every run the books: the request lines the logs gained cost exactly what the mock
charged and (Redis runs) exactly what Redis added to the agent's spent, with nothing
left held. Any difference, or an overshoot beyond one hold, fails the bench.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import socket
import sys
import time
from contextlib import suppress
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gate.books.redis_scripts import Keys, from_units

from .books import LogReader, SpendCursor, SpendCursors
from .procs import ROOT, Foreign, Proc, StartError, start_gate
from .world import (
    AGENT,
    REDIS_PREFIX,
    gate_target,
    write_redis_gate_config,
)

if TYPE_CHECKING:
    from .runner import Bench

EDGE_BUDGET = Decimal("0.002")
EDGE_REQUESTS = 200
EDGE_DELAY = 0.15  # the mock answers the edge's requests this late: all are in flight at once
SETTLE_PATIENCE = 10.0
POLL = 0.05
REDIS_READY_SECONDS = 10.0
REBUILD_TIMEOUT = 60.0
SKIPPED = "(r) skipped: redis-server is not installed (apt-get install -y redis-server)"


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def start_redis(binary: str, workdir: Path, attempts: int = 3) -> Proc:
    """A redis-server of the bench's own on a free port, without persistence."""
    log = workdir / "redis.log"
    for _ in range(attempts):  # another process may take the free port before redis does
        port = _free_port()
        started = time.perf_counter()
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                binary,
                "--save", "",
                "--appendonly", "no",
                "--bind", "127.0.0.1",
                "--port", str(port),
                stdout=out,
                stderr=out,
            )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        client = Redis.from_url(url)
        try:
            for _ in range(int(REDIS_READY_SECONDS / POLL)):
                if proc.returncode is not None:
                    break
                with suppress(RedisError, OSError):
                    if await client.ping():
                        spawn = time.perf_counter() - started
                        return Proc("redis-server", proc, url, log, spawn)
                await asyncio.sleep(POLL)
        finally:
            await client.aclose()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    tail = log.read_text(errors="replace")[-2000:]
    raise StartError(f"redis-server did not start:\n{tail}")


async def store_rebuild(config: Path) -> str:
    """`python -m gate store-rebuild --config PATH` without logs: a new deployment."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gate",
        "store-rebuild",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), REBUILD_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise StartError(f"store-rebuild did not finish in {REBUILD_TIMEOUT:.0f}s") from None
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise StartError(f"store-rebuild failed ({proc.returncode}): {text[-1000:]}")
    return text


def committed(lines: list[bytes]) -> tuple[Decimal, Decimal]:
    """(largest hold, peak of spent + held) over the lines of both gates' logs replayed
    in time order: what the two gates had committed together at the worst moment."""
    records = [json.loads(line) for line in lines if line.strip()]
    records.sort(key=lambda record: str(record.get("ts", "")))
    open_holds: dict[str, Decimal] = {}
    largest = total = peak = Decimal(0)
    for record in records:
        event, request_id = record.get("event"), record.get("request_id")
        if event == "hold" and "generation_id" not in record:
            held = Decimal(str(record["held"]))
            open_holds[request_id] = held
            largest = max(largest, held)
            total += held
        elif event == "request" and request_id in open_holds:
            total += Decimal(str(record.get("cost") or 0)) - open_holds.pop(request_id)
        peak = max(peak, total)
    return largest, peak


async def start_shared_store(bench: Bench, mock_url: str) -> SharedStore | None:
    """Section (r)'s redis-server, initialised, and its two gates; None (with a note)
    when redis-server is not installed."""
    binary = redis_binary()
    if binary is None:
        bench.meta["redis"] = {"skipped": SKIPPED}
        bench.warnings.append(SKIPPED)
        return None
    started = time.perf_counter()
    redis = await start_redis(binary, bench.dir)
    store = SharedStore(bench, mock_url, redis)
    try:
        await store.start()
    except BaseException:
        await store.stop()
        raise
    store.info["start_seconds"] = round(time.perf_counter() - started, 2)
    return store


class SharedStore:
    def __init__(self, bench: Bench, mock_url: str, redis: Proc) -> None:
        self.bench = bench
        self.s = bench.s
        self.mock_url = mock_url
        self.redis = redis
        self.keys = Keys(REDIS_PREFIX)
        self.edges = [f"edge-{n + 1}" for n in range(self.s.repeats)]
        self.books: list[dict[str, Any]] = []
        self.edge_runs: list[dict[str, Any]] = []
        self.client = Redis.from_url(redis.url, decode_responses=True)
        self.gates: dict[str, Proc] = {}  # the two on Redis
        self.everyone: list[Proc] = []  # and the JSONL one
        self.logs = {name: bench.dir / f"spend-r-{name}.jsonl" for name in ("a", "b")}
        self.info: dict[str, Any] = {
            "redis_url": redis.url,
            "key_prefix": REDIS_PREFIX,
            "edge_budget": str(EDGE_BUDGET),
            "edge_requests": EDGE_REQUESTS,
            "books": self.books,
            "edge": self.edge_runs,
        }
        bench.meta["redis"] = self.info

    async def start(self) -> None:
        """`store-rebuild` (a gate refuses to start on a Redis without gate state), then
        gates a and b on it."""
        d = self.bench.dir
        self.bench.step("(r) redis-server up: store-rebuild, then two gates on it")
        configs = {
            name: write_redis_gate_config(
                d / f"gate-r-{name}.json",
                self.logs[name],
                self.mock_url,
                self.redis.url,
                self.edges,
                EDGE_BUDGET,
            )
            for name in ("a", "b")
        }
        self.info["store_rebuild"] = await store_rebuild(configs["a"])
        names = ("a", "b")
        started = await asyncio.gather(
            *(start_gate(configs[n], d, label=f"gate-r-{n}") for n in names),
            return_exceptions=True,
        )
        for name, gate in zip(names, started, strict=True):
            if isinstance(gate, Proc):
                self.gates[name] = gate
        for failed in started:
            if isinstance(failed, BaseException):
                raise failed

    async def stop(self) -> None:
        async def stop(gate: Proc) -> tuple[int, float]:
            started = time.perf_counter()
            return await gate.stop(), time.perf_counter() - started

        await self.client.aclose()
        stopped = await asyncio.gather(*(stop(gate) for gate in self.gates.values()))
        for (name, gate), (code, seconds) in zip(self.gates.items(), stopped, strict=True):
            if code != 0:
                self.bench.failures.append(
                    f"(r) gate {name} exited badly (code {code} after SIGTERM,"
                    f" {seconds:.1f} s):\n{gate.errors()}"
                )
        await self.redis.stop()

    async def run(self, jsonl: Proc, jsonl_cursor: SpendCursor) -> None:
        """The measurements; `jsonl` is the gate of (a)–(c), on the JSONL store."""
        b = self.bench
        generator = "wrk" if b.use_wrk and self._use_wrk() else "python (aiohttp)"
        self.info["load_generator"] = generator
        b.meta.setdefault("load_generator", generator)
        await self.measure({"jsonl": jsonl, **self.gates}, jsonl_cursor)

    async def measure(self, gates: dict[str, Proc], jsonl: SpendCursor) -> None:
        b, s = self.bench, self.s
        shared = SpendCursors(SpendCursor(self.logs["a"]), SpendCursor(self.logs["b"]))
        self.everyone = list(gates.values())
        runs: dict[str, tuple[list[Proc], LogReader]] = {
            "jsonl": ([gates["jsonl"]], jsonl),
            "redis": ([gates["a"]], shared),
            "redis2": ([gates["a"], gates["b"]], shared),
        }
        if s.warmup_seconds:
            for role in ("jsonl", "redis2"):
                await self.throughput(role, *runs[role], s.warmup_seconds, record=False)
        for repeat in range(s.repeats):
            # Alternate which store goes first, so a drifting machine favours neither.
            order = ("jsonl", "redis", "redis2")
            for role in order if repeat % 2 == 0 else reversed(order):
                b.step(f"(r) {role}: throughput at {s.connections} connections")
                await self.throughput(role, *runs[role], s.throughput_seconds)
            b.step(f"(r) budget edge: {EDGE_REQUESTS} requests over two gates")
            await self.edge(self.edges[repeat], [gates["a"], gates["b"]], shared)

    # -- throughput and CPU -----------------------------------------------------------

    def _use_wrk(self) -> bool:
        """wrk as in (a); a smoke run, short of time, uses the Python client throughout
        ((a) runs wrk in a smoke run)."""
        return not self.s.smoke

    async def throughput(
        self,
        role: str,
        gates: list[Proc],
        cursor: LogReader,
        seconds: float,
        record: bool = True,
    ) -> None:
        b, s = self.bench, self.s
        redis = role != "jsonl"
        targets = [gate_target(g.url) for g in gates]
        connections = max(1, s.connections // len(gates))
        wrk = self._use_wrk()

        async def measure() -> tuple[list[tuple[int, float, int, float]], list[float]]:
            procs = [*gates, b.mock_proc, self.redis]
            before = [p.cpu_seconds() for p in procs]
            client = time.process_time() + _children_cpu()
            foreign = Foreign(*procs, *(g for g in self.everyone if g not in gates))
            results = await asyncio.gather(
                *(b._closed(t, seconds, connections, wrk) for t in targets)
            )
            used = [p.cpu_seconds() - c for p, c in zip(procs, before, strict=True)]
            used.append(time.process_time() + _children_cpu() - client)
            if record:
                b.add(f"r.{role}.foreign_cpu_pct", foreign.percent())
            return list(results), used

        label = f"(r) {role} throughput" + ("" if record else " warm-up")
        spent_before = await self.account(AGENT) if redis else None
        results, used = await b.gate_run(cursor, label, measure)
        self._books(label, b.books[-1].ok, b.books[-1].detail, b.books[-1].requests)
        if spent_before is not None:
            await self.redis_books(label, AGENT, spent_before[0], b.books[-1].gate_cost)
        requests = sum(r[0] for r in results)
        errors = sum(r[2] for r in results)
        if errors:
            b.failures.append(f"{label}: {errors} of {requests} requests failed")
        if not record:
            return
        wall = max(r[1] for r in results)
        served = max(requests, 1)
        gate_cpu = sum(used[: len(gates)])
        mock_cpu, redis_cpu, client_cpu = used[len(gates) :]
        b.add(f"r.{role}.rps", sum(r[0] / r[1] for r in results))
        b.add(f"r.{role}.cpu_ms", 1000 * gate_cpu / served)
        b.add(f"r.{role}.gate_cpu_pct", 100 * gate_cpu / wall)
        b.add(f"r.{role}.mock_cpu_pct", 100 * mock_cpu / wall)
        b.add(f"r.{role}.client_cpu_pct", 100 * client_cpu / wall)
        if redis:
            b.add(f"r.{role}.redis_cpu_ms", 1000 * redis_cpu / served)
            b.add(f"r.{role}.redis_cpu_pct", 100 * redis_cpu / wall)

    # -- the budget edge --------------------------------------------------------------

    async def edge(self, agent_id: str, gates: list[Proc], cursor: LogReader) -> None:
        b = self.bench
        label = f"(r) budget edge ({agent_id})"
        targets = [gate_target(g.url, agent_id) for g in gates]
        session = b.session

        async def one(index: int) -> int:
            target = targets[index % len(targets)]
            async with session.post(target.url, data=target.body, headers=target.headers) as r:
                await r.read()
                return r.status

        async def work() -> tuple[list[int], float]:
            await b.mock.faults([{"first_delay": EDGE_DELAY}] * EDGE_REQUESTS)
            started = time.perf_counter()
            statuses = await asyncio.gather(*(one(i) for i in range(EDGE_REQUESTS)))
            return list(statuses), time.perf_counter() - started

        statuses, seconds = await b.gate_run(cursor, label, work)
        books = b.books[-1]
        self._books(label, books.ok, books.detail, books.requests)
        spent, held = await self.redis_books(label, agent_id, Decimal(0), books.gate_cost)
        admitted, refused = statuses.count(200), statuses.count(402)
        others = sorted({st for st in statuses if st not in (200, 402)})
        largest, peak = committed(cursor.lines())
        overshoot = spent - EDGE_BUDGET
        run = {
            "agent_id": agent_id,
            "admitted": admitted,
            "refused": refused,
            "other_statuses": others,
            "seconds": round(seconds, 3),
            "budget": str(EDGE_BUDGET),
            "spent": str(spent),
            "held_after": str(held),
            "overshoot": str(overshoot),
            "largest_hold": str(largest),
            "peak_committed": str(peak),
            "log_cost": str(books.gate_cost),
            "mock_charged": str(books.mock_cost),
            "within_one_hold": overshoot <= largest,
        }
        self.edge_runs.append(run)
        if others:
            b.failures.append(f"{label}: statuses other than 200 and 402: {others}")
        if overshoot > largest:
            b.failures.append(
                f"{label}: overshoot {overshoot} beyond one hold ({largest}): spent {spent}"
                f" of {EDGE_BUDGET}"
            )
        if peak > EDGE_BUDGET + largest:
            b.warnings.append(
                f"{label}: spent + held reached {peak} by the logs' timestamps, beyond"
                f" {EDGE_BUDGET} + one hold ({largest}) (lines within the same millisecond"
                " on two gates may replay out of order)"
            )
        if not admitted or not refused:
            b.warnings.append(
                f"{label}: {admitted} admitted, {refused} refused: the run did not cross"
                " the budget edge"
            )
        b.add("r.edge.admitted", admitted)
        b.add("r.edge.refused", refused)
        b.add("r.edge.overshoot_usd", float(overshoot))
        b.add("r.edge.largest_hold_usd", float(largest))
        b.add("r.edge.peak_committed_usd", float(peak))
        b.add("r.edge.seconds", seconds)

    # -- Redis's side of the books ----------------------------------------------------

    async def account(self, agent_id: str) -> tuple[Decimal, Decimal]:
        """(spent, held) of an agent as Redis has them."""
        spent, held = await self.client.hmget(self.keys.account(agent_id), ["spent", "held"])
        return from_units(spent), from_units(held)

    async def redis_books(
        self, label: str, agent_id: str, before: Decimal, cost: Decimal
    ) -> tuple[Decimal, Decimal]:
        """Wait until Redis holds nothing for the agent and its spent grew by exactly what
        the logs' request lines cost (settlements reach Redis through each gate's queue)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_PATIENCE
        while True:
            spent, held = await self.account(agent_id)
            if held == 0 and spent - before == cost:
                self._books(f"{label}: redis", True, "", 0)
                return spent, held
            if loop.time() > deadline:
                detail = (
                    f"redis spent grew by {spent - before} (held {held}), the spend logs'"
                    f" request lines cost {cost}"
                )
                self.bench.failures.append(f"books differ after {label}: {detail}")
                self._books(f"{label}: redis", False, detail, 0)
                return spent, held
            await asyncio.sleep(POLL)

    def _books(self, label: str, ok: bool, detail: str, requests: int) -> None:
        self.books.append({"run": label, "ok": ok, "detail": detail, "requests": requests})
