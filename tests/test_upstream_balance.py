"""GET /api/upstream (OpenRouter's key status, cached), the credit floor in /api/health,
and GET /api/prices."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from gate.ops.wiring import OPS
from gate.upstream.balance import parse_key

from .support import agent, chat, load_prices, make_config

TOKEN = "balance-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def config(tmp_path: Path, mock: Any, **openrouter: Any) -> Any:
    agents = {"agent-1": agent(50)}
    agents["agent-1"]["tiers"][2]["models"].append("x-ai/grok-4")  # upstream has no price
    return make_config(tmp_path, mock.base_url, agents, admin_token=TOKEN, openrouter=openrouter)


async def upstream(client: Any) -> dict[str, Any]:
    resp = await client.get("/api/upstream", headers=ADMIN)
    assert resp.status == 200
    return await resp.json()


async def test_key_status_is_cached_and_the_floor_warns(start_gate, mock, tmp_path) -> None:
    client = await start_gate(config(tmp_path, mock, credit_floor_usd=5))
    first = await upstream(client)
    assert first["key"] == {"limit": 100, "usage": 0, "remaining": 100, "is_free_tier": False}
    assert (first["credit_floor_usd"], first["credit_low"], first["error"]) == (5, False, None)
    assert first["refresh_seconds"] == 300

    resp = await client.post("/v1/chat/completions", json=chat(), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 200
    charged = mock.state.total_charged()
    assert (await upstream(client))["key"]["usage"] == 0  # served from the cache
    balance = client.app[OPS].balance
    assert await balance.refresh()
    fresh = await upstream(client)
    assert Decimal(str(fresh["key"]["usage"])) == charged
    assert Decimal(str(fresh["key"]["remaining"])) == 100 - charged

    report = await (await client.get("/api/health")).json()
    assert report["upstream_credit"]["low"] is False
    assert "warnings" not in report
    mock.state.key_limit = 2.0  # someone lowered the key's limit at OpenRouter
    assert await balance.refresh()
    report = await (await client.get("/api/health")).json()
    assert report["status"] == "ok"
    assert report["upstream_credit"]["low"] is True
    assert report["upstream_credit"]["floor"] == 5
    assert report["warnings"] == [
        f"OpenRouter credit left ${2 - charged:,.2f} is below the floor $5.00"
    ]


async def test_without_a_floor_or_a_key_of_its_own(start_gate, mock, tmp_path) -> None:
    client = await start_gate(config(tmp_path, mock))
    assert "upstream_credit" not in await (await client.get("/api/health")).json()
    await client.close()
    passthrough = make_config(
        tmp_path, mock.base_url, admin_token=TOKEN, openrouter={"api_key": ""}
    )
    client = await start_gate(passthrough)
    body = await upstream(client)
    assert body["key"] is None and "pass-through" in body["error"]


def test_parse_key() -> None:
    assert parse_key({"data": {"limit": None, "usage": 3.5}}) == {
        "limit": None,
        "usage": Decimal("3.5"),
        "remaining": None,
        "is_free_tier": False,
    }
    assert parse_key({"data": {"limit": 10, "usage": 4}})["remaining"] == 6
    assert parse_key({"error": {"code": 401}}) is None


async def test_prices_per_million_and_per_token(start_gate, mock, tmp_path) -> None:
    client = await start_gate(config(tmp_path, mock))
    await load_prices(client)
    resp = await client.get("/api/prices", headers=ADMIN)
    assert resp.status == 200
    body = await resp.json()
    assert body["loaded"] is True
    assert body["tier_models"]["openai/gpt-5"] == {
        "prompt_usd_per_million": 1.25,
        "completion_usd_per_million": 10,
        "request_usd": 0,
        "prompt_usd_per_token": "0.00000125",
        "completion_usd_per_token": "0.00001",
    }
    assert body["tier_models"]["x-ai/grok-4"] is None  # held at the unknown-model price
    assert body["unknown_model"] == {"usd_per_million": 50, "usd_per_token": "0.00005"}
    assert "openai/gpt-4o" in body["models"] and "openai/gpt-4o" not in body["tier_models"]
    assert len(body["tier_models"]) == 10


async def test_both_follow_the_admin_get_rules(start_gate, mock, tmp_path) -> None:
    client = await start_gate(config(tmp_path, mock))
    for path in ("/api/upstream", "/api/prices"):
        assert (await client.get(path)).status == 401
        assert (await client.get(path, headers=ADMIN)).status == 200
