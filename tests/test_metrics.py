"""GET /metrics, parsed with prometheus-client's own parser and checked against /api/spend."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gate.context import GATE
from mock_upstream import Fault

from .support import ECONOMY, MID, PREMIUM, Settlements, agent, chat, make_config

CHAT = "/v1/chat/completions"
TOKEN = "metrics-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
Samples = list[tuple[str, dict[str, str], float]]


async def scrape(client: Any) -> tuple[Samples, dict[str, str]]:
    """Every sample as (name, labels, value), and each family's type."""
    resp = await client.get("/metrics", headers=ADMIN)
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    samples: Samples = []
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(await resp.text()):
        types[family.name] = family.type
        samples += [(s.name, s.labels, s.value) for s in family.samples]
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == name and lab == labels]
    assert len(found) == 1, (name, labels, [(n, lab) for n, lab, _ in samples if n == name])
    return found[0]


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every sample of `name` whose labels include `labels`."""
    return sum(v for n, lab, v in samples if n == name and labels.items() <= lab.items())


async def test_metrics_agree_with_the_admin_api(start_gate, mock, tmp_path: Path) -> None:
    agents = {"agent-1": agent(50), "agent-2": agent(0)}  # agent-2: nothing to spend
    client = await start_gate(make_config(tmp_path, mock.base_url, agents, admin_token=TOKEN))
    settled = Settlements(client)
    one, two = {"X-Agent-ID": "agent-1"}, {"X-Agent-ID": "agent-2"}

    assert (await client.post(CHAT, json=chat(model="openai/gpt-5"), headers=one)).status == 200
    mock.state.faults.append(Fault(status=429))  # retried once, then answered
    assert (await client.post(CHAT, json=chat(), headers=one)).status == 200
    mock.state.faults.append(Fault(answer_model="openai/gpt-4o"))  # not in any tier
    assert (await client.post(CHAT, json=chat(), headers=one)).status == 200
    resp = await client.post(CHAT, json=chat(stream=True), headers=one)
    assert resp.status == 200
    await resp.read()
    # one stranger (its id must never become a label) and one refusal at the cap
    assert (await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "intruder"})).status == 403
    await client.post(CHAT, json=chat(), headers=two)
    await client.post(CHAT, json=chat(), headers=two)
    await settled.wait(4)
    spend_log = client.app[GATE].ledger.spend_log
    await spend_log.flush()  # every line written: the line counter holds still

    samples, types = await scrape(client)
    spend = (await (await client.get("/api/spend", headers=ADMIN)).json())["agents"]

    # budgets, straight from the ledger at scrape time
    for agent_id, view in spend.items():
        assert value(samples, "gate_budget_total_usd", agent=agent_id) == view["budget_total"]
        assert value(samples, "gate_budget_spent_usd", agent=agent_id) == view["budget_spent"]
        remaining = value(samples, "gate_budget_remaining_usd", agent=agent_id)
        assert remaining == view["budget_remaining"]
        fraction = value(samples, "gate_budget_remaining_fraction", agent=agent_id)
        assert fraction == view["remaining_fraction"]
        assert value(samples, "gate_budget_held_usd", agent=agent_id) == view["budget_held"]
    # what was charged, by model, adds up to what the ledger says was spent
    charged = total(samples, "gate_spend_usd_total", agent="agent-1")
    assert math.isclose(charged, spend["agent-1"]["budget_spent"], rel_tol=1e-9)
    assert value(samples, "gate_spend_usd_total", agent="agent-1", model="openai/gpt-5") > 0
    assert value(samples, "gate_spend_usd_total", agent="agent-1", model="_other") > 0

    # requests by agent, tier, model and status
    ok = "gate_requests_total"
    assert value(
        samples, ok, api="chat", agent="agent-1", tier="premium", model="openai/gpt-5", status="200"
    )
    assert (
        value(
            samples, ok, api="chat", agent="agent-1", tier="premium", model="_other", status="200"
        )
        == 1
    )
    assert total(samples, ok, agent="agent-1", status="200") == 4
    assert (
        value(samples, ok, api="chat", agent="_unknown", tier="none", model="none", status="403")
        == 1
    )
    assert (
        value(samples, ok, api="chat", agent="agent-2", tier="none", model="none", status="402")
        == 2
    )
    assert total(samples, ok) == 7

    # upstream: every attempt timed, the 429 counted and retried once
    assert value(samples, "gate_upstream_responses_total", status="429") == 1
    assert value(samples, "gate_upstream_responses_total", status="200") == 4
    assert value(samples, "gate_upstream_retries_total", status="429") == 1
    assert value(samples, "gate_upstream_latency_seconds_count") == 5
    assert value(samples, "gate_time_to_first_chunk_seconds_count") == 1
    assert value(samples, "gate_streams_in_flight") == 0
    assert value(samples, "gate_request_duration_seconds_count", stream="true") == 1

    # the spend log
    assert value(samples, "gate_spend_log_write_failures_total") == 0
    assert value(samples, "gate_spend_log_writable") == 1
    assert value(samples, "gate_spend_log_lines_total") == spend_log.lines_written

    # bounded labels and Prometheus' naming conventions
    models = set(PREMIUM + MID + ECONOMY) | {"_other", "none"}
    for name, labels, _ in samples:
        assert name.startswith("gate_"), name
        assert labels.get("agent", "agent-1") in {"agent-1", "agent-2", "_unknown"}, labels
        assert labels.get("model", "none") in models, labels
        assert "intruder" not in labels.values()
    for family, kind in types.items():
        if family.endswith("_created"):  # prometheus-client's creation time of a counter
            continue
        if kind == "counter":
            assert any(n == f"{family}_total" for n, _, _ in samples), family
        if kind == "histogram":
            assert family.endswith("_seconds"), family
        if "usd" in family:
            assert family.endswith("_usd"), family


async def test_spend_log_failures_show_at_the_next_scrape(start_gate, mock, tmp_path) -> None:
    client = await start_gate(make_config(tmp_path, mock.base_url, admin_token=TOKEN))
    spend_log = client.app[GATE].ledger.spend_log
    spend_log.write_failures, spend_log.error = 3, "No space left on device"
    samples, _ = await scrape(client)
    assert value(samples, "gate_spend_log_write_failures_total") == 3
    assert value(samples, "gate_spend_log_writable") == 0


async def test_a_reload_changes_which_labels_are_allowed(start_gate, mock, tmp_path) -> None:
    from gate.config import load_config

    from .support import raw_config, write_config

    raw = raw_config(tmp_path, mock.base_url, admin_token=TOKEN)
    path = write_config(tmp_path / "gate.yaml", raw)
    client = await start_gate(load_config(path, {}), env={})
    raw["cost_routing"]["agents"]["agent-3"] = agent(3)
    raw["cost_routing"]["agents"]["agent-3"]["tiers"][0]["models"] = ["openai/gpt-4o"]
    write_config(path, raw)
    assert (await client.post("/api/reload", headers=ADMIN)).status == 200
    resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-3"})
    assert resp.status == 200
    samples, _ = await scrape(client)
    labels = {
        "api": "chat",
        "agent": "agent-3",
        "tier": "premium",
        "model": "openai/gpt-4o",
        "status": "200",
    }
    assert value(samples, "gate_requests_total", **labels) == 1
    spent = Decimal(str(value(samples, "gate_budget_spent_usd", agent="agent-3")))
    assert spent > 0
