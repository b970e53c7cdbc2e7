"""The admin API under /api: spend, budgets, resets, reload, health.

With an admin token set, every call but health needs `Authorization: Bearer <token>`;
without one, GETs are open and changes are refused — an agent on loopback must not be
able to raise or reset its own budget.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from aiohttp import web

from gate.books.store import SpendStoreError
from gate.config import ConfigError, load_config
from gate.context import GATE, Gate
from gate.core.cost import to_decimal
from gate.core.jsonfmt import dumps
from gate.http.errors import (
    AUTHENTICATION,
    INVALID_REQUEST,
    NOT_FOUND,
    PERMISSION,
    GateError,
    store_unavailable,
)
from gate.http.intake import bearer, read_json_object, same_secret
from gate.http.task_routes import add_task_routes
from gate.ops.wiring import add_ops_routes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RELOAD_ENV: web.AppKey[Mapping[str, str]] = web.AppKey("reload_env")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=dumps)


def check_admin(request: web.Request, token: str | None) -> None:
    if token is None:
        if request.method in ("GET", "HEAD"):
            return
        raise GateError(
            403,
            PERMISSION,
            "admin changes are disabled: set GATE_ADMIN_TOKEN (or cost_routing.admin_token) "
            "and send it as Authorization: Bearer <token>",
        )
    if not same_secret(bearer(request), token):
        raise GateError(401, AUTHENTICATION, "admin token required", {"WWW-Authenticate": "Bearer"})


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Decided by the route that matched, never by how the path is spelled: no slash,
    # dot segment or percent-encoding can make a change look like the health check.
    if request.match_info.handler not in OPEN_HANDLERS:
        check_admin(request, request.config_dict[GATE].config.admin_token)
    return await handler(request)


def _view(gate: Gate, agent_id: str) -> dict[str, Any]:
    view = gate.ledger.view(agent_id)
    if view is None:
        raise GateError(404, NOT_FOUND, f"agent '{agent_id}' is not configured")
    policy = gate.config.agents.get(agent_id)
    if policy is not None:  # its rate limits and what is left of them now
        view["rate_limits"] = gate.limits.view(policy, gate.config.limits)
    remaining = view["budget_remaining"]
    resets_at = gate.ledger.resets_at(agent_id)
    view["forecast"] = gate.paces.forecast(agent_id, remaining, resets_at).view()
    return view


async def health(request: web.Request) -> web.Response:
    gate = request.config_dict[GATE]
    spend_log = gate.ledger.spend_log
    body: dict[str, Any] = {
        "status": "ok" if spend_log.error is None else "degraded",
        "agents": len(gate.ledger.agent_ids()),
        "open_holds": len(gate.ledger.open_holds()),
        "prices_loaded": gate.prices.loaded,
    }
    if spend_log.error is not None:
        body["spend_log_error"] = spend_log.error
    store_error = gate.ledger.store_error
    closed = gate.config.spend_store.on_store_error == "closed"
    if store_error is not None:  # a shared store (Redis) that cannot be used now
        body["status"] = "degraded"
        body["spend_store_error"] = store_error
    body["upstream_key"] = gate.key_status.view()
    if body["upstream_key"]["key_rejected"]:
        body["status"] = "degraded"  # still 200: the gate itself works, upstream refuses it
    if gate.sinks:
        body["sinks"] = [sink.view() for sink in gate.sinks]
    body.update(gate.health_extras())  # console sync, upstream credit
    failing = spend_log.error is not None or (store_error is not None and closed)
    return _json(body, status=503 if failing else 200)


async def spend_all(request: web.Request) -> web.Response:
    gate = request.config_dict[GATE]
    await _fresh(gate)
    return _json({"agents": {a: _view(gate, a) for a in gate.ledger.agent_ids()}})


async def _fresh(gate: Gate) -> None:
    """A shared store: show what all instances did, not this one's last view of it
    (that view when the store cannot answer; health says why)."""
    with contextlib.suppress(SpendStoreError):
        await gate.ledger.refresh()
    await gate.limits.refresh(gate.config.agents.values(), gate.config.limits)


async def spend_one(request: web.Request) -> web.Response:
    gate = request.config_dict[GATE]
    await _fresh(gate)
    return _json(_view(gate, request.match_info["agent_id"]))


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, read under the same limits as a chat request."""
    limits = request.config_dict[GATE].config.limits
    body, _ = await read_json_object(request, limits.max_body_bytes, limits.client_timeout_seconds)
    return body


def _amount(body: dict[str, Any], key: str) -> Decimal | None:
    if key not in body:
        return None
    value = body[key]
    amount = None if isinstance(value, str) else to_decimal(value)
    if amount is None or amount < 0:
        raise GateError(400, INVALID_REQUEST, f"'{key}' must be a number >= 0")
    return amount


async def set_budget(request: web.Request) -> web.Response:
    gate = request.config_dict[GATE]
    agent_id = request.match_info["agent_id"]
    _view(gate, agent_id)
    body = await _json_body(request)
    unknown = sorted(set(body) - {"budget_total", "budget_spent"})
    if unknown:
        raise GateError(400, INVALID_REQUEST, f"unknown field(s): {', '.join(unknown)}")
    total, spent = _amount(body, "budget_total"), _amount(body, "budget_spent")
    if total is None and spent is None:
        raise GateError(400, INVALID_REQUEST, "give budget_total and/or budget_spent")
    try:
        await gate.ledger.set_budget(agent_id, total, spent)
    except SpendStoreError as exc:
        raise store_unavailable(str(exc)) from None
    return _json(_view(gate, agent_id))


async def reset(request: web.Request) -> web.Response:
    gate = request.config_dict[GATE]
    agent_id = request.match_info["agent_id"]
    _view(gate, agent_id)
    try:
        await gate.ledger.reset(agent_id)
    except SpendStoreError as exc:
        raise store_unavailable(str(exc)) from None
    return _json(_view(gate, agent_id))


async def reload(request: web.Request) -> web.Response:
    gate = request.config_dict[GATE]
    source = gate.config.source
    if source is None:
        raise GateError(400, INVALID_REQUEST, "this gate was not started from a config file")
    try:
        # In a thread: a secret's command may take a while, the event loop must not wait.
        new = await asyncio.to_thread(load_config, source, request.app[RELOAD_ENV])
    except ConfigError as err:
        raise GateError(
            400,
            INVALID_REQUEST,
            "config refused; the old one stays in force: " + "; ".join(err.problems),
        ) from None
    notes = [f"warning: {w}" for w in new.warnings]
    if new.spend_log != gate.config.spend_log:
        notes.append("spend_log changes take effect at the next start")
        new = replace(new, spend_log=gate.config.spend_log)
    if new.sinks != gate.config.sinks:
        notes.append("sinks changes take effect at the next start")
    gate.live = gate.live.reloaded(new)  # one swap: config, upstream client, secrets
    gate.key_status.wake()  # a rotated key is checked now, not at the next interval
    gate.prices.wake()  # and the prices asked of the upstream and key now in force
    gate.ledger.apply_policies(new.agents)
    gate.metrics.configure(new.agents)
    return _json({"status": "reloaded", "agents": sorted(new.agents), "notes": notes})


OPEN_HANDLERS: frozenset[Handler] = frozenset({health})


def create_admin_app(env: dict[str, str]) -> web.Application:
    admin = web.Application(middlewares=[admin_auth])
    admin[RELOAD_ENV] = env
    admin.router.add_get("/health", health)
    admin.router.add_get("/spend", spend_all)
    admin.router.add_get("/spend/{agent_id}", spend_one)
    admin.router.add_post("/budget/{agent_id}", set_budget)
    admin.router.add_post("/reset/{agent_id}", reset)
    admin.router.add_post("/reload", reload)
    add_ops_routes(admin)  # /alerts, /upstream, /prices
    add_task_routes(admin)  # /tasks: task budgets
    return admin
