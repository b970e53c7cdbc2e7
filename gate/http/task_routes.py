"""The admin API's task budgets (`gate.books.tasks`): mint a task key, list tasks, close one.

`POST /api/tasks` `{"agent_id", "cap", "ttl_seconds"?, "name"?}` answers 201 with the
task and its `key` — shown this once, never again and never logged. Requests made with
the key (as `Authorization: Bearer` or `x-api-key`) are the agent's, bounded by both the
task's cap and the agent's budget; their spend-log lines carry `task_id`.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web

from gate.books.spendlog import SpendLogError
from gate.books.store import TaskRefused
from gate.context import GATE
from gate.core.cost import to_decimal
from gate.core.jsonfmt import dumps
from gate.http.errors import INVALID_REQUEST, NOT_FOUND, GateError, log_unavailable
from gate.http.intake import read_json_object

DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 7 * 24 * 3600
FIELDS = frozenset({"agent_id", "cap", "ttl_seconds", "name"})


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=dumps)


def _cap(body: dict[str, Any]) -> Decimal:
    value = body.get("cap")
    cap = None if isinstance(value, str) else to_decimal(value)
    if cap is None or not cap > 0 or not cap.is_finite():
        raise GateError(400, INVALID_REQUEST, "'cap' must be a number of USD > 0")
    return cap


def _ttl(body: dict[str, Any]) -> int:
    ttl = body.get("ttl_seconds", DEFAULT_TTL_SECONDS)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_SECONDS:
        raise GateError(
            400, INVALID_REQUEST, f"'ttl_seconds' must be an integer from 1 to {MAX_TTL_SECONDS}"
        )
    return ttl


async def open_task(request: web.Request) -> web.Response:
    gate = request.config_dict[GATE]
    limits = gate.config.limits
    body, _ = await read_json_object(request, limits.max_body_bytes, limits.client_timeout_seconds)
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise GateError(400, INVALID_REQUEST, f"unknown field(s): {', '.join(unknown)}")
    agent_id = body.get("agent_id")
    if not isinstance(agent_id, str) or gate.ledger.account(agent_id) is None:
        raise GateError(404, NOT_FOUND, f"agent '{agent_id}' is not configured")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise GateError(400, INVALID_REQUEST, "'name' must be a string of at most 200 characters")
    cap, ttl = _cap(body), _ttl(body)
    expires_at = gate.ledger.now() + timedelta(seconds=ttl)
    try:
        task, key = await gate.ledger.tasks.open(agent_id, cap, expires_at, name)
    except TaskRefused as exc:
        raise GateError(409, INVALID_REQUEST, f"task refused: {exc}") from None
    except SpendLogError as exc:
        raise log_unavailable(str(exc)) from None
    return _json({**task.view(gate.ledger.now()), "key": key}, status=201)


async def list_tasks(request: web.Request) -> web.Response:
    gate = request.config_dict[GATE]
    now = gate.ledger.now()
    return _json({"tasks": [task.view(now) for task in gate.ledger.tasks.all()]})


def _task(request: web.Request) -> Any:
    gate = request.config_dict[GATE]
    task_id = request.match_info["task_id"]
    for task in gate.ledger.tasks.all():
        if task.task_id == task_id:
            return task
    raise GateError(404, NOT_FOUND, f"no task '{task_id}'")


async def one_task(request: web.Request) -> web.Response:
    return _json(_task(request).view(request.config_dict[GATE].ledger.now()))


async def close_task(request: web.Request) -> web.Response:
    gate = request.config_dict[GATE]
    task = gate.ledger.tasks.close(_task(request).task_id)
    assert task is not None
    return _json(task.view(gate.ledger.now()))


def add_task_routes(admin: web.Application) -> None:
    admin.router.add_post("/tasks", open_task)
    admin.router.add_get("/tasks", list_tasks)
    admin.router.add_get("/tasks/{task_id}", one_task)
    admin.router.add_post("/tasks/{task_id}/close", close_task)
