"""SPEC's third kind of unwritable log: the file size limit (RLIMIT_FSIZE)."""

from __future__ import annotations

import asyncio
import json
import resource
from pathlib import Path

import aiohttp

from gate.books.logscan import read_records

from .procs import start_gate, start_mock
from .support import chat, raw_config, write_config

LIMIT = 6000  # bytes: room for a handful of lines


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


async def test_a_file_size_limit_stops_paid_requests_instead_of_killing_the_gate(
    tmp_path: Path,
) -> None:
    mock = await start_mock(tmp_path)
    cfg = write_config(tmp_path / "g.json", raw_config(tmp_path, mock.url + "/api/v1"))
    gate = await start_gate(cfg, tmp_path, preexec_fn=_limit_file_size)
    try:
        url = gate.url
        statuses = []
        async with aiohttp.ClientSession() as s:
            for _ in range(40):
                async with s.post(
                    url + "/v1/chat/completions", json=chat(), headers={"X-Agent-ID": "agent-1"}
                ) as resp:
                    statuses.append(resp.status)
                    if resp.status == 503:
                        body = await resp.json()
                        assert body["error"]["type"] == "spend_log_unavailable"
                        break
            async with s.get(url + "/api/health") as resp:
                health = await resp.json()
        assert statuses[0] == 200 and statuses[-1] == 503  # admitted, then refused
        assert health["status"] == "degraded" and "spend_log_error" in health
        assert gate.proc.returncode is None  # SIGXFSZ did not kill it
        # The file stops at the limit (the line cut short there is cut away again);
        # nothing went upstream after the refusal.
        assert (tmp_path / "spend.jsonl").stat().st_size <= LIMIT
        lines = [r for r in read_records(tmp_path / "spend.jsonl") if r["event"] == "request"]
        assert lines and all(r["status"] == 200 for r in lines)
        async with aiohttp.ClientSession() as s, s.get(mock.url + "/_mock/stats") as resp:
            stats = await resp.json()
        assert stats["chat_requests"] == statuses.count(200)
    finally:
        await gate.stop()
        await mock.stop()


def _limit_soft_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.RLIM_INFINITY))


async def test_a_write_cut_short_leaves_only_whole_lines_in_the_log(tmp_path: Path) -> None:
    """Issue 12 #3: the write that reaches the limit is cut short mid-line; the gate cuts
    the fragment away, so once the disk has room again the log is whole lines only
    (`jq -s` reads it) and holds every request line once."""
    mock = await start_mock(tmp_path)
    cfg = write_config(tmp_path / "g.json", raw_config(tmp_path, mock.url + "/api/v1"))
    gate = await start_gate(cfg, tmp_path, preexec_fn=_limit_soft_file_size)
    log = tmp_path / "spend.jsonl"
    try:
        async with aiohttp.ClientSession() as s:
            statuses = await _until_refused(s, gate.url)
            assert statuses[-1] == 503
            assert log.stat().st_size <= LIMIT
            assert log.read_bytes().endswith(b"\n")  # no torn fragment at the end
            # Room again (the operator freed the disk): the writer catches up by itself.
            unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            resource.prlimit(gate.proc.pid, resource.RLIMIT_FSIZE, unlimited)
            for _ in range(200):  # the writer retries with backoff (<= 1 s)
                async with s.get(gate.url + "/api/health") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.05)
            statuses += await _until_refused(s, gate.url, 1)
            assert statuses[-1] == 200
        assert await gate.stop() == 0
        async with aiohttp.ClientSession() as s, s.get(mock.url + "/_mock/stats") as resp:
            stats = await resp.json()
    finally:
        await gate.stop()
        await mock.stop()
    raw = log.read_bytes()
    assert raw.endswith(b"\n")
    records = [json.loads(line) for line in raw.splitlines()]  # every line parses
    requests = [r for r in records if r["event"] == "request"]
    assert sorted(r["status"] for r in requests) == sorted(statuses)  # each written once
    assert stats["chat_requests"] == statuses.count(200)


async def _until_refused(s: aiohttp.ClientSession, url: str, most: int = 40) -> list[int]:
    statuses = []
    for _ in range(most):
        async with s.post(
            url + "/v1/chat/completions", json=chat(), headers={"X-Agent-ID": "agent-1"}
        ) as resp:
            statuses.append(resp.status)
            await resp.read()
            if resp.status == 503:
                break
    return statuses
