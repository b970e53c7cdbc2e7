"""SPEC's third kind of unwritable log: the file size limit (RLIMIT_FSIZE)."""

from __future__ import annotations

import resource
from pathlib import Path

import aiohttp

from gate.spendlog import read_records

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
        # The file stops at the limit (its last line torn, skipped by the reader, and the
        # next write would start on a fresh line); nothing went upstream after the refusal.
        assert (tmp_path / "spend.jsonl").stat().st_size <= LIMIT
        lines = [r for r in read_records(tmp_path / "spend.jsonl") if r["event"] == "request"]
        assert lines and all(r["status"] == 200 for r in lines)
        async with aiohttp.ClientSession() as s, s.get(mock.url + "/_mock/stats") as resp:
            stats = await resp.json()
        assert stats["chat_requests"] == statuses.count(200)
    finally:
        await gate.stop()
        await mock.stop()
