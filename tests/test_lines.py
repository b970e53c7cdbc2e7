"""The spend-log line is defined once (`gate.books.lines`): every line a running gate
writes — holds, send marks, requests (paid, streamed, refused), budgets, resets, tasks,
refusals counted, snapshots — has exactly the fields its record names, so a field
written anywhere without being defined there fails here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gate.books.lines import RECORDS, event_of
from gate.config import load_config
from gate.context import GATE

from .support import agent, chat, raw_config, spend_lines, write_config

TOKEN = "adm-lines-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
CHAT = "/v1/chat/completions"
# on every request line (SPEC's fields)
WRITTEN = {"ts", "event", "cost", "cost_source", "budget_remaining", "latency_ms"}


def conforms(line: dict[str, Any]) -> str | None:
    """Why `line` does not match its record, or None."""
    kind = event_of(line)
    if kind is None:
        return f"unknown event {line.get('event')!r}"
    record = RECORDS[kind]
    required: frozenset[str] = record.__required_keys__  # type: ignore[attr-defined]
    optional: frozenset[str] = record.__optional_keys__  # type: ignore[attr-defined]
    if missing := required - set(line):
        return f"{kind} line lacks {sorted(missing)}"
    if extra := set(line) - required - optional:
        return f"{kind} line carries fields its record does not define: {sorted(extra)}"
    if kind == "request" and (unwritten := WRITTEN - set(line)):
        return f"request line lacks {sorted(unwritten)}"
    return None


async def test_every_line_a_gate_writes_matches_its_record(
    start_gate, mock, tmp_path: Path
) -> None:
    agents = {"agent-1": agent(), "broke": agent(0), "default": agent(5)}
    raw = raw_config(tmp_path, mock.base_url, agents, admin_token=TOKEN)
    client = await start_gate(load_config(write_config(tmp_path / "g.yaml", raw), {}), env={})
    me = {"X-Agent-ID": "agent-1"}
    assert (await client.post(CHAT, json=chat(), headers=me)).status == 200
    streamed = await client.post(CHAT, json=chat(stream=True), headers=me)
    assert streamed.status == 200
    await streamed.read()
    assert (await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "broke"})).status == 402
    assert (await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "nobody"})).status == 403
    bad = {**me, "Content-Type": "application/json"}
    assert (await client.post(CHAT, data=b"{", headers=bad)).status == 400
    budget = {"budget_total": 40}
    assert (await client.post("/api/budget/agent-1", json=budget, headers=ADMIN)).status == 200
    assert (await client.post("/api/reset/agent-1", headers=ADMIN)).status == 200
    made = await client.post("/api/tasks", json={"agent_id": "agent-1", "cap": 1}, headers=ADMIN)
    assert made.status == 201, await made.text()
    task = await made.json()
    with_task = {"Authorization": f"Bearer {task['key']}"}
    assert (await client.post(CHAT, json=chat(), headers=with_task)).status == 200
    closed = await client.post(f"/api/tasks/{task['task_id']}/close", headers=ADMIN)
    assert closed.status == 200
    ledger = client.app[GATE].ledger
    ledger.refusals.flush()
    ledger.write_snapshot()
    await ledger.spend_log.flush()

    lines = spend_lines(tmp_path / "spend.jsonl")
    kinds = {line["event"] for line in lines}
    assert kinds == set(RECORDS), f"not every kind was written: {set(RECORDS) - kinds}"
    problems = [(p, json.dumps(line, default=str)) for line in lines if (p := conforms(line))]
    assert problems == []


def test_a_field_outside_the_record_is_caught() -> None:
    """The check above is not vacuous."""
    line = {
        "ts": "t", "event": "reset", "agent_id": "a", "reason": "admin", "why": "extra",
    }  # fmt: skip
    assert conforms(line) == "reset line carries fields its record does not define: ['why']"
    sent = {"ts": "t", "event": "sent", "request_id": "r"}
    assert conforms(sent) == "sent line lacks ['agent_id']"
    assert conforms({"event": "mystery"}) == "unknown event 'mystery'"
