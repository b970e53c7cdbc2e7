"""Crash recovery charges only what upstream could have charged (issue 12 #5): a hold
whose request never left the gate costs nothing, one that may have reached upstream
costs its hold. Real gate subprocesses, kill -9, a real spend log."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from decimal import Decimal
from pathlib import Path

import aiohttp

from gate.books.holds import Hold
from gate.books.spendlog import SpendLogError
from gate.context import GATE

from .procs import start_gate, start_mock
from .support import agent, chat, raw_config, request_lines, spend_lines, write_config

STREAMS = 5


class Blackhole:
    """A TCP server for an `https://` upstream: it drops connections until `hold()`,
    then keeps every new one open and never answers, so each request waits in its TLS
    handshake — admitted and held, but never sent."""

    def __init__(self) -> None:
        self.holding = False
        self.held: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.holding:
            self.held.append(writer)
        else:
            writer.close()

    async def stop(self) -> None:
        for writer in self.held:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def config(tmp_path: Path, base_url: str) -> Path:
    raw = raw_config(tmp_path, base_url, agents={"agent-1": agent(50)}, admin_token="t")
    return write_config(tmp_path / "gate.json", raw)


async def wait_for(condition, what: str) -> None:
    # Bounded polling of a subprocess's file (up to 20 s on a loaded machine).
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


async def spent_after_recovery(s: aiohttp.ClientSession, url: str) -> Decimal:
    for _ in range(300):
        async with s.get(url + "/api/health") as resp:
            if (await resp.json())["open_holds"] == 0:
                break
        await asyncio.sleep(0.05)
    async with s.get(url + "/api/spend/agent-1", headers={"Authorization": "Bearer t"}) as resp:
        return Decimal(str((await resp.json())["budget_spent"]))


def holds(log: Path) -> list[dict]:
    return [r for r in spend_lines(log) if r["event"] == "hold"]


async def test_a_hold_whose_request_never_left_the_gate_is_charged_nothing(
    tmp_path: Path,
) -> None:
    blackhole = Blackhole()
    port = await blackhole.start()
    mock = await start_mock(tmp_path)
    log = tmp_path / "spend.jsonl"
    gate = await start_gate(config(tmp_path, f"https://127.0.0.1:{port}/api/v1"), tmp_path)
    calls: list[asyncio.Task] = []
    try:
        async with aiohttp.ClientSession() as s:
            blackhole.holding = True
            for _ in range(STREAMS):
                calls.append(
                    asyncio.create_task(
                        s.post(
                            gate.url + "/v1/chat/completions",
                            json=chat(stream=True),
                            headers={"X-Agent-ID": "agent-1"},
                        )
                    )
                )
            await wait_for(lambda: len(holds(log)) >= STREAMS, "every hold on disk")
            await wait_for(lambda: len(blackhole.held) >= STREAMS, "every request connecting")
            await gate.stop(signal.SIGKILL)  # admitted, held, never sent
            for call in calls:
                call.cancel()
            assert not request_lines(log)

            gate = await start_gate(config(tmp_path, mock.url + "/api/v1"), tmp_path)
            spent = await spent_after_recovery(s, gate.url)
        recovered = request_lines(log)
        assert len(recovered) == STREAMS
        for line in recovered:
            assert line["recovered"] is True and line["cost"] == 0, line
            assert line["api"] == "chat", line
            assert line["cost_source"] == "none" and line["recovery"] == "not_sent", line
        assert spent == 0
    finally:
        for call in calls:
            call.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*calls, return_exceptions=True)
        await gate.stop()
        await mock.stop()
        await blackhole.stop()


async def test_a_hold_whose_request_reached_upstream_is_charged_the_hold(tmp_path: Path) -> None:
    """The other side: once the send mark is on disk upstream could bill the request, and
    without a generation id to ask about, recovery charges the whole hold."""
    mock = await start_mock(tmp_path)
    log = tmp_path / "spend.jsonl"
    cfg = config(tmp_path, mock.url + "/api/v1")
    gate = await start_gate(cfg, tmp_path)
    calls: list[asyncio.Task] = []
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(mock.url + "/_mock/faults", json=[{"hang": 60}] * STREAMS) as r:
                assert r.status == 200
            for _ in range(STREAMS):
                calls.append(
                    asyncio.create_task(
                        s.post(
                            gate.url + "/v1/chat/completions",
                            json=chat(),
                            headers={"X-Agent-ID": "agent-1"},
                        )
                    )
                )

            async def received() -> int:
                async with s.get(mock.url + "/_mock/stats") as resp:
                    return int((await resp.json())["chat_requests"])

            for _ in range(1000):
                if await received() >= STREAMS:
                    break
                await asyncio.sleep(0.02)
            assert await received() == STREAMS
            await gate.stop(signal.SIGKILL)
            for call in calls:
                call.cancel()
            held = {r["request_id"]: Decimal(str(r["held"])) for r in holds(log)}
            assert len(held) == STREAMS

            gate = await start_gate(cfg, tmp_path)
            spent = await spent_after_recovery(s, gate.url)
        recovered = request_lines(log)
        assert len(recovered) == STREAMS
        for line in recovered:
            assert line["recovered"] is True and line["cost_source"] == "hold", line
            assert Decimal(str(line["cost"])) == held[line["request_id"]] > 0
            assert line["latency_ms"] is None  # SPEC's field on every request line: unknown
        assert spent == sum(held.values())
    finally:
        for call in calls:
            call.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*calls, return_exceptions=True)
        await gate.stop()
        await mock.stop()


async def test_a_send_mark_that_cannot_be_written_stops_the_request(gate, mock) -> None:
    """The mark's line is dropped (the disk failed right after the hold line): the
    request must not go upstream, and is answered 503 in OpenAI's shape at cost 0."""
    ledger = gate.server.app[GATE].ledger
    assert ledger.marks_sends

    def failing_mark(hold: Hold) -> asyncio.Future[None]:
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(SpendLogError("No space left on device"))
        return failed

    ledger.mark_sent = failing_mark  # the one stand-in: a disk failing at this moment
    resp = await gate.post("/v1/chat/completions", json=chat(), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 503
    body = await resp.json()
    assert body["error"]["type"] == "spend_log_unavailable" and body["error"]["code"] == 503
    assert mock.state.chat_count() == 0
    await ledger.spend_log.flush()
    [line] = [r for r in request_lines(ledger.spend_log.path)]
    assert line["status"] == 503 and line["cost"] == 0 and line["cost_source"] == "none"
    assert ledger.account("agent-1").spent == 0 and not ledger.open_holds()
