"""A wide body (many small JSON values) is weighed off the event loop and refused
before the loop parses it (finding 10 of issue 12); a long but plain body passes."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

from .support import chat, make_config, request_lines

CHAT = "/v1/chat/completions"
AGENT = {"X-Agent-ID": "agent-1", "Content-Type": "application/json"}


async def _worst_gap(stop: asyncio.Event) -> float:
    worst, last = 0.0, time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.002)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    return worst


async def test_a_wide_body_is_refused_without_stalling_the_loop(
    start_gate, mock, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, mock.base_url, limits={"max_json_values": 10_000})
    client = await start_gate(cfg)
    wide = json.dumps(chat(extra=[{"a": i, "b": [1, 2]} for i in range(150_000)])).encode()
    t0 = time.perf_counter()
    json.loads(wide)
    parse = time.perf_counter() - t0  # what the loop would stall for, on this machine
    await client.post(CHAT, data=json.dumps(chat()), headers=AGENT)  # warm: pool, prices
    # first use starts the worker process: not part of what is measured
    resp = await client.post(CHAT, data=io.BytesIO(wide), headers=AGENT)
    assert resp.status == 413
    stop = asyncio.Event()
    gaps = asyncio.create_task(_worst_gap(stop))
    await asyncio.sleep(0.01)
    resp = await client.post(CHAT, data=io.BytesIO(wide), headers=AGENT)
    text = await resp.text()
    stop.set()
    worst = await gaps
    assert resp.status == 413, text
    error = json.loads(text)["error"]
    assert error["type"] == "invalid_request_error" and "JSON values" in error["message"]
    assert worst < parse / 2, (worst, parse)
    assert mock.state.chat_count() == 1  # only the small warm-up went upstream
    statuses = [r["status"] for r in request_lines(tmp_path / "spend.jsonl")]
    assert statuses == [200, 413, 413]


async def test_a_long_plain_body_still_passes(start_gate, mock, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, mock.base_url, limits={"max_json_values": 10_000})
    client = await start_gate(cfg)
    resp = await client.post(
        CHAT, data=io.BytesIO(json.dumps(chat("x" * 600_000)).encode()), headers=AGENT
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post(
        CHAT, data=io.BytesIO(b'{"messages": [' + b" " * 400_000), headers=AGENT
    )
    assert resp.status == 400  # not JSON: said by the worker, the loop never parsed it
