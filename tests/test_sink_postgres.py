"""The Postgres sink against a real PostgreSQL server, in a database made per test.

The server: GATE_TEST_POSTGRES (a DSN to a database the tests may create databases
from), else postgresql://postgres@127.0.0.1:5432/postgres. Without one these tests skip,
saying why — except in CI (CI=true), where a missing server is a failure
(`scripts/with-postgres` finds or starts one there). Outages are made without touching
the shared server: the test database is made read-only or closed to connections and
the gate's connections are terminated.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

try:
    import asyncpg
except ImportError:  # the `postgres` extra is missing: a failure in CI, a skip elsewhere
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("NO ASYNCPG: pip install -e '.[postgres]'", allow_module_level=True)

from gate.context import GATE
from gate.sinks.postgres import PostgresSink

from .support import (
    agent,
    chat,
    make_config,
    raw_config,
    request_lines,
    write_config,
)

SERVER = os.environ.get("GATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
CHAT = "/v1/chat/completions"
ROOT = Path(__file__).resolve().parents[1]


def _with_database(dsn: str, name: str, password: str | None = None) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    netloc = parts.netloc
    if password is not None:
        user_host = netloc.rsplit("@", 1)
        user = user_host[0].split(":", 1)[0] if len(user_host) == 2 else "postgres"
        netloc = f"{user}:{password}@{user_host[-1]}"
    return urlunsplit((parts.scheme, netloc, "/" + name, parts.query, ""))


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    """A connection to the server's maintenance database."""
    try:
        conn = await asyncpg.connect(SERVER, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        reason = (
            f"NO POSTGRESQL: the Postgres sink tests need a server at GATE_TEST_POSTGRES "
            f"(default 127.0.0.1:5432, user postgres): {type(exc).__name__}: {exc}. "
            "Run the suite as `scripts/with-postgres make test` to have one started."
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def database(server: Any) -> AsyncIterator[str]:
    """A fresh database with a random name, dropped afterwards; yields its name."""
    name = "gate_test_" + secrets.token_hex(6)
    await server.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        await server.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await terminate(server, name)
        await server.execute(f"DROP DATABASE IF EXISTS {name}")


async def terminate(server: Any, name: str) -> int:
    """Close every connection to the database (the gate's pool included)."""
    return await server.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )


def sink_cfg(database: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        {
            "type": "postgres",
            "dsn": _with_database(SERVER, database),
            "table": "tool_calls",
            "batch_delay_seconds": 0.01,
            "retry_max_seconds": 0.2,
            **fields,
        }
    ]


async def rows(dsn: str, table: str = "tool_calls") -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetch(f"SELECT * FROM {table}")
    finally:
        await conn.close()
    return {r["request_id"]: r for r in found}


async def caught_up(client: Any, timeout: float = 15) -> PostgresSink:
    """Wait until the sink has copied the whole spend log."""
    gate = client.app[GATE]
    await gate.ledger.spend_log.flush()
    sink = gate.sinks[0]
    async with asyncio.timeout(timeout):
        while True:
            size = gate.ledger.spend_log.path.stat().st_size
            if sink.state.offset == size and sink.state.error is None:
                return sink
            await asyncio.sleep(0.02)


def assert_row_matches(row: Any, line: dict[str, Any]) -> None:
    assert row["ts"].isoformat(timespec="milliseconds").replace("+00:00", "Z") == line["ts"]
    for name in ("generation_id", "agent_id", "model", "tier", "stream", "status"):
        assert row[name] == line.get(name), name
    for name in ("prompt_tokens", "completion_tokens"):
        assert row[name] == line[name], name
    assert row["cost"] == Decimal(str(line["cost"]))
    assert row["cost_source"] == line["cost_source"]
    assert list(row["models_allowed"]) == line["models_allowed"]
    assert json.loads(row["line"], parse_float=Decimal) == line


# --- rows land ---------------------------------------------------------------------


async def test_rows_land_for_json_stream_and_refused(start_gate, mock, tmp_path, database):
    agents = {"agent-1": agent(), "broke": agent(1, budget_spent=1)}
    cfg = make_config(tmp_path, mock.base_url, agents, sinks=sink_cfg(database))
    client = await start_gate(cfg)
    hdr = {"X-Agent-ID": "agent-1"}
    assert (await client.post(CHAT, json=chat(), headers=hdr)).status == 200
    resp = await client.post(CHAT, json=chat(stream=True), headers=hdr)
    assert resp.status == 200
    await resp.read()
    refusals = [
        ({"X-Agent-ID": "nobody"}, 403),  # no line of its own: counted, and no row
        ({"X-Agent-ID": "broke"}, 402),
        (hdr, 400),
    ]
    for headers, status in refusals:
        body = chat() if status != 400 else [1]
        assert (await client.post(CHAT, json=body, headers=headers)).status == status

    await caught_up(client)
    lines = request_lines(tmp_path / "spend.jsonl")
    assert sorted(x["status"] for x in lines) == [200, 200, 400, 402]
    assert sorted(x["stream"] for x in lines) == [False, False, False, True]
    got = await rows(_with_database(SERVER, database))
    assert set(got) == {x["request_id"] for x in lines}
    for line in lines:
        assert_row_matches(got[line["request_id"]], line)
    health = await (await client.get("/api/health")).json()
    assert health["sinks"][0]["status"] == "ok" and health["sinks"][0]["backlog_bytes"] == 0
    assert health["sinks"][0]["rows_written"] == 4


# --- outages -----------------------------------------------------------------------


async def burst(client: Any, n: int, stream_every: int = 3) -> None:
    async def one(i: int) -> None:
        body = chat(f"req {i}", stream=i % stream_every == 0)
        resp = await client.post(CHAT, json=body, headers={"X-Agent-ID": "agent-1"})
        assert resp.status == 200
        await resp.read()

    await asyncio.gather(*(one(i) for i in range(n)))


async def wait_failing(client: Any, timeout: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            health = await (await client.get("/api/health")).json()
            if health["sinks"][0]["status"] == "failing":
                return health
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("outage", ["read_only", "no_connections"])
async def test_an_outage_loses_and_duplicates_nothing(
    start_gate, mock, tmp_path, server, database, outage
):
    dsn = _with_database(SERVER, database)
    agents = {"agent-1": agent(1000)}
    cfg = make_config(tmp_path, mock.base_url, agents, sinks=sink_cfg(database))
    client = await start_gate(cfg)
    await burst(client, 6)
    await caught_up(client)

    # Postgres goes away mid-run: requests go on, the gate answers them all.
    away, back = {
        "read_only": (
            "SET default_transaction_read_only = on",
            "RESET default_transaction_read_only",
        ),
        "no_connections": ("ALLOW_CONNECTIONS false", "ALLOW_CONNECTIONS true"),
    }[outage]
    await server.execute(f"ALTER DATABASE {database} {away}")
    await terminate(server, database)
    during = asyncio.create_task(burst(client, 30))
    health = await wait_failing(client)
    await during
    await client.app[GATE].ledger.spend_log.flush()
    health = await (await client.get("/api/health")).json()
    assert health["status"] == "ok"  # the gate serves; only the copy waits
    assert health["sinks"][0]["status"] == "failing"
    assert health["sinks"][0]["backlog_bytes"] > 0
    assert "error" in health["sinks"][0]

    # ...and comes back: the backlog drains, every row once.
    await server.execute(f"ALTER DATABASE {database} {back}")
    sink = await caught_up(client)
    lines = request_lines(tmp_path / "spend.jsonl")
    assert len(lines) == 36
    got = await rows(dsn)
    assert sorted(got) == sorted(x["request_id"] for x in lines)
    for line in lines:
        assert_row_matches(got[line["request_id"]], line)
    assert sink.state.rows_written == 36


async def test_a_lost_commit_replays_without_duplicates(start_gate, mock, tmp_path, database):
    """The cursor is behind the rows (as after a commit whose answer was lost): the
    replayed lines meet their rows and add nothing."""
    dsn = _with_database(SERVER, database)
    cfg = make_config(tmp_path, mock.base_url, sinks=sink_cfg(database))
    client = await start_gate(cfg)
    await burst(client, 4)
    await caught_up(client)
    await client.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE gate_sink_cursor SET byte_offset = 0")
    finally:
        await conn.close()
    client = await start_gate(cfg)
    await burst(client, 2)
    sink = await caught_up(client)
    assert sink.state.rows_present == 4 and sink.state.rows_written == 2
    assert len(await rows(dsn)) == 6 == len(request_lines(tmp_path / "spend.jsonl"))


async def test_a_restart_goes_on_from_the_cursor(start_gate, mock, tmp_path, database):
    dsn = _with_database(SERVER, database)
    cfg = make_config(tmp_path, mock.base_url, sinks=sink_cfg(database))
    first = await start_gate(cfg)
    await burst(first, 3)
    await caught_up(first)
    await first.close()  # shutdown: the sink copies what the log still held, then stops
    second = await start_gate(cfg)
    await burst(second, 2)
    sink = await caught_up(second)
    assert sink.state.rows_present == 0  # nothing before the cursor was read again
    assert len(await rows(dsn)) == 5
    conn = await asyncpg.connect(dsn)
    try:
        offset = await conn.fetchval("SELECT byte_offset FROM gate_sink_cursor")
    finally:
        await conn.close()
    assert offset == (tmp_path / "spend.jsonl").stat().st_size


async def test_the_gate_starts_and_serves_without_postgres(start_gate, mock, tmp_path):
    dead = [
        {
            "type": "postgres",
            "dsn": "postgresql://postgres@127.0.0.1:1/none",
            "retry_max_seconds": 0.2,
            "connect_timeout_seconds": 1,
        }
    ]
    client = await start_gate(make_config(tmp_path, mock.base_url, sinks=dead))
    resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 200
    health = await wait_failing(client)
    assert health["status"] == "ok" and "Connect" in health["sinks"][0]["error"]


# --- backfill ----------------------------------------------------------------------


def run_gate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "CI": os.environ.get("CI", "")},
    )


def synthetic_log(path: Path, n: int, day: str = "2026-11-01") -> list[dict[str, Any]]:
    """A log as the gate writes it: holds, requests (some refused), a budget change, a
    torn line in the middle (a crash) and one at the end."""
    out: list[str] = []
    requests: list[dict[str, Any]] = []
    for i in range(n):
        rid = f"req-{i:06d}"
        ts = f"{day}T00:{i // 60 % 60:02d}:{i % 60:02d}.000Z"
        out.append(
            json.dumps(
                {"ts": ts, "event": "hold", "request_id": rid, "agent_id": "a", "held": 0.01},
                separators=(",", ":"),
            )
        )
        line = {
            "request_id": rid,
            "generation_id": f"gen-{i}",
            "agent_id": "ab"[i % 3 == 0],
            "model": "m/x" if i % 4 else "m/z",
            "tier": "premium",
            "models_allowed": ["m/x", "m/y"],
            "stream": i % 2 == 0,
            "status": 200 if i % 7 else 402,
            "prompt_tokens": 10 + i,
            "completion_tokens": i,
            "cost_source": "usage",
            "latency_ms": 12.5,
            "ts": ts,
            "event": "request",
            "cost": 0.000123 * i if i % 7 else 0,
            "budget_remaining": 4.5,
            **({"client_disconnected": True} if i % 50 == 1 else {}),
        }
        requests.append(line)
        out.append(json.dumps(line, separators=(",", ":")))
        if i == n // 2:
            out.append('{"ts":"2026-11-01T10:00:00.000Z","event":"request","request_id":"torn')
            out.append(
                json.dumps(
                    {"ts": ts, "event": "budget", "agent_id": "a", "budget_total": 9},
                    separators=(",", ":"),
                )
            )
    path.write_text("\n".join(out) + '\n{"ts":"2026-11-01T11:00:00Z","event":"req')
    return [json.loads(json.dumps(x), parse_float=Decimal) for x in requests]


async def test_backfill_is_idempotent(tmp_path, database):
    log = tmp_path / "old.jsonl"
    lines = synthetic_log(log, 300)
    raw = raw_config(tmp_path, "http://127.0.0.1:9/api/v1", sinks=sink_cfg(database))
    cfg = write_config(tmp_path / "gate.yaml", raw)

    first = run_gate("sink-backfill", "--config", str(cfg), "--log", str(log))
    assert first.returncode == 0, first.stderr
    assert "301 request lines read, 300 inserted, 0 already there, 1 unreadable" in first.stdout
    again = run_gate("sink-backfill", "--config", str(cfg), "--log", str(log))
    assert again.returncode == 0, again.stderr
    assert "0 inserted, 300 already there" in again.stdout

    got = await rows(_with_database(SERVER, database))
    assert len(got) == 300
    for line in lines:
        assert_row_matches(got[line["request_id"]], line)


async def test_backfill_then_live_copy_of_the_same_log(start_gate, mock, tmp_path, database):
    """Backfilling the live log first, then starting the sink: each row still once."""
    dsn = _with_database(SERVER, database)
    cfg = make_config(tmp_path, mock.base_url, sinks=sink_cfg(database))
    client = await start_gate(make_config(tmp_path, mock.base_url))  # no sink yet
    await burst(client, 5)
    await client.close()
    raw = raw_config(tmp_path, mock.base_url, sinks=sink_cfg(database))
    done = run_gate("sink-backfill", "--config", str(write_config(tmp_path / "g.yaml", raw)))
    assert done.returncode == 0 and "5 inserted" in done.stdout, done.stderr
    client = await start_gate(cfg)
    await burst(client, 2)
    sink = await caught_up(client)
    assert sink.state.rows_present == 5 and sink.state.rows_written == 2
    assert len(await rows(dsn)) == 7


# --- secrets -----------------------------------------------------------------------


async def test_the_dsn_password_shows_nowhere(start_gate, mock, tmp_path, database, caplog):
    canary = "pg-canary-" + secrets.token_hex(8)
    secret_file = tmp_path / "pg.dsn"
    secret_file.write_text(_with_database(SERVER, database, password=canary) + "\n")
    secret_file.chmod(0o600)
    broken = tmp_path / "broken.dsn"  # the same password, a database that is not there
    broken.write_text(_with_database(SERVER, "gate_missing_db", password=canary))
    broken.chmod(0o600)
    sinks = [
        {**sink_cfg(database)[0], "dsn": {"file": str(secret_file)}},
        {**sink_cfg(database)[0], "dsn": {"file": str(broken)}, "table": "other_calls"},
    ]
    raw = raw_config(tmp_path, mock.base_url, sinks=sinks)
    cfg = make_config(tmp_path, mock.base_url, sinks=sinks)
    client = await start_gate(cfg)
    await burst(client, 2)
    gate = client.app[GATE]
    await gate.ledger.spend_log.flush()
    async with asyncio.timeout(10):
        while gate.sinks[0].state.offset != (tmp_path / "spend.jsonl").stat().st_size:
            await asyncio.sleep(0.02)
    health_text = await (await client.get("/api/health")).text()
    assert "failing" in health_text  # the second sink reports its error...
    checked = run_gate("check-config", str(write_config(tmp_path / "gate.yaml", raw)))
    assert checked.returncode == 0 and f"file {secret_file}" in checked.stdout
    await client.close()
    stored = await rows(_with_database(SERVER, database))
    everything = [
        health_text,
        checked.stdout + checked.stderr,
        caplog.text,
        (tmp_path / "spend.jsonl").read_text(),
        json.dumps([dict(r) for r in stored.values()], default=str),
    ]
    for text in everything:
        assert canary not in text  # ...without the password


def test_migration_file_is_what_the_sink_applies() -> None:
    from gate.sinks.sql import migration_sql

    text = (ROOT / "migrations" / "001_tool_calls.sql").read_text()
    assert migration_sql("tool_calls") == text
    assert "CREATE TABLE IF NOT EXISTS calls_b" in migration_sql("calls_b")


async def test_the_readme_sql_answers_the_jq_questions(tmp_path, database):
    """Each SQL recipe in the README runs, and answers what the log says."""
    from datetime import UTC, datetime

    readme = (ROOT / "README.md").read_text()
    block = readme.split("### The `jq` questions, in SQL", 1)[1].split("```sql", 1)[1]
    statements = [q.strip() for q in block.split("```", 1)[0].split(";") if q.strip()]
    assert len(statements) == 5
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = synthetic_log(tmp_path / "log.jsonl", 120, day=today)
    dsn = _with_database(SERVER, database)
    from gate.config import PostgresSinkConfig
    from gate.sinks.postgres import backfill

    await backfill(PostgresSinkConfig(dsn=dsn), [tmp_path / "log.jsonl"])
    conn = await asyncpg.connect(dsn)
    try:
        per_agent, per_model, refused, top, left = [await conn.fetch(q) for q in statements]
    finally:
        await conn.close()

    def total(rows: list[dict[str, Any]]) -> Decimal:
        return sum((Decimal(str(x["cost"])) for x in rows), Decimal(0))

    assert {r["agent"]: (r["usd"], r["requests"]) for r in per_agent} == {
        a: (total(mine), len(mine))
        for a in ("a", "b")
        if (mine := [x for x in lines if x["agent_id"] == a])
    }
    assert {r["model"]: r["usd"] for r in per_model} == {
        m: total([x for x in lines if x["model"] == m]) for m in ("m/x", "m/z")
    }
    assert [r["ts"].isoformat()[:19] for r in refused] == [
        x["ts"][:19] for x in lines if x["status"] != 200 and x["cost"] == 0
    ]
    expected_top = sorted(lines, key=lambda x: -x["cost"])[:10]
    assert [r["cost"] for r in top] == [Decimal(str(x["cost"])) for x in expected_top]
    assert len(left) == sum(1 for x in lines if x.get("client_disconnected"))
