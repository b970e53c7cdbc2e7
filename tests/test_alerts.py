"""Alerts, received by a real webhook (a small aiohttp app on port 0) and /api/alerts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gate.config import ConfigError, parse_config
from gate.context import GATE
from gate.ops.webhook import Alert, webhook_body
from mock_upstream import Fault

from .support import Settlements, agent, chat, make_config, raw_config

CHAT = "/v1/chat/completions"
TOKEN = "alerts-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
AGENT_1 = {"X-Agent-ID": "agent-1"}


class Receiver:
    """A webhook: records each body; answers `fail` statuses first; `hold()` makes it
    keep every request waiting until `release()`."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail: list[int] = []
        self.attempts = 0
        self.url = ""
        self._changed = asyncio.Condition()
        self._open = asyncio.Event()
        self._open.set()
        self.waiting = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        async with self._changed:
            self.attempts += 1
            self.waiting += 1
            self._changed.notify_all()
        await self._open.wait()
        async with self._changed:
            self.waiting -= 1
            if self.fail:
                return web.Response(status=self.fail.pop(0), headers={"Retry-After": "0"})
            self.bodies.append(body)
            self._changed.notify_all()
        return web.Response(status=204)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def until(self, done: Any, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(done)

    async def wait(self, count: int) -> list[dict[str, Any]]:
        await self.until(lambda: len(self.bodies) >= count)
        return self.bodies


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    server = await aiohttp_server(app)
    hook.url = str(server.make_url("/hook"))
    return hook


def alerts_config(tmp_path: Path, mock: Any, receiver: Receiver, **alerts: Any) -> Any:
    agents = {"agent-1": agent(100), "agent-2": agent(10, period="daily")}
    return make_config(
        tmp_path,
        mock.base_url,
        agents,
        admin_token=TOKEN,
        alerts={"webhook_url": receiver.url, **alerts},
    )


async def listed(client: Any) -> list[dict[str, Any]]:
    resp = await client.get("/api/alerts", headers=ADMIN)
    assert resp.status == 200
    return list(reversed((await resp.json())["alerts"]))  # oldest first


async def spend(client: Any, agent_id: str, spent: float, total: float | None = None) -> None:
    body: dict[str, float] = {"budget_spent": spent}
    if total is not None:
        body["budget_total"] = total
    resp = await client.post(f"/api/budget/{agent_id}", json=body, headers=ADMIN)
    assert resp.status == 200, await resp.text()


# --- budgets ------------------------------------------------------------------------------


async def test_each_budget_crossing_fires_once(start_gate, mock, receiver, tmp_path) -> None:
    client = await start_gate(alerts_config(tmp_path, mock, receiver))
    settled = Settlements(client)
    await spend(client, "agent-1", 10)  # 90 % left: still premium, under 50 % spent
    await spend(client, "agent-1", 60)  # 50 % spent; 40 % left: mid
    for spent in (61, 65, 69):  # the same lines again and again
        await spend(client, "agent-1", spent)
    for _ in range(2):  # spend that settles above the lines changes nothing either
        assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 200
    await settled.wait(2)
    assert [(a["kind"], a["agent_id"]) for a in await listed(client)] == [
        ("budget_fraction", "agent-1"),
        ("tier_drop", "agent-1"),
    ]
    await spend(client, "agent-1", 85)  # 80 % spent; 15 % left: economy
    await spend(client, "agent-1", 100)  # used up: nothing yet, no request was refused
    for _ in range(3):
        assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 402

    alerts = await listed(client)
    found = [(a["kind"], a["details"].get("fraction"), a["details"].get("tier")) for a in alerts]
    assert found == [
        ("budget_fraction", 0.5, None),
        ("tier_drop", None, "mid"),
        ("budget_fraction", 0.8, None),
        ("tier_drop", None, "economy"),
        ("budget_refused", None, None),
    ]
    bodies = await receiver.wait(5)
    assert [set(b) for b in bodies] == [{"text"}] * 5  # Slack's shape
    texts = [b["text"] for b in bodies]
    # what was really spent, not the line crossed (60 %, past the 50 % alert)
    assert (
        "agent-1 has spent 60% of its monthly budget ($60.00 of $100.00), past its 50% alert"
        in texts[0]
    )
    assert "agent-1 dropped to tier mid" in texts[1]
    assert "refused at its budget cap" in texts[4]
    assert all(t.startswith("[Execwall OR Gate] ") for t in texts)
    assert all(a["delivery"] == "sent" for a in await listed(client))

    # An admin lifts it back to 50 % spent and it is used up again in one jump: new
    # crossings of the lines it fell back below (80 %, the cap) and only those; no
    # "dropped to tier economy" for an agent that is refused, and the fraction alert
    # says 100 %, not the 80 % line it jumped past.
    await spend(client, "agent-1", 100, total=200)
    await spend(client, "agent-1", 200)
    assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 402
    again = (await listed(client))[5:]
    assert [(a["kind"], a["details"].get("fraction")) for a in again] == [
        ("budget_fraction", 0.8),
        ("budget_refused", None),
    ]
    assert "has spent 100% of its monthly budget ($200.00 of $200.00)" in again[0]["message"]


async def test_a_new_period_re_arms_and_a_restart_re_sends_nothing(
    start_gate, mock, receiver, tmp_path
) -> None:
    now = [datetime(2025, 3, 10, 12, tzinfo=UTC)]

    def clock() -> datetime:
        return now[0]

    cfg = alerts_config(tmp_path, mock, receiver)
    client = await start_gate(cfg, clock=clock)
    await spend(client, "agent-2", 5)  # daily budget of 10: 50 % spent, mid tier
    assert [a["kind"] for a in await listed(client)] == ["budget_fraction", "tier_drop"]
    await receiver.wait(2)
    await client.close()

    # Restarted from the spend log: the crossing is still there and is not sent again.
    client = await start_gate(cfg, clock=clock)
    assert (await (await client.get("/api/spend/agent-2", headers=ADMIN)).json())[
        "budget_spent"
    ] == 5
    await spend(client, "agent-2", 6)
    assert await listed(client) == []

    now[0] += timedelta(days=1)  # a new day: agent-2's spend starts again at 0
    view = await (await client.get("/api/spend/agent-2", headers=ADMIN)).json()
    assert view["budget_spent"] == 0
    await spend(client, "agent-2", 5)
    assert [a["kind"] for a in await listed(client)] == ["budget_fraction", "tier_drop"]
    bodies = await receiver.wait(4)
    assert len(bodies) == 4 and "agent-2 has spent 50%" in bodies[2]["text"]


async def test_a_pace_that_runs_out_before_the_reset_alerts_once(
    start_gate, mock, receiver, tmp_path
) -> None:
    now = [datetime(2025, 3, 10, 12, tzinfo=UTC)]  # twelve hours before agent-3's reset
    tiers = [{"name": "premium", "threshold": 0.0, "models": ["anthropic/claude-sonnet-4.5"]}]
    agents = {"agent-3": agent(1, period="daily", tiers=tiers)}
    cfg = make_config(
        tmp_path, mock.base_url, agents, admin_token=TOKEN, alerts={"webhook_url": receiver.url}
    )
    client = await start_gate(cfg, clock=lambda: now[0])
    agent_3 = {"X-Agent-ID": "agent-3"}

    async def forecast() -> dict[str, Any]:
        view = await (await client.get("/api/spend/agent-3", headers=ADMIN)).json()
        return {**view["forecast"], "spent": view["budget_spent"]}

    seen = []
    for _ in range(20):  # about $0.015 a request: the pace climbs with every one
        mock.state.faults.append(Fault(chunks=1000))
        assert (await client.post(CHAT, json=chat(), headers=agent_3)).status == 200
        seen.append((await forecast(), [a["kind"] for a in await listed(client)]))
        if seen[-1][0]["before_reset"]:
            break
    first, kinds = seen[-1]
    assert first["before_reset"] is True and len(seen) > 1  # crossed, not there at once
    assert all(not f["before_reset"] and k == [] for f, k in seen[:-1])  # no early alert
    assert kinds == ["budget_forecast"]  # at the crossing: before any spend threshold
    assert first["spent"] < 0.5
    [alert] = await listed(client)
    assert alert["message"].startswith(
        f"at this pace agent-3 runs out at {first['runs_out_at'][:10]} "
        f"{first['runs_out_at'][11:16]} UTC, before its reset at 2025-03-11 00:00 UTC"
    )
    assert alert["details"]["before_reset"] is True
    [body] = await receiver.wait(1)
    assert "at this pace agent-3 runs out" in body["text"]

    mock.state.faults.append(Fault(chunks=1000))  # faster still: said once a period
    assert (await client.post(CHAT, json=chat(), headers=agent_3)).status == 200
    assert [a["kind"] for a in await listed(client)] == ["budget_forecast"]
    assert (await client.post("/api/reset/agent-3", headers=ADMIN)).status == 200
    mock.state.faults.append(Fault(chunks=1000))  # a reset re-arms: the pace is still fast
    assert (await client.post(CHAT, json=chat(), headers=agent_3)).status == 200
    assert [a["kind"] for a in await listed(client)] == ["budget_forecast"] * 2


# --- upstream and the spend log ---------------------------------------------------------------


async def test_upstream_credits_and_429_storms(start_gate, mock, receiver, tmp_path) -> None:
    cfg = alerts_config(
        tmp_path, mock, receiver, rate_limit_storm_count=3, rate_limit_storm_seconds=600
    )
    client = await start_gate(cfg)
    mock.state.faults += [Fault(status=429)] * 3  # 3 retries, then answered
    assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 200
    assert [a["kind"] for a in await listed(client)] == ["upstream_rate_limited"]
    mock.state.faults += [Fault(status=429)] * 2  # the storm goes on: no second alert
    assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 200
    assert len(await listed(client)) == 1

    mock.state.faults += [Fault(status=402), Fault(status=402)]  # credits gone
    for _ in range(2):
        resp = await client.post(CHAT, json=chat(), headers=AGENT_1)
        assert resp.status == 402
        assert (await resp.json())["error"]["type"] == "upstream_credits_exhausted"
    mock.state.faults.append(Fault(status=402, retry_after=0))  # transient: retried, no alert
    assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 200
    mock.state.faults.append(Fault(status=402))  # gone again after a success: a new crossing
    assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 402
    alerts = await listed(client)
    assert [a["kind"] for a in alerts] == [
        "upstream_rate_limited",
        "upstream_credits",
        "upstream_credits",
    ]
    assert all(a["agent_id"] is None for a in alerts)
    bodies = await receiver.wait(3)
    assert "429" in bodies[0]["text"] and "402" in bodies[1]["text"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
async def test_a_failing_spend_log_alerts_and_so_does_its_recovery(
    start_gate, mock, receiver, tmp_path
) -> None:
    link = tmp_path / "spend.jsonl"
    link.symlink_to("/dev/full")  # every write: ENOSPC
    client = await start_gate(alerts_config(tmp_path, mock, receiver))
    assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 503
    bodies = await receiver.wait(1)
    assert "spend log cannot be written" in bodies[0]["text"]
    link.unlink()
    link.symlink_to(tmp_path / "real.jsonl")  # the disk is back; the writer retries
    bodies = await receiver.wait(2)
    assert "being written again" in bodies[1]["text"]
    assert [a["kind"] for a in await listed(client)] == [
        "spend_log_failing",
        "spend_log_recovered",
    ]


# --- delivery ---------------------------------------------------------------------------------


async def test_discord_bodies_are_retried_and_never_delay_a_request(
    start_gate, mock, receiver, tmp_path
) -> None:
    client = await start_gate(alerts_config(tmp_path, mock, receiver, format="discord"))
    receiver.fail = [500, 429]
    receiver.hold()  # the webhook takes the first POST and does not answer yet
    await spend(client, "agent-1", 60)  # two alerts: 50 % and mid
    await receiver.until(lambda: receiver.waiting == 1)
    # The gate answers while its webhook hangs.
    resp = await client.post(CHAT, json=chat(), headers=AGENT_1)
    assert resp.status == 200 and resp.headers["X-Execwall-Tier"] == "mid"
    state = await (await client.get("/api/alerts", headers=ADMIN)).json()
    assert state["queued"] == 1  # the second alert waits behind the first
    assert [a["delivery"] for a in state["alerts"]] == ["pending", "pending"]
    receiver.release()
    bodies = await receiver.wait(2)
    assert receiver.attempts == 4  # 500 and 429 were retried
    assert all(set(b) == {"content", "allowed_mentions"} for b in bodies)
    assert bodies[0]["allowed_mentions"] == {"parse": []}
    assert "agent-1 has spent 60%" in bodies[0]["content"]
    first = (await listed(client))[0]
    assert (first["delivery"], first["attempts"]) == ("sent", 3)


async def test_a_refused_webhook_is_not_retried_and_no_url_means_listed_only(
    start_gate, mock, receiver, tmp_path
) -> None:
    client = await start_gate(alerts_config(tmp_path, mock, receiver))
    receiver.fail = [404]
    await spend(client, "agent-2", 5)  # 50 % spent (that alert fails), and the mid tier
    await receiver.wait(1)
    first, second = await listed(client)
    assert (first["delivery"], first["attempts"], first["error"]) == (
        "failed",
        1,
        "webhook answered 404",
    )
    assert second["delivery"] == "sent"
    await client.close()

    cfg = make_config(tmp_path, mock.base_url, {"agent-2": agent(10)}, admin_token=TOKEN)
    client = await start_gate(cfg)  # no webhook_url: alerts are listed, not sent
    await spend(client, "agent-2", 10)
    assert (await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-2"})).status == 402
    state = await (await client.get("/api/alerts", headers=ADMIN)).json()
    assert state["webhook"] == {"configured": False, "format": "slack"}
    # one for 50 % and 80 % at once, saying 100 %; no tier drop for a refused agent
    assert [a["kind"] for a in state["alerts"]] == ["budget_refused", "budget_fraction"]
    assert "has spent 100%" in state["alerts"][1]["message"]
    assert {a["delivery"] for a in state["alerts"]} == {"not_configured"}
    assert receiver.attempts == 2


async def test_alerts_follow_the_admin_get_rules(start_gate, mock, receiver, tmp_path) -> None:
    client = await start_gate(alerts_config(tmp_path, mock, receiver))
    assert (await client.get("/api/alerts")).status == 401
    resp = await client.get("/api/alerts", headers=ADMIN)
    assert resp.status == 200
    assert receiver.url not in await resp.text()  # a Slack hook URL is a secret


# --- pure parts -----------------------------------------------------------------------------


def test_webhook_bodies() -> None:
    alert = Alert(1, "2025-01-01T00:00:00.000Z", "tier_drop", "a <b> & c")
    assert webhook_body(alert, "slack") == {"text": "[Execwall OR Gate] a &lt;b&gt; &amp; c"}
    long = Alert(2, "", "x", "y" * 5000)
    body = webhook_body(long, "discord")
    assert len(body["content"]) == 2000 and body["allowed_mentions"] == {"parse": []}


def test_alert_settings_are_read_and_checked(tmp_path: Path) -> None:
    def parse(alerts: dict[str, Any]) -> Any:
        return parse_config(raw_config(tmp_path, "http://x/api/v1", alerts=alerts), {}, tmp_path)

    cfg = parse({}).alerts
    assert (cfg.spent_fractions, cfg.timeout_seconds, cfg.format) == (
        (Decimal("0.5"), Decimal("0.8")),
        5.0,
        "slack",
    )
    cfg = parse({"spent_fractions": [0.9, 0.25, 0.9], "rate_limit_storm_count": 5}).alerts
    assert cfg.spent_fractions == (Decimal("0.25"), Decimal("0.9"))
    assert cfg.rate_limit_storm_count == 5
    assert parse({"spent_fractions": []}).alerts.spent_fractions == ()
    with pytest.raises(ConfigError) as err:
        parse({"spent_fractions": [0, 1.5, "x"], "timeout_seconds": 0, "rate_limit_storm_count": 0})
    assert err.value.problems == [
        "cost_routing.alerts.spent_fractions[0]: must be greater than 0",
        "cost_routing.alerts.spent_fractions[1]: must be within 0..1",
        "cost_routing.alerts.spent_fractions[2]: must be a number",
        "cost_routing.alerts.timeout_seconds: must be greater than 0",
        "cost_routing.alerts.rate_limit_storm_count: must be greater than 0",
    ]


async def test_an_observer_that_fails_never_breaks_the_books(start_gate, mock, tmp_path) -> None:
    client = await start_gate(make_config(tmp_path, mock.base_url, admin_token=TOKEN))

    def broken(agent_id: str, change: str) -> None:
        raise RuntimeError("bug")

    client.app[GATE].ledger.observers.insert(0, broken)
    assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 200
    await spend(client, "agent-1", 30)
    view = await (await client.get("/api/spend/agent-1", headers=ADMIN)).json()
    assert view["budget_spent"] == 30
