"""Task budgets: a key for one job, with a cap of its own reserved out of the agent's
budget — at its cap, on expiry, closed, across a restart, in the report."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gate.books.holds import Hold
from gate.books.tasks import Task, TaskBook, held_with_tasks, key_hash
from gate.cli import report
from gate.config import AgentPolicy, Tier
from gate.core.router import Admission, Refusal, admit

from .procs import start_gate as spawn_gate
from .procs import start_mock
from .support import agent, chat, load_prices, make_config, raw_config, request_lines, write_config

D = Decimal
TOKEN = "adm-tasks-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


# --- pure: what a task reserves, what a task's request may hold ----------------------


def test_an_open_task_reserves_what_it_has_not_spent_or_held() -> None:
    task = Task("t", "a", D(4), NOW + timedelta(hours=1), "h", spent=D(1))
    holds = [Hold("r1", "a", D("0.5"), task_id="t"), Hold("r2", "a", D("0.25"))]
    assert held_with_tasks(holds, "a", [task], NOW) == D("0.5") + D("0.25") + D("2.5")
    assert task.held == D("0.5") and task.unused() == D("2.5")
    assert held_with_tasks(holds, "a", [task], NOW + timedelta(hours=2)) == D("0.75")  # expired


def test_a_task_book_finds_an_open_task_by_its_key_alone() -> None:
    book = TaskBook()
    task = Task("t", "a", D(1), NOW + timedelta(minutes=5), key_hash("ewt_secret"))
    book.add(task)
    assert book.for_key("ewt_secret", NOW) is task
    assert book.for_key("ewt_other", NOW) is None
    assert book.for_key("ewt_secret", NOW + timedelta(minutes=5)) is None
    assert book.unused("t", NOW) == D(1) and book.unused("t", NOW + timedelta(days=1)) == 0
    assert book.unused(None, NOW) is None
    held, expired = book.held([], "a", NOW + timedelta(minutes=6))
    assert (held, expired, task.ended) == (D(0), [task], "expired")


POLICY = AgentPolicy("a", D(10), D(0), "local", "never", True, (Tier("only", D(0), ("m",)),))
PRICES: dict[str, Any] = {}


@pytest.mark.parametrize(
    ("committed", "limit", "max_tokens", "held", "clamped"),
    [
        (D(0), None, 1000, D("0.001"), False),  # no task: the agent's budget alone
        (D(0), D("0.0005"), 1000, D("0.0005"), True),  # the task's cap clamps the answer
        (D(0), D("0.01"), 1000, D("0.001"), False),  # the task's cap is ample
        (D("9.9996"), D(1), 1000, D("0.0004"), True),  # the agent's budget is the smaller
    ],
)
def test_a_task_limit_bounds_the_hold_like_a_hard_cap(
    committed: Decimal, limit: Decimal | None, max_tokens: int, held: Decimal, clamped: bool
) -> None:
    decision = admit(
        POLICY, D(10), committed, None, 0, max_tokens, PRICES, D("0.000001"), 4096, limit=limit
    )
    assert isinstance(decision, Admission)
    assert decision.hold <= held and decision.clamped is clamped


def test_a_spent_task_refuses_with_a_402() -> None:
    decision = admit(POLICY, D(10), D(0), None, 0, 10, PRICES, D("0.000001"), 4096, limit=D(0))
    assert isinstance(decision, Refusal) and decision.status == 402
    assert "task" in decision.message


def test_the_report_totals_by_task() -> None:
    lines = [
        {"task_id": "task-1", "cost": 0.5, "status": 200},
        {"task_id": "task-1", "cost": 0.25, "status": 200},
        {"cost": 1, "status": 200},
    ]
    groups = report.summarise(lines, "task")
    assert groups["task-1"].usd == D("0.75") and groups["-"].usd == D(1)


# --- a running gate -----------------------------------------------------------------


@pytest.fixture
async def clocked(start_gate, mock, tmp_path: Path) -> tuple[Any, Clock]:
    clock = Clock()
    cfg = make_config(
        tmp_path, mock.base_url, {"agent-1": agent(1, period="never")}, admin_token=TOKEN
    )
    client = await start_gate(cfg, clock=clock)
    await load_prices(client)
    return client, clock


async def open_task(client: Any, **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/tasks", json={"agent_id": "agent-1", **fields}, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    task: dict[str, Any] = await resp.json()
    return task


async def spend(client: Any) -> dict[str, Any]:
    view: dict[str, Any] = await (await client.get("/api/spend/agent-1", headers=ADMIN)).json()
    return view


def with_key(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


async def test_a_task_key_spends_the_agents_budget_within_its_cap(
    clocked, mock, tmp_path: Path
) -> None:
    client, _ = clocked
    task = await open_task(client, cap=0.5, ttl_seconds=600, name="nightly refactor")
    assert task["key"].startswith("ewt_") and task["open"] is True
    assert (await spend(client))["budget_held"] == 0.5  # reserved out of the agent's budget

    resp = await client.post("/v1/chat/completions", json=chat(), headers=with_key(task["key"]))
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Execwall-Agent"] == "agent-1"  # the task's agent, no X-Agent-ID
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert line["task_id"] == task["task_id"] and line["cost"] > 0
    assert mock.state.requests[0]["headers"]["Authorization"] != f"Bearer {task['key']}"

    view = await (await client.get(f"/api/tasks/{task['task_id']}", headers=ADMIN)).json()
    assert D(str(view["spent"])) == line["cost"]
    assert D(str(view["remaining"])) == D("0.5") - line["cost"]
    agent_view = await spend(client)
    assert D(str(agent_view["budget_spent"])) == line["cost"]
    assert D(str(agent_view["budget_held"])) == D("0.5") - line["cost"]  # still reserved
    log = (tmp_path / "spend.jsonl").read_text()
    assert task["key"] not in log and key_hash(task["key"]) in log


async def test_the_agents_own_requests_cannot_spend_a_tasks_reservation(clocked, mock) -> None:
    client, _ = clocked
    await open_task(client, cap=0.999)  # all but a tenth of a cent of the agent's $1
    resp = await client.post(
        "/v1/chat/completions", json=chat(max_tokens=4000), headers={"X-Agent-ID": "agent-1"}
    )
    note = (await resp.json())["_execwall"]
    assert note["max_tokens_clamped"] is True  # clamped to the $0.001 left outside the task
    assert D(str(note["cost"])) <= D("0.001")


async def test_a_task_at_its_cap_is_refused_and_the_agent_is_not(clocked, mock) -> None:
    client, _ = clocked
    task = await open_task(client, cap=0.0002)
    resp = await client.post("/v1/chat/completions", json=chat(), headers=with_key(task["key"]))
    assert resp.status == 200
    note = (await resp.json())["_execwall"]
    assert note["max_tokens_clamped"] is True and D(str(note["cost"])) <= D("0.0002")
    for _ in range(3):
        resp = await client.post("/v1/chat/completions", json=chat(), headers=with_key(task["key"]))
        if resp.status == 402:
            break
    assert resp.status == 402
    assert resp.headers["x-should-retry"] == "false"
    error = (await resp.json())["error"]
    assert "task" in error["message"] and "credits" in error["message"]
    assert error["resets_at"] is None  # a task's cap does not reset
    resp = await client.post("/v1/chat/completions", json=chat(), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 200  # the agent's own budget is untouched by the task's end


async def test_a_closed_or_expired_task_key_stops_and_its_reservation_is_released(
    clocked, mock
) -> None:
    client, clock = clocked
    closed = await open_task(client, cap=0.25)
    expiring = await open_task(client, cap=0.25, ttl_seconds=60)
    assert (await spend(client))["budget_held"] == 0.5
    resp = await client.post(f"/api/tasks/{closed['task_id']}/close", headers=ADMIN)
    assert (await resp.json())["ended"] == "closed"
    assert (await spend(client))["budget_held"] == 0.25
    resp = await client.post("/v1/responses", json={"input": "hi"}, headers=with_key(closed["key"]))
    assert resp.status == 401
    assert "task" in (await resp.json())["error"]["message"]

    clock.now += timedelta(seconds=61)
    assert (await spend(client))["budget_held"] == 0
    resp = await client.post("/v1/chat/completions", json=chat(), headers=with_key(expiring["key"]))
    assert resp.status == 401
    tasks = (await (await client.get("/api/tasks", headers=ADMIN)).json())["tasks"]
    assert {t["task_id"]: t["ended"] for t in tasks} == {
        closed["task_id"]: "closed",
        expiring["task_id"]: "expired",
    }
    assert all("key" not in t for t in tasks)
    assert mock.state.requests == []


async def test_a_task_refuses_what_the_budget_cannot_cover_and_bad_fields(clocked) -> None:
    client, _ = clocked
    for body, status in (
        ({"agent_id": "agent-1", "cap": 2}, 409),  # more than the agent's $1
        ({"agent_id": "agent-1", "cap": 0}, 400),
        ({"agent_id": "agent-1", "cap": "1"}, 400),
        ({"agent_id": "agent-1", "cap": 0.1, "ttl_seconds": 0}, 400),
        ({"agent_id": "nobody", "cap": 0.1}, 404),
        ({"agent_id": "agent-1", "cap": 0.1, "limit": 3}, 400),
    ):
        resp = await client.post("/api/tasks", json=body, headers=ADMIN)
        assert resp.status == status, (body, await resp.text())
    resp = await client.post("/api/tasks", json={"agent_id": "agent-1", "cap": 0.1})
    assert resp.status == 401  # an admin call: the token is needed


async def test_a_task_key_for_another_agent_is_refused(start_gate, mock, tmp_path: Path) -> None:
    agents = {"agent-1": agent(1), "agent-2": agent(1)}
    client = await start_gate(make_config(tmp_path, mock.base_url, agents, admin_token=TOKEN))
    task = await open_task(client, cap=0.1)
    headers = with_key(task["key"], **{"X-Agent-ID": "agent-2"})
    resp = await client.post("/v1/chat/completions", json=chat(), headers=headers)
    assert resp.status == 403
    assert mock.state.requests == []


async def test_the_redis_store_refuses_task_budgets_plainly(
    start_gate, mock, tmp_path: Path, redis_server
) -> None:
    from gate.books.redis_rebuild import rebuild

    store = {"backend": "redis", "url": redis_server.url}
    cfg = make_config(
        tmp_path, mock.base_url, {"agent-1": agent(1)}, admin_token=TOKEN, spend_store=store
    )
    await rebuild(cfg, [])
    client = await start_gate(cfg)
    resp = await client.post("/api/tasks", json={"agent_id": "agent-1", "cap": 0.1}, headers=ADMIN)
    assert resp.status == 409
    assert "jsonl" in (await resp.json())["error"]["message"]


# --- across a restart ------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
async def test_a_task_survives_a_restart(tmp_path: Path, stop: int) -> None:
    mock = await start_mock(tmp_path)
    raw = raw_config(
        tmp_path, mock.url + "/api/v1", agents={"agent-1": agent(1)}, admin_token=TOKEN
    )
    cfg = write_config(tmp_path / "gate.json", raw)
    gate = await spawn_gate(cfg, tmp_path)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(
                gate.url + "/api/tasks", headers=ADMIN, json={"agent_id": "agent-1", "cap": 0.5}
            ) as resp:
                task = await resp.json()
            async with s.post(
                gate.url + "/v1/chat/completions", json=chat(), headers=with_key(task["key"])
            ) as resp:
                assert resp.status == 200
                cost = D(str((await resp.json())["_execwall"]["cost"]))
            await gate.stop(stop)  # SIGTERM writes a snapshot; kill -9 leaves only lines
            gate = await spawn_gate(cfg, tmp_path)
            async with s.get(gate.url + f"/api/tasks/{task['task_id']}", headers=ADMIN) as resp:
                view = await resp.json()
            assert view["open"] is True and D(str(view["spent"])) == cost
            async with s.get(gate.url + "/api/spend/agent-1", headers=ADMIN) as resp:
                held = D(str((await resp.json())["budget_held"]))
            assert held == D("0.5") - cost  # still reserved after the restart
            async with s.post(
                gate.url + "/v1/chat/completions", json=chat(), headers=with_key(task["key"])
            ) as resp:
                assert resp.status == 200  # the key still works
    finally:
        await gate.stop()
        await mock.stop()
    lines = request_lines(tmp_path / "spend.jsonl")
    assert [x.get("task_id") for x in lines] == [task["task_id"]] * 2
    assert json.dumps(task["key"]) not in (tmp_path / "spend.jsonl").read_text()
