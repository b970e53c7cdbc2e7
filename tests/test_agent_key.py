"""`GET /api/v1/key` answers the calling agent with its own budget in OpenRouter's shape,
never the gate's real key: a tool written for OpenRouter sees the agent's balance."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from .test_security import AGENT_1, KEY_1, TOKEN, locked_gate

HELLO = {"model": "openai/gpt-5", "messages": [{"role": "user", "content": "hello"}]}


@pytest.mark.parametrize("path", ["/api/v1/key", "/v1/key", "/api/v1/auth/key"])
async def test_the_key_endpoint_shows_the_agents_own_budget(
    start_gate, mock, tmp_path: Path, path: str
) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    resp = await client.post("/v1/chat/completions", json=HELLO, headers=AGENT_1)
    cost = Decimal(str((await resp.json())["_execwall"]["cost"]))
    resp = await client.post(
        "/api/budget/agent-1",
        json={"budget_spent": 20},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert resp.status == 200
    log = tmp_path / "openrouter_requests.log"
    key_calls_before = log.read_text().count('/key"')
    resp = await client.get(path, headers=AGENT_1)
    assert resp.status == 200
    data = (await resp.json())["data"]
    assert data["limit"] == 50
    assert data["usage"] == 20
    assert data["limit_remaining"] == 30
    assert data["limit_reset"] == "monthly"
    assert data["usage_monthly"] == 20
    assert data["execwall"]["tier"] == "mid"
    assert data["execwall"]["agent_id"] == "agent-1"
    assert data["is_free_tier"] is False
    assert cost > 0
    # upstream's own /key was not asked for this, and its numbers are not shown
    assert mock.state.key_limit != data["limit"]
    assert KEY_1 not in str(data) and "sk-or" not in str(data)
    assert log.read_text().count('/key"') == key_calls_before


async def test_the_key_endpoint_follows_the_agent_rules(start_gate, mock, tmp_path: Path) -> None:
    client = await locked_gate(start_gate, mock, tmp_path)
    resp = await client.get("/api/v1/key", headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 401
    resp = await client.get("/api/v1/key", headers={"X-Agent-ID": "nobody"})
    assert resp.status == 403
    resp = await client.get(
        "/api/v1/key", headers={"X-Agent-ID": "agent-1", "Authorization": f"Bearer {TOKEN}"}
    )
    assert resp.status == 401  # the admin token is no agent key
