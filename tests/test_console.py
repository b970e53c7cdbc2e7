"""JetPatch console sync against the mock's console mode, failures included."""

from __future__ import annotations

import json
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gate.context import GATE
from gate.ops.console import ConsoleError, next_delay, parse_budgets
from gate.ops.wiring import OPS

from .support import agent, chat, make_config, spend_lines

TOKEN = "console-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
CONSOLE_KEY = "jp-console-key-9876543210"
CHAT = "/v1/chat/completions"


def console_config(tmp_path: Path, mock: Any, url: str | None = None, **console: Any) -> Any:
    agents = {"agent-1": agent(50), "agent-j": agent(10, budget_source="jetpatch")}
    block = {
        "enabled": True,
        "url": url or str(mock.server.make_url("")),
        "api_key": CONSOLE_KEY,
        "sync_interval_seconds": 0.05,
        **console,
    }
    return make_config(tmp_path, mock.base_url, agents, admin_token=TOKEN, console=block)


async def view(client: Any, agent_id: str) -> dict[str, Any]:
    return await (await client.get(f"/api/spend/{agent_id}", headers=ADMIN)).json()


async def health(client: Any) -> dict[str, Any]:
    resp = await client.get("/api/health")
    assert resp.status == 200
    return await resp.json()


async def test_spend_goes_out_and_jetpatch_budgets_come_in(start_gate, mock, tmp_path) -> None:
    console = mock.state.console
    console.expected_key = CONSOLE_KEY
    console.budgets = {
        "agent-j": {"budget_total": 40},
        "agent-1": {"budget_total": 999},  # budget_source local: not the console's to set
        "ghost": {"budget_total": 5},  # not configured here
    }
    client = await start_gate(console_config(tmp_path, mock))
    sync = client.app[OPS].console
    await sync.wait_rounds(1)
    assert (await view(client, "agent-j"))["budget_total"] == 40
    assert (await view(client, "agent-1"))["budget_total"] == 50
    assert console.spend_calls >= 1 and console.budget_calls >= 1
    first = console.snapshots[0]
    assert set(first["agents"]) == {"agent-1", "agent-j"}
    assert first["agents"]["agent-1"]["budget_spent"] == 0

    resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 200
    await sync.wait_rounds(sync.rounds + 2)  # a whole round after the request settled
    latest = console.snapshots[-1]
    shown = await view(client, "agent-1")
    shown.pop("rate_limits")  # this instance's windows, not the books the console gets
    shown.pop("forecast")  # this instance's pace, decaying by the second: not the books
    assert latest["agents"]["agent-1"] == shown
    assert latest["agents"]["agent-1"]["budget_spent"] > 0
    assert latest["ts"].endswith("Z")

    # A new console budget is applied once; the spend log says where it came from.
    console.budgets["agent-j"] = {"budget_total": 12.5}
    await sync.wait_rounds(sync.rounds + 2)
    assert (await view(client, "agent-j"))["budget_total"] == 12.5
    await client.app[GATE].ledger.spend_log.flush()
    changes = [r for r in spend_lines(tmp_path / "spend.jsonl") if r["event"] == "budget"]
    assert [(r["agent_id"], r["budget_total"], r["source"]) for r in changes] == [
        ("agent-j", 40, "jetpatch"),
        ("agent-j", Decimal("12.5"), "jetpatch"),
    ]
    report = await health(client)
    assert report["console"]["consecutive_failures"] == 0
    assert report["console"]["last_sync"] is not None
    assert report["console"]["budgets_applied"] == 2
    assert "warnings" not in report
    logged = (tmp_path / "openrouter_requests.log").read_text().splitlines()
    assert logged and not any("/api/gate/" in json.loads(line)["path"] for line in logged)


async def test_failures_back_off_show_in_health_and_recover(start_gate, mock, tmp_path) -> None:
    console = mock.state.console
    console.faults = [503, 500]  # the first round's two calls
    console.budgets = {"agent-j": {"budget_total": 30}}
    client = await start_gate(console_config(tmp_path, mock, sync_interval_seconds=0.25))
    sync = client.app[OPS].console
    await sync.wait_rounds(1)
    report = await health(client)
    assert report["status"] == "ok"  # the gate itself is fine
    info = report["console"]
    assert info["consecutive_failures"] == 1
    assert info["last_error"] == (
        "POST /api/gate/spend: the console answered 503; "
        "GET /api/gate/budgets: the console answered 500"
    )
    assert info["next_sync_in_seconds"] > 0.25  # backed off: twice the interval
    assert report["warnings"] == [f"console sync failing (1 in a row): {info['last_error']}"]
    assert (await view(client, "agent-j"))["budget_total"] == 10  # unchanged meanwhile
    # requests never wait on the console
    resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-j"})
    assert resp.status == 200

    await sync.wait_rounds(2)
    report = await health(client)
    assert report["console"]["consecutive_failures"] == 0
    assert report["console"]["last_error"] is None
    assert "warnings" not in report
    assert (await view(client, "agent-j"))["budget_total"] == 30


async def test_a_wrong_key_or_no_console_at_all_is_a_failure_never_a_leak(
    start_gate, mock, tmp_path
) -> None:
    mock.state.console.expected_key = "another-key"
    client = await start_gate(console_config(tmp_path, mock))
    sync = client.app[OPS].console
    await sync.wait_rounds(1)
    assert sync.last_error is not None and "answered 401" in sync.last_error
    report = await client.get("/api/health")
    assert CONSOLE_KEY not in await report.text()
    await client.close()

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = await start_gate(console_config(tmp_path, mock, url=f"http://127.0.0.1:{port}"))
    sync = client.app[OPS].console
    await sync.wait_rounds(1)
    assert sync.failures == 1
    assert sync.last_error is not None and "unreachable" in sync.last_error
    resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 200


async def test_a_disabled_console_is_not_in_health(gate) -> None:
    assert "console" not in await health(gate)


def test_next_delay_doubles_up_to_sixteen_intervals() -> None:
    assert [next_delay(60, n) for n in range(7)] == [60, 120, 240, 480, 960, 960, 960]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"budgets": {}}, {}),
        (
            {"budgets": {"a": {"budget_total": 5}, "b": {"budget_total": 0.25}}},
            {"a": Decimal(5), "b": Decimal("0.25")},
        ),
        # entries of the wrong shape are skipped, the rest applied
        (
            {
                "budgets": {
                    "a": {"budget_total": -1},
                    "b": {"budget_total": "7"},
                    "c": 3,
                    "d": {"budget_total": True},
                    "e": {"budget_total": 1},
                }
            },
            {"e": Decimal(1)},
        ),
    ],
)
def test_budget_answers(document: Any, expected: dict[str, Decimal]) -> None:
    assert parse_budgets(document) == expected


@pytest.mark.parametrize("document", [None, [], {"agents": {}}, {"budgets": [1]}])
def test_budget_answers_of_the_wrong_shape_fail_the_round(document: Any) -> None:
    with pytest.raises(ConsoleError, match="expected"):
        parse_budgets(document)
