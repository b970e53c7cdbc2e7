"""One writer per spend log, and compaction at the last snapshot."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from gate.books.compact import CompactError, compact
from gate.books.loglock import SpendLogBusy
from gate.books.logscan import read_records
from gate.books.spendlog import SpendLog

from .procs import ROOT, start_gate, start_mock
from .support import agent, books, chat, raw_config, request_lines, write_config


async def test_a_second_writer_is_refused_while_the_first_holds_the_log(tmp_path: Path) -> None:
    path = tmp_path / "spend.jsonl"
    first = SpendLog(path)
    await first.start()
    second = SpendLog(path)
    with pytest.raises(SpendLogBusy):
        await second.start()
    await first.close()
    third = SpendLog(path)  # released on close
    await third.start()
    await third.close()


async def test_a_second_gate_on_the_same_log_exits_with_one_line(tmp_path: Path) -> None:
    mock = await start_mock(tmp_path)
    cfg = write_config(tmp_path / "g.json", raw_config(tmp_path, mock.url + "/api/v1"))
    gate = await start_gate(cfg, tmp_path)
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "gate", "--config", str(cfg), "--port", "0"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 1
        assert "another process is writing" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        await gate.stop()
        await mock.stop()


def lines_with_snapshot(path: Path) -> None:
    path.write_text(
        '{"event":"request","request_id":"a","agent_id":"x","cost":0.5}\n'
        '{"event":"request","request_id":"b","agent_id":"x","cost":0.25}\n'
        '{"event":"snapshot","ts":"2026-11-23T00:00:00.000Z","agents":{},"holds":{}}\n'
        '{"event":"request","request_id":"c","agent_id":"x","cost":0.125}\n'
    )


def test_compact_archives_the_head_and_keeps_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "spend.jsonl"
    lines_with_snapshot(path)
    before = path.read_bytes()
    done = compact(path, now=datetime(2026, 11, 23, 14, 0, tzinfo=UTC))
    assert done.archive.name == "spend.jsonl.20261123T140000Z"
    assert path.read_bytes().startswith(b'{"event":"snapshot"')
    assert done.archive.read_bytes() + path.read_bytes() == before  # every line once
    ids = [
        r["request_id"] for p in (done.archive, path) for r in read_records(p) if "request_id" in r
    ]
    assert ids == ["a", "b", "c"]
    with pytest.raises(CompactError):  # the log now starts at its snapshot: nothing to cut
        compact(path)


def test_compact_cuts_at_the_last_whole_snapshot_not_a_torn_one(tmp_path: Path) -> None:
    """Issue 12 #1: a torn snapshot is no place to cut: the log would start at a line that
    does not parse and a replay of it would lose the spend before it."""
    path = tmp_path / "spend.jsonl"
    lines_with_snapshot(path)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"event":"snapshot","agents":{"x":{"sp\n')
    done = compact(path, now=datetime(2026, 11, 23, 14, 0, tzinfo=UTC))
    kept = path.read_bytes()
    assert kept.startswith(b'{"event":"snapshot","ts"')
    assert done.archive.read_bytes() == whole[: whole.index(b'{"event":"snapshot"')]


async def test_compact_refuses_while_a_gate_writes_the_log(tmp_path: Path) -> None:
    path = tmp_path / "spend.jsonl"
    lines_with_snapshot(path)
    log = SpendLog(path)
    await log.start()
    with pytest.raises(SpendLogBusy):
        compact(path)
    await log.close()


async def test_state_and_report_survive_compaction(tmp_path: Path) -> None:
    """Spend, stop, compact, restart: the same state; report over archive + log = books."""
    mock = await start_mock(tmp_path)
    raw = raw_config(tmp_path, mock.url + "/api/v1", agents={"agent-1": agent(50)}, admin_token="t")
    cfg = write_config(tmp_path / "g.json", raw)
    log = tmp_path / "spend.jsonl"
    gate = await start_gate(cfg, tmp_path)
    auth = {"Authorization": "Bearer t"}
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(12):
                async with s.post(
                    gate.url + "/v1/chat/completions",
                    json=chat(),
                    headers={"X-Agent-ID": "agent-1"},
                ) as resp:
                    assert resp.status == 200
            async with s.get(gate.url + "/api/spend/agent-1", headers=auth) as resp:
                before = await resp.json()
            assert await gate.stop() == 0
            total = books(log)
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "gate", "compact", "--log", str(log)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            archive = next(tmp_path.glob("spend.jsonl.2*"))
            assert len(request_lines(log)) < 12  # the head really moved out
            gate = await start_gate(cfg, tmp_path)
            async with s.get(gate.url + "/api/spend/agent-1", headers=auth) as resp:
                after = await resp.json()
        assert after["budget_spent"] == before["budget_spent"]
        assert Decimal(str(after["budget_spent"])) == total
        report = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "gate",
                "report",
                "--log",
                str(archive),
                "--log",
                str(log),
                "--format",
                "json",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert Decimal(json.loads(report.stdout)["total"]["usd"]) == total
    finally:
        await gate.stop()
        await mock.stop()
