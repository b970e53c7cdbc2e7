"""Issue 12 #11: refusals of requests no known agent was authenticated for (400 bad
X-Agent-ID, 403 unknown agent, 401 wrong or missing key) are counted into one
`refusals` line per interval and at a graceful stop, not a line each; every request of a
known, authenticated agent still writes its own line. Readers of the log ignore it."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from gate.books import refusals
from gate.books.ledger import Ledger
from gate.books.logscan import read_records
from gate.books.logtail import request_record
from gate.books.spendlog import SpendLog
from gate.cli import report
from gate.config import parse_config
from gate.context import GATE
from gate.core.clock import utc_now

from .support import agent, chat, raw_config, spend_lines

CHAT = "/v1/chat/completions"
KEY = "agent-1-key-for-refusals-test"
AGENT_1 = {"X-Agent-ID": "agent-1", "Authorization": f"Bearer {KEY}"}


def keyed_config(tmp_path: Path, base_url: str) -> Any:
    agents = {"agent-1": agent(api_key=KEY), "tiny": agent(0.000001, api_key=KEY + "-tiny")}
    raw = raw_config(tmp_path, base_url, agents, limits={"max_body_bytes": 4096})
    return parse_config(raw, {}, tmp_path)


async def lines_now(client: Any) -> list[dict[str, Any]]:
    spend_log = client.app[GATE].ledger.spend_log
    await spend_log.flush()
    return spend_lines(spend_log.path) if spend_log.path.exists() else []


async def test_unauthenticated_refusals_are_counted_not_written_one_by_one(
    start_gate, mock, tmp_path: Path
) -> None:
    client = await start_gate(keyed_config(tmp_path, mock.base_url))
    wrong_key = {"X-Agent-ID": "agent-1", "Authorization": "Bearer nope"}
    for _ in range(300):  # one keep-alive connection, as fast as the gate answers
        assert (await client.post(CHAT, json=chat(), headers=wrong_key)).status == 401
    for _ in range(100):
        resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"})
        assert resp.status == 401
    for i in range(50):  # more distinct claimed ids than a line names
        resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": f"ghost-{i}"})
        assert resp.status == 403
    for _ in range(20):
        resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "bad id!"})
        assert resp.status == 400
    # A known, authenticated agent's requests and refusals: a line each.
    assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 200
    bad_body = {**AGENT_1, "Content-Type": "application/json"}
    assert (await client.post(CHAT, data=b"[]", headers=bad_body)).status == 400
    assert (await client.post(CHAT, json=chat("x" * 5000), headers=AGENT_1)).status == 413
    tiny = {"X-Agent-ID": "tiny", "Authorization": f"Bearer {KEY}-tiny"}
    assert (await client.post(CHAT, json=chat(), headers=tiny)).status == 402
    during = await lines_now(client)
    assert not [r for r in during if r["event"] == "refusals"]  # not before the interval
    statuses = [r["status"] for r in during if r["event"] == "request"]
    assert statuses == [200, 400, 413, 402], statuses
    assert mock.state.chat_count() == 1
    path = client.app[GATE].ledger.spend_log.path
    await client.close()  # a graceful stop writes what was counted
    after = spend_lines(path)
    counted = [r for r in after if r["event"] == "refusals"]
    assert len(counted) == 1, counted
    line = counted[0]
    assert line["count"] == 470
    assert {(x["status"], x["reason"]): x["count"] for x in line["reasons"]} == {
        (400, "invalid X-Agent-ID"): 20,
        (401, "invalid or missing agent key"): 400,
        (403, "agent not configured"): 50,
    }
    assert len(line["agent_ids"]) == refusals.MAX_AGENT_IDS
    assert line["agent_ids"]["agent-1"] == 400
    assert sum(line["agent_ids"].values()) + line["agent_ids_omitted"] == 450
    assert line["since"] <= line["ts"]
    assert len(after) < 12  # 470 refusals, 4 real requests: a handful of lines


async def test_the_refusals_line_is_written_every_interval(
    start_gate, mock, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(refusals, "INTERVAL_SECONDS", 0.1)
    client = await start_gate(keyed_config(tmp_path, mock.base_url))
    for _ in range(5):
        assert (await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "x"})).status == 403
    async with asyncio.timeout(10):
        while not [r for r in await lines_now(client) if r["event"] == "refusals"]:
            await asyncio.sleep(0.05)
    (line,) = [r for r in await lines_now(client) if r["event"] == "refusals"]
    assert line["count"] == 5 and line["agent_ids"] == {"x": 5}
    await client.close()
    path = tmp_path / "spend.jsonl"
    assert len([r for r in spend_lines(path) if r["event"] == "refusals"]) == 1  # none empty


def test_readers_of_the_log_ignore_the_refusals_line(tmp_path: Path) -> None:
    tally = refusals.RefusalTally()
    tally.add("2026-11-02T10:00:00.000Z", 401, "invalid or missing agent key", "agent-1")
    counted = tally.take("2026-11-02T10:01:00.000Z")
    assert counted is not None and tally.take("x") is None
    request = {
        "ts": "2026-11-02T10:00:30.000Z",
        "event": "request",
        "request_id": "r1",
        "agent_id": "agent-1",
        "model": "m/x",
        "tier": "premium",
        "status": 200,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "cost": 0.25,
    }
    path = tmp_path / "spend.jsonl"
    rows = (counted, request, counted)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
    # `python -m gate report`
    groups = report.summarise(report.request_lines([path], None, None), "agent")
    assert {k: (t.requests, t.usd) for k, t in groups.items()} == {"agent-1": (1, Decimal("0.25"))}
    # the Postgres sink's reader
    raw = path.read_bytes().splitlines()
    assert [request_record(x) is not None for x in raw] == [False, True, False]
    # the ledger's replay
    agents = {"agent-1": agent(period="never")}
    cfg = parse_config(raw_config(tmp_path, "http://127.0.0.1:9/api/v1", agents), {}, tmp_path)
    ledger = Ledger(cfg.agents, SpendLog(tmp_path / "other.jsonl"), utc_now)
    assert ledger.replay(read_records(path)) == 3
    view = ledger.view("agent-1")
    assert view is not None and Decimal(str(view["budget_spent"])) == Decimal("0.25")
