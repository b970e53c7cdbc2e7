"""SPEC's third kind of unwritable log: the file size limit (RLIMIT_FSIZE)."""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from pathlib import Path

import aiohttp

from gate.spendlog import read_records

from .procs import ROOT, start_mock
from .support import chat, raw_config, write_config

LIMIT = 6000  # bytes: room for a handful of lines


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


async def test_a_file_size_limit_stops_paid_requests_instead_of_killing_the_gate(
    tmp_path: Path,
) -> None:
    mock = await start_mock(tmp_path)
    cfg = write_config(tmp_path / "g.json", raw_config(tmp_path, mock.url + "/api/v1"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gate",
        "--config",
        str(cfg),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_limit_file_size,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        url = line.decode().rsplit(" ", 1)[1].strip()
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
        assert proc.returncode is None  # SIGXFSZ did not kill it
        # The file stops at the limit (its last line torn, skipped by the reader, and the
        # next write would start on a fresh line); nothing went upstream after the refusal.
        assert (tmp_path / "spend.jsonl").stat().st_size <= LIMIT
        lines = [r for r in read_records(tmp_path / "spend.jsonl") if r["event"] == "request"]
        assert lines and all(r["status"] == 200 for r in lines)
        async with aiohttp.ClientSession() as s, s.get(mock.url + "/_mock/stats") as resp:
            stats = await resp.json()
        assert stats["chat_requests"] == statuses.count(200)
    finally:
        proc.terminate()
        await proc.wait()
        await mock.stop()
