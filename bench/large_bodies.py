"""`python -m bench.large_bodies`: another agent's latency while two clients send wide
10 MiB JSON bodies (many small values), the finding of issue 12 (item 10).

Starts the mock and the gate, times small requests of agent `default` alone, then with
two connections posting the wide body back to back, and prints p50/p95/max and the
gate's peak RSS. A few seconds; meant for before/after comparisons, not for CI.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from .procs import start_gate, start_mock

CHAT = "/v1/chat/completions"
SMALL = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
SAMPLES = 60


def wide_body(size: int = 10 * 1024 * 1024) -> bytes:
    """Many tiny objects, just under `size` bytes, and no `messages`: refused (400 or 413)
    after it is weighed, so it never goes upstream and only its parse is measured."""
    extra = [{"a": i, "b": [1, 2, 3]} for i in range(size // 30)]
    body = json.dumps({"metadata_extra": extra}).encode()
    while len(body) > size:
        del extra[len(extra) * size // len(body) :]
        body = json.dumps({"metadata_extra": extra}).encode()
    return body


async def _timed(session: aiohttp.ClientSession, url: str, seconds: float = 0) -> list[float]:
    """Small requests one after another: SAMPLES of them, or (`seconds` > 0) as many as
    fit in `seconds`, at least 10."""
    times: list[float] = []
    until = time.perf_counter() + seconds
    while len(times) < 10 or (time.perf_counter() < until if seconds else len(times) < SAMPLES):
        t0 = time.perf_counter()
        async with session.post(url + CHAT, json=SMALL, headers={"X-Agent-ID": "default"}) as r:
            await r.read()
            assert r.status == 200, r.status
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def _flood(session: aiohttp.ClientSession, url: str, body: bytes, stop: asyncio.Event) -> int:
    sent = 0
    headers = {"X-Agent-ID": "agent-1", "Content-Type": "application/json"}
    while not stop.is_set():
        async with session.post(url + CHAT, data=body, headers=headers) as r:
            await r.read()
        sent += 1
    return sent


def _summary(name: str, times: list[float]) -> str:
    p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[18]
    return f"{name:<24} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  max {max(times):7.1f} ms"


async def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mock = await start_mock(work)
        config = {
            "cost_routing": {
                "spend_log": str(work / "spend.jsonl"),
                "openrouter": {"base_url": mock.url + "/api/v1", "api_key": "sk-or-v1-bench"},
                "agents": {
                    name: {
                        "budget_total": 1000,
                        "tiers": [{"threshold": 0, "models": ["openai/gpt-5-mini"]}],
                    }
                    for name in ("default", "agent-1")
                },
                "loop_breaker": False,  # the same wide body, again and again
            }
        }
        (work / "gate.yaml").write_text(json.dumps(config))
        gate = await start_gate(work / "gate.yaml", work)
        body = wide_body()
        try:
            async with aiohttp.ClientSession() as session:
                await _timed(session, gate.url)  # warm up
                alone = await _timed(session, gate.url)
                stop = asyncio.Event()
                floods = [
                    asyncio.create_task(_flood(session, gate.url, body, stop)) for _ in range(2)
                ]
                await asyncio.sleep(0.5)
                loaded = await _timed(session, gate.url, seconds=5)
                stop.set()
                sent = sum(await asyncio.gather(*floods))
            print(f"wide body: {len(body) / 2**20:.1f} MiB, {sent} sent during the loaded run")
            print(_summary("other agent, alone", alone))
            print(_summary("other agent, 2 x wide", loaded))
            print(f"gate peak RSS {gate.rss_kib()[1] / 1024:.0f} MiB")
        finally:
            await gate.stop()
            await mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
