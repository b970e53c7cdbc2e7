"""Budget refusals an agent can act on: a 402 that says not to retry and when the
budget resets, in words billing classifiers match — read by the official SDK, which
must make exactly one attempt."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from gate.books.ledger import Ledger
from gate.books.spendlog import SpendLog
from gate.core.clock import iso
from gate.core.periods import period_end

from .support import agent, make_config

ADMIN = {"Authorization": "Bearer t0k"}
HELLO = {"model": "openai/gpt-5", "messages": [{"role": "user", "content": "hello"}]}


async def _exhausted_gate(start_gate, mock, tmp_path: Path, period: str) -> Any:
    agents = {"agent-1": agent(50, period=period)}
    client = await start_gate(make_config(tmp_path, mock.base_url, agents, admin_token="t0k"))
    resp = await client.post("/api/budget/agent-1", json={"budget_spent": 50}, headers=ADMIN)
    assert resp.status == 200
    return client


def _request_lines(tmp_path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in (tmp_path / "spend.jsonl").read_text().splitlines()]
    return [x for x in lines if x["event"] == "request"]


@pytest.mark.parametrize("period", ["daily", "weekly", "monthly"])
async def test_a_budget_refusal_says_not_to_retry_and_when_it_resets(
    start_gate, mock, tmp_path: Path, period: str
) -> None:
    client = await _exhausted_gate(start_gate, mock, tmp_path, period)
    before = datetime.now(UTC)
    resp = await client.post("/v1/chat/completions", json=HELLO, headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 402
    assert resp.headers["x-should-retry"] == "false"
    assert "Retry-After" not in resp.headers  # nothing that invites a loop
    error = (await resp.json())["error"]
    assert (error["type"], error["code"]) == ("budget_exhausted", 402)
    assert "budget" in error["message"] and "credits" in error["message"]
    # the period's end: the next UTC boundary after now (checked on both sides of
    # the request, in case it ran across one)
    ends = {iso(period_end(period, t)) for t in (before, datetime.now(UTC))}  # type: ignore[arg-type]
    assert error["resets_at"] in ends
    assert resp.headers["X-Execwall-Budget-Resets-At"] == error["resets_at"]
    assert error["resets_at"] in error["message"]
    assert mock.state.chat_count() == 0


async def test_a_budget_that_never_resets_says_so(start_gate, mock, tmp_path: Path) -> None:
    client = await _exhausted_gate(start_gate, mock, tmp_path, "never")
    resp = await client.post("/v1/chat/completions", json=HELLO, headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 402
    assert resp.headers["x-should-retry"] == "false"
    assert "X-Execwall-Budget-Resets-At" not in resp.headers
    error = (await resp.json())["error"]
    assert error["resets_at"] is None
    assert "does not reset" in error["message"]


async def test_the_openai_sdk_makes_one_attempt_at_a_budget_refusal(
    start_gate, mock, tmp_path: Path
) -> None:
    client = await _exhausted_gate(start_gate, mock, tmp_path, "daily")
    sdk = openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")),
        api_key="x",
        default_headers={"X-Agent-ID": "agent-1"},
        max_retries=5,  # an agent's SDK, retrying what it is told it may
    )
    async with sdk:
        with pytest.raises(openai.APIStatusError) as caught:
            await sdk.chat.completions.create(**HELLO)
    assert caught.value.status_code == 402
    assert isinstance(caught.value.body, dict) and caught.value.body["resets_at"]
    refused = [x for x in _request_lines(tmp_path) if x["status"] == 402]
    assert len(refused) == 1  # one attempt reached the gate
    assert mock.state.chat_count() == 0


def test_the_ledger_knows_when_each_period_resets(tmp_path: Path) -> None:
    now = datetime(2026, 12, 2, 15, 40, tzinfo=UTC)
    agents = {p: agent(1, period=p) for p in ("daily", "weekly", "monthly", "never")}
    cfg = make_config(tmp_path, "http://127.0.0.1:9/api/v1", agents)
    ledger = Ledger(cfg.agents, SpendLog(tmp_path / "s.jsonl"), lambda: now)
    assert ledger.resets_at("daily") == "2026-12-03T00:00:00.000Z"
    assert ledger.resets_at("weekly") == iso(now.replace(hour=0, minute=0) + timedelta(days=5))
    assert ledger.resets_at("monthly") == "2027-01-01T00:00:00.000Z"
    assert ledger.resets_at("never") is None
    assert ledger.resets_at("nobody") is None
