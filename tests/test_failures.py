"""Failure scenarios in-process: an upstream that hangs or goes silent, a full disk under
the spend log, a reload while streams run. Each ends by balancing the books: the request
lines add up to what upstream charged, no hold is left open, no agent is over its cap."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gate.books.logscan import read_records
from gate.config import GateConfig, load_config
from gate.context import GATE
from mock_upstream import Fault

from .support import (
    agent,
    chat,
    make_config,
    raw_config,
    spend_lines,
    sse_data,
    write_config,
)

CHAT = "/v1/chat/completions"
AGENT_1 = {"X-Agent-ID": "agent-1"}
TOKEN = "failures-admin-token"
IDLE_TIMEOUT = 1.0  # openrouter.timeout_seconds: the silence the gate allows upstream
OPENING = b": OPENROUTER PROCESSING\n\n"


def failures_config(tmp_path: Path, mock: Any, max_retries: int = 3) -> GateConfig:
    return make_config(
        tmp_path,
        mock.base_url,
        agents={"agent-1": agent(50), "agent-2": agent(10)},
        openrouter={"timeout_seconds": IDLE_TIMEOUT},
        # Room for /generation's first 404s while upstream notices the gate has gone.
        retry={"max_retries": max_retries, "backoff_seconds": 0.05, "max_backoff_seconds": 0.2},
    )


async def balanced_books(client: Any, mock: Any, log: Path) -> list[dict[str, Any]]:
    """Wait for every request to settle and its lines to reach the log; check the
    invariants every scenario ends with; return the request lines."""
    gate = client.app[GATE]
    await asyncio.wait_for(gate.ledger.all_settled(), 30)
    await gate.ledger.spend_log.flush()
    assert gate.ledger.spend_log.error is None
    records = spend_lines(log)  # raises if any line were torn or glued to another
    requests = [r for r in records if r["event"] == "request"]
    holds = [r for r in records if r["event"] == "hold"]
    # The books are what upstream charged, to the last digit.
    assert sum((r["cost"] for r in requests), Decimal(0)) == mock.state.total_charged()
    # No hold left open: every hold has exactly one request line, and no line is twice.
    per_request = Counter(r["request_id"] for r in requests)
    assert set(per_request.values()) <= {1}
    assert {h["request_id"] for h in holds} <= set(per_request)
    assert not gate.ledger.open_holds()
    largest_hold = max((h["held"] for h in holds), default=Decimal(0))
    for agent_id in gate.ledger.agent_ids():
        account = gate.ledger.account(agent_id)
        spent = sum((r["cost"] for r in requests if r["agent_id"] == agent_id), Decimal(0))
        assert account.held == 0
        assert account.spent == spent
        assert spent <= account.budget_total + largest_hold  # over the cap by one hold at most
    return requests


async def post_stream(client: Any, **fields: Any) -> tuple[Any, bytes]:
    resp = await client.post(CHAT, json=chat(stream=True, **fields), headers=AGENT_1)
    return resp, await resp.read()


# --- 1. an upstream that hangs or goes silent -----------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_upstream_that_never_answers_gets_a_gateway_timeout(
    start_gate, mock, tmp_path: Path, stream: bool
) -> None:
    client = await start_gate(failures_config(tmp_path, mock, max_retries=1))
    mock.state.faults.extend([Fault(hang=60), Fault(hang=60)])
    async with asyncio.timeout(15):  # bounded: one idle timeout
        resp = await client.post(CHAT, json=chat(stream=stream), headers=AGENT_1)
        body = await resp.json()
    assert resp.status == 504
    assert body["error"]["code"] == 504 and body["error"]["type"] == "upstream_error"
    # Not retried: the body may have reached upstream, and a second POST could be
    # billed twice. Only a connection that was never made is tried again.
    assert mock.state.chat_count() == 1
    [line] = await balanced_books(client, mock, tmp_path / "spend.jsonl")
    assert (line["status"], line["cost"], line["cost_source"]) == (504, 0, "none")
    assert line["stream"] is stream


SILENCES = {
    # Upstream answers 200 and its opening comment, then nothing: no content chunk yet,
    # so the gate knows the generation only from the X-Generation-Id header.
    "before_any_chunk": (Fault(chunks=3, first_delay=60), 0),
    # Two content chunks, then nothing.
    "after_two_chunks": (Fault(chunks=4, stall_after=2, stall=60), 2),
}


@pytest.mark.parametrize(("fault", "sent"), SILENCES.values(), ids=SILENCES.keys())
async def test_upstream_silent_mid_stream_ends_the_stream_with_an_error_event(
    start_gate, mock, tmp_path: Path, fault: Fault, sent: int
) -> None:
    client = await start_gate(failures_config(tmp_path, mock))
    mock.state.faults.append(fault)
    async with asyncio.timeout(15):  # never a hang
        resp, raw = await post_stream(client)
    assert resp.status == 200  # the stream had started
    assert raw.startswith(OPENING)
    data = sse_data(raw)
    assert "[DONE]" not in data
    *content, last = (json.loads(d) for d in data)
    assert len(content) == sent
    assert last["error"]["code"] == 504 and last["error"]["type"] == "upstream_error"

    [line] = await balanced_books(client, mock, tmp_path / "spend.jsonl")
    [record] = mock.state.generations.values()
    assert record["cancelled"] is True and record["tokens_completion"] == sent
    assert line["generation_id"] == record["id"]
    assert line["cost"] == record["total_cost"] > 0
    assert (line["status"], line["cost_source"]) == (504, "generation")


KEEPALIVES = {
    "before_any_chunk": Fault(chunks=3, first_delay=2.5, keepalive=0.2),
    "after_two_chunks": Fault(chunks=4, stall_after=2, stall=2.5, keepalive=0.2),
}


@pytest.mark.parametrize("fault", KEEPALIVES.values(), ids=KEEPALIVES.keys())
async def test_keepalive_comments_keep_a_quiet_stream_open(
    start_gate, mock, tmp_path: Path, fault: Fault
) -> None:
    # 2.5 s without content is well past the gate's idle timeout, but a keep-alive
    # comment arrives every 0.2 s: the stream is slow, not dead.
    client = await start_gate(failures_config(tmp_path, mock))
    mock.state.faults.append(fault)
    async with asyncio.timeout(15):
        resp, raw = await post_stream(client)
    assert resp.status == 200
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    assert not [d for d in data[:-1] if "error" in json.loads(d)]
    assert raw.count(OPENING) >= 1 + 12  # the opening comment and the keep-alives, relayed

    [line] = await balanced_books(client, mock, tmp_path / "spend.jsonl")
    [record] = mock.state.generations.values()
    assert record["cancelled"] is False and record["tokens_completion"] == fault.chunks
    assert line["cost"] == record["total_cost"] > 0
    assert (line["status"], line["cost_source"]) == (200, "usage")


# --- 2. the spend log's disk fills up, then comes back ----------------------------------


def test_replay_reads_no_further_than_the_file_was_long(tmp_path: Path) -> None:
    """Replay stops at the size the log had when opened: a device in the log's place
    (`/dev/full` reads as endless zeros, size 0) replays as empty, not forever."""
    log = tmp_path / "spend.jsonl"
    log.write_text('{"n":1}\n{"n":2}\n')
    records = read_records(log)
    assert next(records) == {"n": 1}  # opened, its size taken
    with log.open("a") as f:
        f.write('{"n":3}\n')
    assert list(records) == [{"n": 2}]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_full_disk_refuses_paid_requests_then_recovers_by_itself(
    start_gate, mock, tmp_path: Path
) -> None:
    link = tmp_path / "spend.jsonl"
    link.symlink_to("/dev/full")  # every write: ENOSPC
    client = await start_gate(failures_config(tmp_path, mock))

    refused = []
    for stream in (False, True, False, True):
        resp = await client.post(CHAT, json=chat(stream=stream), headers=AGENT_1)
        refused.append(resp.status)
        body = await resp.json()
        assert resp.status == 503, body
        assert body["error"] == {**body["error"], "code": 503, "type": "spend_log_unavailable"}
        assert "Retry-After" in resp.headers
    assert mock.state.chat_count() == 0  # no money spent that could not be recorded
    health = await client.get("/api/health")
    report = await health.json()
    assert health.status == 503 and report["status"] == "degraded"
    assert "space" in report["spend_log_error"].lower()

    # The disk comes back: the path now leads to a real file. Nobody restarts the gate.
    real = tmp_path / "real.jsonl"
    link.unlink()
    link.symlink_to(real)
    for _ in range(100):  # the writer retries its pending lines with backoff <= 1 s
        health = await client.get("/api/health")
        if health.status == 200:
            break
        await asyncio.sleep(0.05)
    report = await health.json()
    assert health.status == 200 and report["status"] == "ok"
    assert "spend_log_error" not in report

    resp = await client.post(CHAT, json=chat(), headers=AGENT_1)
    assert resp.status == 200, await resp.text()
    await resp.read()

    lines = await balanced_books(client, mock, link)
    raw = real.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == len(spend_lines(real))
    refusals = [r for r in lines if r["status"] == 503]
    assert len(refusals) == len(refused)  # each written once, none lost
    assert len({r["request_id"] for r in refusals}) == len(refused)
    assert all(r["cost"] == 0 and r["cost_source"] == "none" for r in refusals)
    assert [r["status"] for r in lines] == [503] * len(refused) + [200]
    holds = [r for r in spend_lines(real) if r["event"] == "hold"]
    assert {h["request_id"] for h in holds} == {lines[-1]["request_id"]}


# --- 3. a reload while streams are running ------------------------------------------------


async def test_reload_mid_stream_lets_every_stream_finish_and_be_billed(
    start_gate, mock, tmp_path: Path
) -> None:
    raw_cfg = raw_config(
        tmp_path,
        mock.base_url,
        agents={"agent-1": agent(50), "agent-2": agent(10)},
        admin_token=TOKEN,
    )
    path = write_config(tmp_path / "gate.yaml", raw_cfg)
    client = await start_gate(load_config(path, {}), env={})
    streams = 6
    mock.state.faults.extend(Fault(chunks=30, chunk_delay=0.1) for _ in range(streams))

    async def begin() -> tuple[Any, bytes]:
        resp = await client.post(
            CHAT,
            json=chat(stream=True, stream_options={"include_usage": True}),
            headers=AGENT_1,
        )
        assert resp.status == 200
        seen = b""
        while b'"content":"' not in seen:
            seen += await resp.content.readany()
        return resp, seen

    begun = await asyncio.gather(*(begin() for _ in range(streams)))
    raw_cfg["cost_routing"]["agents"]["agent-2"]["budget_total"] = 20
    raw_cfg["cost_routing"]["agents"]["agent-1"]["budget_total"] = 60
    raw_cfg["cost_routing"]["agents"]["agent-3"] = agent(3)
    write_config(path, raw_cfg)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reloaded = await client.post("/api/reload", headers=auth)
    assert reloaded.status == 200, await reloaded.text()
    gate = client.app[GATE]
    assert len(gate.ledger.open_holds()) == streams  # the reload landed mid-stream
    view = await (await client.get("/api/spend/agent-1", headers=auth)).json()
    assert view["budget_total"] == 60 and view["budget_held"] > 0
    other = await (await client.get("/api/spend/agent-2", headers=auth)).json()
    assert other["budget_total"] == 20

    async def finish(resp: Any, seen: bytes) -> list[str]:
        return sse_data(seen + await resp.read())

    async with asyncio.timeout(30):
        answers = await asyncio.gather(*(finish(resp, seen) for resp, seen in begun))
    for data in answers:
        assert data[-1] == "[DONE]"
        usage_chunk = json.loads(data[-2])
        assert usage_chunk["choices"] == [] and usage_chunk["_execwall"]["tier"] == "premium"
        assert not [d for d in data[:-1] if "error" in json.loads(d)]

    lines = await balanced_books(client, mock, tmp_path / "spend.jsonl")
    assert len(lines) == streams
    for line in lines:
        record = mock.state.generations[line["generation_id"]]
        assert line["cost"] == record["total_cost"] > 0
        assert (line["status"], line["cost_source"]) == (200, "usage")
        assert record["tokens_completion"] == 30
    view = await (await client.get("/api/spend/agent-1", headers=auth)).json()
    assert view["budget_total"] == 60 and view["budget_held"] == 0
    assert Decimal(str(view["budget_spent"])) == mock.state.total_charged()
