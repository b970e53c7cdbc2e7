"""The bench cannot rot: `python -m bench --smoke` runs every section with tiny numbers,
and the checks that make a full run fail (a lost or reordered chunk, books that differ
from the mock's charges) are tested on their own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from bench.books import SpendCursor, SpendCursors, compare, tally
from bench.floor import create_app as create_floor_app
from bench.load import closed_loop, new_session, open_loop, streams
from bench.shared_store import committed
from bench.streamcheck import StreamCheck
from bench.world import direct_target, floor_target
from bench.wrk import parse
from mock_upstream import create_app as create_mock_app
from mock_upstream import wire
from mock_upstream.prices import ModelPrice
from mock_upstream.wire import token_text

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(60)
def test_smoke_run_passes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # No time budget here: a loaded machine makes it slow, never wrong (timings belong
    # to `make bench`); the timeout above only catches a hang.
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert results["ok"], results["failures"]
    redis = shutil.which("redis-server") is not None  # (r) is skipped without it
    assert {row["section"] for row in results["rows"]} >= set("abcdef" + "r" * redis)
    assert results["books"] and all(b["ok"] for b in results["books"])
    for key in (
        "a.direct.rps",
        "a.gate.rps",
        "a.gate.cpu_ms",
        "a.floor.rps",
        "a.floor.cpu_ms",
        "b.20.gate.p99",
        "b.20.floor.p99",
        "b.200.direct2.p50",
        "c.gate.first_p50",
        "c.floor.first_p99",
        "c.direct.total_p99",
        "c.gate.cpu_ms",
        "c.floor.cpu_ms",
        "d.20.peak_mib",
        "d.20.floor.peak_mib",
        "e.burst",
        "e.path",
        "f.2000.first",
        "f.2000.restart",
    ):
        assert results["series"][key]["median"] is not None, key
    assert "books: Σ cost == mock charges" in done.stdout
    assert "gate ÷ floor" in done.stdout.splitlines()[2]  # the table's header
    floor_rows = {row["metric"]: row for row in results["rows"] if row["floor"]}
    assert {row["section"] for row in floor_rows.values()} == set("abcd")
    throughput = next(row for name, row in floor_rows.items() if name.startswith("throughput"))
    assert throughput["gate_per_floor"].endswith("×")
    assert throughput["floor_verdict"] in ("ok", "MISS")
    shared = results["meta"]["redis"]
    if not redis:
        assert "redis-server is not installed" in shared["skipped"]
        return
    for key in (
        "r.jsonl.rps",
        "r.redis.rps",
        "r.redis2.rps",
        "r.redis.cpu_ms",
        "r.redis2.redis_cpu_ms",
        "r.edge.admitted",
        "r.edge.overshoot_usd",
    ):
        assert results["series"][key]["median"] is not None, key
    assert shared["books"] and all(b["ok"] for b in shared["books"])
    assert [run["within_one_hold"] for run in shared["edge"]] == [True]
    assert "books: Σ logs == mock == Redis spent" in done.stdout


# -- the stream check -----------------------------------------------------------------

REPLY = wire.Reply(gen_id="gen-1-abc", model="openai/gpt-5", provider="OpenAI", created=1)


def sse_stream(order: list[int], done: bool = True) -> bytes:
    usage = wire.usage(ModelPrice(Decimal("1e-6"), Decimal("1e-5")), 10, len(order), with_cost=True)
    parts = [wire.COMMENT]
    parts += [wire.sse(wire.chunk(REPLY, token_text(i))) for i in order]
    parts.append(wire.sse(wire.chunk(REPLY, "", "stop")))
    parts.append(wire.sse(wire.usage_chunk(REPLY, usage)))
    if done:
        parts.append(wire.DONE)
    return b"".join(parts)


def checked(raw: bytes, chunks: int, step: int = 7) -> list[str]:
    check = StreamCheck(chunks, want_usage=True)
    for start in range(0, len(raw), step):  # arbitrary cuts, as TCP delivers them
        check.feed(raw[start : start + step], float(start))
    return check.problems()


def test_a_whole_stream_passes() -> None:
    assert checked(sse_stream(list(range(20))), 20) == []


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ([0, 1, 2, 4, 5], "content chunks, expected 6"),  # one lost
        ([0, 2, 1, 3, 4, 5], "reordered"),
        ([0, 1, 2, 3, 4, 5, 5], "content chunks, expected 6"),  # one twice
    ],
)
def test_a_lost_or_reordered_chunk_is_caught(order: list[int], expected: str) -> None:
    problems = checked(sse_stream(order), 6)
    assert any(expected in p for p in problems), problems


def test_a_stream_without_done_is_caught() -> None:
    assert "no data: [DONE]" in checked(sse_stream(list(range(6)), done=False), 6)


# -- the books ------------------------------------------------------------------------


def lines(*records: dict[str, object]) -> list[bytes]:
    return [json.dumps(r).encode() for r in records]


def test_books_match_exactly_as_decimals() -> None:
    log = lines(
        {"event": "hold", "request_id": "r1", "held": 0.5},
        {"event": "hold", "request_id": "r2", "held": 0.5},
        {"event": "request", "request_id": "r1", "cost": 0.1, "status": 200},
        {"event": "request", "request_id": "r2", "cost": 0.2, "status": 200},
        {"event": "request", "request_id": "r3", "cost": 0, "status": 403},  # refused
    )
    stats = {"total_charged_str": "0.3", "chat_requests": 2}
    assert compare(tally(log), stats).ok  # 0.1 + 0.2 == 0.3 as Decimals, not floats


def test_books_that_differ_or_hold_open_fail() -> None:
    log = lines(
        {"event": "hold", "request_id": "r1", "held": 0.5},
        {"event": "hold", "request_id": "r2", "held": 0.5},
        {"event": "request", "request_id": "r1", "cost": 0.1, "status": 200},
    )
    result = compare(tally(log), {"total_charged_str": "0.10000001", "chat_requests": 2})
    assert not result.ok
    assert "!=" in result.detail
    assert "1 holds never settled" in result.detail


def test_two_instances_logs_are_read_as_one_from_their_marks(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(b'{"event": "request", "request_id": "old", "cost": 9}\n')
    both = SpendCursors(SpendCursor(a), SpendCursor(b))  # b does not exist yet
    both.mark()
    with a.open("ab") as f:
        f.write(b'{"event": "request", "request_id": "r1", "cost": 0.1, "status": 200}\n')
    b.write_bytes(b'{"event": "request", "request_id": "r2", "cost": 0.2, "status": 402}\n{"ev')
    found = tally(both.lines())  # the half-written line in b is left for later
    assert (found.requests, found.cost, found.statuses) == (2, Decimal("0.3"), {200: 1, 402: 1})


def test_what_two_gates_committed_is_replayed_in_time_order() -> None:
    a = lines(
        {"ts": "T1", "event": "hold", "request_id": "r1", "held": 0.5},
        {"ts": "T4", "event": "request", "request_id": "r1", "cost": 0.1},
    )
    b = lines(
        {"ts": "T2", "event": "hold", "request_id": "r2", "held": 0.25},
        {"ts": "T3", "event": "hold", "request_id": "r2", "held": 0.25, "generation_id": "g"},
        {"ts": "T5", "event": "request", "request_id": "r2", "cost": 0.2},
        {"ts": "T6", "event": "request", "request_id": "r3", "cost": 0, "status": 402},
    )
    assert committed(a + b) == (Decimal("0.5"), Decimal("0.75"))


# -- the Python load generator and wrk's summary ----------------------------------------


async def test_python_load_generator_paths(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    server = await aiohttp_server(create_mock_app(request_log=tmp_path / "requests.log"))
    target = direct_target(str(server.make_url("")).rstrip("/"))
    async with new_session() as session:
        closed = await closed_loop(session, target, 4, 0.2)
        assert closed.requests > 0 and closed.failures == 0
        opened = await open_loop(session, target, 100, 0.1)
        assert len(opened.latencies) == 10 and opened.failures == 0
        results = await streams(session, target, 3, 8, True)  # the mock's default: 8 chunks
        assert [r.problems for r in results] == [[], [], []]


async def test_the_floor_relays_whole_answers_and_streams(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    mock = await aiohttp_server(create_mock_app(request_log=tmp_path / "requests.log"))
    mock_url = str(mock.make_url("")).rstrip("/")
    floor = await aiohttp_server(create_floor_app(mock_url))
    target = floor_target(str(floor.make_url("")).rstrip("/"), mock_url)
    async with new_session() as session:
        async with session.post(target.url, data=target.body, headers=target.headers) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            assert (await resp.json())["usage"]["cost"] > 0
        results = await streams(session, target, 3, 8, True)
        assert [r.problems for r in results] == [[], [], []]
        async with session.post(target.url, data=target.body, headers={}) as resp:
            assert resp.status == 401  # the mock's refusal, relayed as it is


def test_wrk_summary_is_parsed() -> None:
    out = (
        "Running 1s test @ http://127.0.0.1:1/\n"
        "WRK_SUMMARY requests=1234 duration_us=1000000 connect=0 read=1 write=0 status=2"
        " timeout=0 p50_us=1500 p99_us=9000\n"
    )
    result = parse(out, 0.25)
    assert (result.requests, result.seconds, result.errors) == (1234, 1.0, 3)
    assert (result.p50_ms, result.p99_ms, result.client_cpu_seconds) == (1.5, 9.0, 0.25)


def test_the_instruction_count_is_read_from_callgrinds_last_words() -> None:
    """`bench.instructions` (too slow for the suite: valgrind) reads the count callgrind
    prints at exit; no count is an error, never a zero."""
    from bench.instructions import collected

    stderr = b"==123== Events    : Ir\n==123== Collected : 3645209117\n==123==\n"
    assert collected(stderr) == 3_645_209_117
    with pytest.raises(RuntimeError, match="no count"):
        collected(b"==123== valgrind: the process was killed\n")
