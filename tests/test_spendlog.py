"""The spend log writer and reader, on real files (and /dev/full for a failing disk)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from decimal import Decimal
from pathlib import Path

import pytest

from gate.books import spendlog
from gate.books.logscan import read_records
from gate.books.spendlog import SpendLog, SpendLogError


async def test_concurrent_lines_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "spend.jsonl"
    log = SpendLog(path)
    await log.start()
    big = "x" * 20_000  # larger than a pipe buffer: a non-atomic writer would tear it

    async def writer(n: int) -> None:
        for i in range(50):
            log.append({"event": "request", "writer": n, "i": i, "pad": big})
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(n) for n in range(20)))
    await log.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert len(records) == 1000
    for n in range(20):  # each writer's lines in its own order
        assert [r["i"] for r in records if r["writer"] == n] == list(range(50))


async def test_group_commit_batches_writes(tmp_path: Path) -> None:
    log = SpendLog(tmp_path / "spend.jsonl")
    await log.start()
    for i in range(500):
        log.append({"i": i})
    await log.flush()
    assert log.lines_written == 500
    await log.close()


async def test_durable_append_resolves_after_the_line_is_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "spend.jsonl"
    log = SpendLog(path)
    await log.start()
    done = log.append({"event": "hold", "held": Decimal("0.25")}, durable=True)
    assert done is not None
    await done
    assert json.loads(path.read_text()) == {"event": "hold", "held": 0.25}
    await log.close()


async def test_decimals_round_trip_exactly(tmp_path: Path) -> None:
    path = tmp_path / "spend.jsonl"
    log = SpendLog(path)
    await log.start()
    costs = [Decimal("0.000123"), Decimal("1.1"), Decimal("0.00000005")]
    for c in costs:
        log.append({"cost": c})
    await log.close()
    assert [r["cost"] for r in read_records(path)] == costs


def test_reader_skips_torn_and_foreign_lines(tmp_path: Path) -> None:
    path = tmp_path / "spend.jsonl"
    path.write_bytes(b'{"a":1}\nnot json\n[1,2]\n\n{"a":2}\n{"a":3,"b":"tor')
    assert [r["a"] for r in read_records(path)] == [1, 2]


def test_reader_accepts_a_whole_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "spend.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2}')
    assert [r["a"] for r in read_records(path)] == [1, 2]


async def test_append_after_torn_line_starts_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / "spend.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2,"cost":0.1')  # killed mid-write
    log = SpendLog(path)
    await log.start()
    log.append({"a": 3})
    await log.close()
    assert [r["a"] for r in read_records(path)] == [1, 3]
    assert path.read_bytes().endswith(b'\n{"a":3}\n')


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_failing_disk_reports_error_and_fails_durable_lines(tmp_path: Path) -> None:
    link = tmp_path / "spend.jsonl"
    link.symlink_to("/dev/full")
    log = SpendLog(link)
    await log.start()
    hold = log.append({"event": "hold"}, durable=True)
    assert hold is not None
    with pytest.raises(SpendLogError):
        await hold
    assert log.error is not None and "space" in log.error.lower()
    log.append({"event": "request", "cost": 1})  # a settlement: kept, retried
    # The disk comes back: point the path at a real file; the writer reopens by path.
    real = tmp_path / "real.jsonl"
    real.touch()
    link.unlink()
    link.symlink_to(real)
    for _ in range(200):  # the writer retries with backoff (<= 1 s)
        if log.error is None:
            break
        await asyncio.sleep(0.02)
    assert log.error is None
    await log.close()
    # The failed hold line was dropped; the settlement was kept and written once.
    assert [r["event"] for r in read_records(real)] == ["request"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_lines_unwritten_at_shutdown_are_reported_not_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    """Issue 13: the writer gives up at shutdown on a failing disk; the lines it could
    not write are named in an error and handed to stderr as the JSON lines they are."""
    monkeypatch.setattr(spendlog, "RETRY_MAX_SECONDS", 0.1)  # give up soon
    link = tmp_path / "spend.jsonl"
    link.symlink_to("/dev/full")
    log = SpendLog(link)
    await log.start()
    hold = log.append({"event": "hold", "request_id": "h"}, durable=True)
    lines = [{"event": "request", "request_id": f"r{i}", "cost": Decimal("0.5")} for i in range(3)]
    for line in lines:
        log.append(dict(line))
    capsys.readouterr()
    with caplog.at_level(logging.ERROR, logger="gate.books.spendlog"):
        await log.close()
    assert hold is not None and hold.done()
    assert isinstance(hold.exception(), SpendLogError)  # a hold line is failed, not printed
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("3 lines could not be written at shutdown" in m for m in errors), errors
    printed = [json.loads(ln, parse_float=Decimal) for ln in capsys.readouterr().err.splitlines()]
    assert printed == lines


async def test_a_line_torn_by_a_crash_is_set_aside_not_left_mid_log(tmp_path: Path) -> None:
    """Issue 12 #3, the crash case: the log stays whole lines only (`jq -s` reads it); the
    fragment is kept beside it, not erased. A last line that only lacks its newline is
    a whole line and stays."""
    path = tmp_path / "spend.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2,"cost":0.1')  # killed mid-write
    log = SpendLog(path)
    await log.start()
    log.append({"a": 3})
    await log.close()
    assert [json.loads(line) for line in path.read_bytes().splitlines()] == [{"a": 1}, {"a": 3}]
    assert (tmp_path / "spend.jsonl.torn").read_bytes() == b'{"a":2,"cost":0.1\n'
    path.write_bytes(b'{"a":1}\n{"a":2}')
    log = SpendLog(path)
    await log.start()
    log.append({"a": 3})
    await log.close()
    assert path.read_bytes() == b'{"a":1}\n{"a":2}\n{"a":3}\n'


async def test_a_line_appended_after_close_is_reported_not_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    """Issue 13 (the shutdown finding, its last gap): a line appended once close() has
    finished (a settlement racing the stop) has no writer left; it used to sit in the
    queue and vanish. It is reported like any line left unwritten at shutdown."""
    log = SpendLog(tmp_path / "spend.jsonl")
    await log.start()
    await log.close()
    capsys.readouterr()
    line = {"event": "request", "request_id": "late", "cost": Decimal("0.25")}
    with caplog.at_level(logging.ERROR, logger="gate.books.spendlog"):
        assert log.append(dict(line)) is None
        hold = log.append({"event": "hold", "request_id": "h"}, durable=True)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("1 lines could not be written at shutdown" in m for m in errors), errors
    printed = [json.loads(ln, parse_float=Decimal) for ln in capsys.readouterr().err.splitlines()]
    assert printed == [line]
    assert hold is not None and isinstance(hold.exception(), SpendLogError)
    assert list(read_records(tmp_path / "spend.jsonl")) == []
