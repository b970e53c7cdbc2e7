"""Upstream slots: the global in-flight cap holds under a burst, and one agent's share
cannot starve the others (finding 8 of issue 12)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from gate.context import GATE
from mock_upstream import Fault

from .support import agent, chat, make_config, request_lines

CHAT = "/v1/chat/completions"


def _error_type(text: str) -> str:
    body = json.loads(text)
    assert set(body["error"]) >= {"message", "type", "code"}
    return str(body["error"]["type"])


async def _post(client: Any, agent_id: str) -> tuple[int, str, dict[str, str]]:
    resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": agent_id})
    return resp.status, await resp.text(), dict(resp.headers)


async def test_a_burst_puts_no_more_than_the_cap_in_flight(
    start_gate, mock, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, mock.base_url, limits={"max_concurrent_upstream": 5})
    client = await start_gate(cfg)
    mock.state.faults.extend(Fault(first_delay=1.0) for _ in range(40))
    async with asyncio.timeout(20):
        answers = await asyncio.gather(*(_post(client, "agent-1") for _ in range(40)))
    statuses = sorted(status for status, _, _ in answers)
    assert mock.state.chat_count() == 5, statuses  # counted where it matters: upstream
    assert statuses == [200] * 5 + [503] * 35
    for status, text, headers in answers:
        if status == 503:
            assert _error_type(text) == "overloaded" and headers["Retry-After"] == "1"
    assert client.app[GATE].slots.total == 0  # every slot came back
    mock.state.faults.clear()
    again = await asyncio.gather(*(_post(client, "agent-1") for _ in range(5)))
    assert [status for status, _, _ in again] == [200] * 5


async def test_one_agent_cannot_take_every_slot(start_gate, mock, tmp_path: Path) -> None:
    agents = {"agent-1": agent(), "default": agent(5), "greedy": agent(5, max_concurrent=2)}
    cfg = make_config(
        tmp_path,
        mock.base_url,
        agents,
        limits={"max_concurrent_upstream": 10, "max_concurrent_per_agent": 3},
    )
    client = await start_gate(cfg)
    mock.state.faults.extend(Fault(first_delay=1.5) for _ in range(5))
    async with asyncio.timeout(20):
        hogs = [asyncio.create_task(_post(client, "agent-1")) for _ in range(3)]
        greedy = [asyncio.create_task(_post(client, "greedy")) for _ in range(2)]
        while mock.state.chat_count() < 5:
            await asyncio.sleep(0.01)
        # agent-1 holds its default share (3), greedy its own limit (2): both refused more
        status, text, headers = await _post(client, "agent-1")
        assert status == 429, text
        assert _error_type(text) == "rate_limit_exceeded" and headers["Retry-After"] == "1"
        status, text, _ = await _post(client, "greedy")
        assert status == 429, text
        # ... while another agent is still served at once
        status, text, _ = await _post(client, "default")
        assert status == 200, text
        for task in hogs + greedy:
            assert (await task)[0] == 200
    refused = [r for r in request_lines(tmp_path / "spend.jsonl") if r["status"] == 429]
    assert sorted(r["agent_id"] for r in refused) == ["agent-1", "greedy"]
    status, _, _ = await _post(client, "agent-1")  # its share is free again
    assert status == 200


async def test_every_refusal_after_the_check_gives_its_slot_back(
    start_gate, mock, tmp_path: Path, monkeypatch: Any
) -> None:
    """A store refusing one request's amounts (a Redis integer overflow) is that request's
    400; its slot must come back, or an agent would lock itself out after 64 of them."""
    from gate.books.redis_store import SpendStoreRefused

    client = await start_gate(make_config(tmp_path, mock.base_url))
    gate = client.app[GATE]

    async def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise SpendStoreRefused("amount out of range for the shared store")

    monkeypatch.setattr(gate.ledger, "reserve", refused)
    for _ in range(3):
        resp = await client.post(
            "/v1/chat/completions", json=chat(), headers={"X-Agent-ID": "agent-1"}
        )
        assert resp.status == 400
    assert gate.slots.total == 0
    assert gate.slots.by_agent.get("agent-1", 0) == 0
