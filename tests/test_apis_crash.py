"""kill -9 with streams of every API in flight: the restarted gate settles each open
hold once, at the generation's real cost, on a recovered line that names its API.
Real subprocesses, a real spend log."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from decimal import Decimal
from pathlib import Path

import aiohttp

from .procs import start_gate, start_mock
from .support import agent, raw_config, request_lines, spend_lines, write_config
from .test_apis import completions_body, messages_body, responses_body
from .test_recovery import spent_after_recovery, wait_for

STREAMS = {
    "/v1/responses": responses_body(stream=True),
    "/v1/messages": messages_body(stream=True),
    "/api/v1/completions": completions_body(stream=True),
}


def named_holds(log: Path) -> dict[str, str]:
    """request_id -> api of every hold whose generation id is on disk."""
    lines = spend_lines(log)
    api = {r["request_id"]: r.get("api") for r in lines if r["event"] == "hold" and "tier" in r}
    return {
        r["request_id"]: api.get(r["request_id"], "?")
        for r in lines
        if r["event"] == "hold" and r.get("generation_id")
    }


async def test_kill_9_mid_stream_recovers_every_api_at_its_real_cost(tmp_path: Path) -> None:
    mock = await start_mock(tmp_path)
    raw = raw_config(tmp_path, mock.url + "/api/v1", agents={"agent-1": agent(50)}, admin_token="t")
    cfg = write_config(tmp_path / "gate.json", raw)
    log = tmp_path / "spend.jsonl"
    gate = await start_gate(cfg, tmp_path)
    calls: list[asyncio.Task] = []
    try:
        async with aiohttp.ClientSession() as s:
            faults = [{"chunks": 200, "chunk_delay": 0.05}] * len(STREAMS)
            async with s.post(mock.url + "/_mock/faults", json=faults) as r:
                assert r.status == 200
            for path, body in STREAMS.items():
                calls.append(
                    asyncio.create_task(
                        s.post(gate.url + path, json=body, headers={"X-Agent-ID": "agent-1"})
                    )
                )
            await wait_for(lambda: len(named_holds(log)) >= len(STREAMS), "every stream named")
            await gate.stop(signal.SIGKILL)  # mid-stream: the mock bills what it generated
            for call in calls:
                call.cancel()
            assert not request_lines(log)
            apis = named_holds(log)

            gate = await start_gate(cfg, tmp_path)
            spent = await spent_after_recovery(s, gate.url)
            async with s.get(mock.url + "/_mock/stats") as resp:
                charged = Decimal((await resp.json())["total_charged_str"])
        recovered = request_lines(log)
        assert sorted(x["api"] for x in recovered) == ["completions", "messages", "responses"]
        for line in recovered:
            assert line["recovered"] is True and line["cost_source"] == "generation", line
            assert line["api"] == apis[line["request_id"]]
        books = sum((x["cost"] for x in recovered), Decimal(0))
        assert books == charged == spent > 0
    finally:
        for call in calls:
            call.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*calls, return_exceptions=True)
        await gate.stop()
        await mock.stop()
