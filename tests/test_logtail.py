"""Reading the spend log from a cursor (the sinks' backlog), and lines to rows: pure."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from gate.books import logtail
from gate.books.logtail import identify, read_batch
from gate.sinks.sql import insert_sql, rows_of

REQUEST = (
    '{"request_id":"req-1","generation_id":null,"agent_id":"a","model":null,"tier":null,'
    '"models_allowed":[],"stream":false,"status":403,"prompt_tokens":0,"completion_tokens":0,'
    '"latency_ms":0.4,"ts":"2026-11-01T10:00:00.123Z","event":"request","cost":0,'
    '"cost_source":"none"}'
)
HOLD = '{"ts":"2026-11-01T10:00:00.000Z","event":"hold","request_id":"req-2","held":0.5}'


def test_only_whole_lines_are_taken(tmp_path: Path) -> None:
    log = tmp_path / "spend.jsonl"
    log.write_text(HOLD + "\n" + REQUEST + "\n" + REQUEST[:40])  # the last still being written
    batch = read_batch(log, 0, max_requests=10)
    assert [line.decode() for line in batch.lines] == [HOLD, REQUEST]
    assert batch.end == len(HOLD) + len(REQUEST) + 2 and batch.requests == 1
    assert read_batch(log, batch.end, 10).lines == []  # waits for the rest
    with log.open("a") as f:
        f.write(REQUEST[40:] + "\n")
    assert read_batch(log, batch.end, 10).lines == [REQUEST.encode()]


def test_a_batch_stops_at_max_requests(tmp_path: Path) -> None:
    log = tmp_path / "spend.jsonl"
    log.write_text((HOLD + "\n" + REQUEST + "\n") * 5)
    batch = read_batch(log, 0, max_requests=2)
    assert batch.requests == 2 and len(batch.lines) == 4


def test_an_over_long_line_is_stepped_over(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(logtail, "BATCH_BYTES", 64)
    log = tmp_path / "spend.jsonl"
    log.write_text("x" * 200 + "\n" + REQUEST + "\n")
    skipped = read_batch(log, 0, 10, max_bytes=64)
    assert skipped.lines == [] and skipped.end == 201
    assert read_batch(log, skipped.end, 10).lines == [REQUEST.encode()]


def test_a_log_is_known_by_its_first_line(tmp_path: Path) -> None:
    log = tmp_path / "spend.jsonl"
    assert identify(log) is None  # not there yet
    log.write_text(HOLD)
    assert identify(log) is None  # no whole first line yet
    log.write_text(HOLD + "\n")
    first = identify(log)
    assert first is not None and first.size == len(HOLD) + 1
    log.write_text(HOLD + "\n" + REQUEST + "\n")
    assert identify(log).log_id == first.log_id  # type: ignore[union-attr]
    log.write_text(REQUEST + "\n")  # rotated: a new log
    assert identify(log).log_id != first.log_id  # type: ignore[union-attr]


def test_rows_keep_exact_money_and_count_unusable_lines() -> None:
    line = json.loads(REQUEST)
    line.update(request_id="req-3", cost=0.000123456789, budget_remaining=4.5, status=200)
    good = json.dumps(line, separators=(",", ":")).encode()
    no_id = REQUEST.replace('"request_id":"req-1",', "").encode()
    torn = REQUEST[:-20].encode()  # cut after its "event" (before: not known as a request)
    rows, bad = rows_of([HOLD.encode(), REQUEST.encode(), good, no_id, torn, b"junk"])
    assert bad == 2 and [r[0] for r in rows] == ["req-1", "req-3"]
    assert rows[1][10] == Decimal("0.000123456789") and rows[1][12] == Decimal("4.5")
    assert rows[0][1].isoformat() == "2026-11-01T10:00:00.123000+00:00"
    assert rows[0][-1] == REQUEST  # the raw line rides along for the jsonb column
    assert "ON CONFLICT (request_id) DO NOTHING" in insert_sql("tool_calls")
