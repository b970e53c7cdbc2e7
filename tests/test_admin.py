"""The admin API and its token rules, against the running gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from gate.context import GATE

from .support import UPSTREAM_KEY, agent, chat, make_config, spend_lines

TOKEN = "adm-" + "7" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def admin_gate(start_gate, mock, tmp_path: Path):
    cfg = make_config(
        tmp_path,
        mock.base_url,
        agents={"agent-1": agent(50), "agent-2": agent(10, period="daily")},
        admin_token=TOKEN,
    )
    return await start_gate(cfg)


async def test_health_needs_no_token(admin_gate) -> None:
    resp = await admin_gate.get("/api/health")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/spend"),
        ("GET", "/api/spend/agent-1"),
        ("POST", "/api/budget/agent-1"),
        ("POST", "/api/reset/agent-1"),
        ("POST", "/api/reload"),
        ("GET", "/metrics"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer "])
async def test_every_admin_route_needs_the_token(admin_gate, method, path, header) -> None:
    headers = {"Authorization": header} if header else {}
    resp = await admin_gate.request(method, path, headers=headers, json={"budget_spent": 0})
    assert resp.status == 401
    body = await resp.json()
    assert body["error"]["code"] == 401 and body["error"]["type"] == "authentication_error"
    assert TOKEN not in await resp.text()


async def test_spend_shape(admin_gate) -> None:
    resp = await admin_gate.get("/api/spend/agent-1", headers=AUTH)
    view = await resp.json()
    assert resp.status == 200
    assert {
        "agent_id",
        "budget_total",
        "budget_spent",
        "budget_remaining",
        "remaining_fraction",
        "period",
        "hard_cap",
        "tier",
        "models_allowed",
    } <= set(view)
    assert view["tier"] == "premium" and view["budget_remaining"] == 50
    everyone = await (await admin_gate.get("/api/spend", headers=AUTH)).json()
    assert set(everyone["agents"]) == {"agent-1", "agent-2"}
    assert everyone["agents"]["agent-1"] == view
    missing = await admin_gate.get("/api/spend/nobody", headers=AUTH)
    assert missing.status == 404


async def test_budget_and_reset_change_state_and_write_lines(admin_gate, tmp_path: Path) -> None:
    resp = await admin_gate.post(
        "/api/budget/agent-1", json={"budget_total": 100, "budget_spent": 75}, headers=AUTH
    )
    view = await resp.json()
    assert resp.status == 200
    assert (view["budget_total"], view["budget_spent"], view["tier"]) == (100, 75, "economy")
    resp = await admin_gate.post("/api/reset/agent-1", headers=AUTH)
    view = await resp.json()
    assert (view["budget_spent"], view["tier"]) == (0, "premium")
    await admin_gate.app[GATE].ledger.spend_log.flush()
    events = [(r["event"], r["agent_id"]) for r in spend_lines(tmp_path / "spend.jsonl")]
    assert events == [("budget", "agent-1"), ("reset", "agent-1")]


@pytest.mark.parametrize(
    "body",
    [{}, {"budget_total": -1}, {"budget_spent": "5"}, {"budget_total": True}, {"other": 1}, [1]],
)
async def test_bad_budget_bodies_are_refused(admin_gate, body) -> None:
    resp = await admin_gate.post("/api/budget/agent-1", json=body, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == 400
    view = await (await admin_gate.get("/api/spend/agent-1", headers=AUTH)).json()
    assert view["budget_total"] == 50 and view["budget_spent"] == 0


async def test_without_a_token_gets_are_open_and_changes_refused(
    start_gate, mock, tmp_path
) -> None:
    client = await start_gate(make_config(tmp_path, mock.base_url))
    assert (await client.get("/api/spend/agent-1")).status == 200
    for path in ("/api/budget/agent-1", "/api/reset/agent-1", "/api/reload"):
        resp = await client.post(path, json={"budget_spent": 0})
        assert resp.status == 403
        assert "GATE_ADMIN_TOKEN" in (await resp.json())["error"]["message"]


async def test_reload_applies_a_good_config_and_refuses_a_bad_one(
    start_gate, mock, tmp_path: Path
) -> None:
    from gate.config import load_config

    from .support import raw_config, write_config

    raw = raw_config(tmp_path, mock.base_url, admin_token=TOKEN)
    path = write_config(tmp_path / "gate.yaml", raw)
    client = await start_gate(load_config(path, {}), env={})
    raw["cost_routing"]["agents"]["agent-1"]["budget_total"] = 10
    raw["cost_routing"]["agents"]["agent-3"] = agent(3)
    write_config(path, raw)
    resp = await client.post("/api/reload", headers=AUTH)
    assert resp.status == 200, await resp.text()
    view = await (await client.get("/api/spend/agent-3", headers=AUTH)).json()
    assert view["budget_total"] == 3
    raw["cost_routing"]["agents"]["agent-1"]["tiers"][0]["threshold"] = 7
    write_config(path, raw)
    resp = await client.post("/api/reload", headers=AUTH)
    assert resp.status == 400
    assert "tiers[0].threshold" in (await resp.json())["error"]["message"]
    view = await (await client.get("/api/spend/agent-1", headers=AUTH)).json()
    assert view["budget_total"] == 10  # the good reload stays in force


async def test_health_reports_a_broken_spend_log_and_refuses_paid_requests(admin_gate) -> None:
    admin_gate.app[GATE].ledger.spend_log.error = "No space left on device"
    health = await admin_gate.get("/api/health")
    assert health.status == 503
    assert await health.json() == {
        **(await health.json()),
        "status": "degraded",
        "spend_log_error": "No space left on device",
    }
    resp = await admin_gate.post(
        "/v1/chat/completions", json=chat(), headers={"X-Agent-ID": "agent-1"}
    )
    assert resp.status == 503
    assert (await resp.json())["error"]["type"] == "spend_log_unavailable"
    assert UPSTREAM_KEY not in await resp.text()
