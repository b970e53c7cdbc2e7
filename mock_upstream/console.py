"""Console mode: the JetPatch console's two calls, as the gate makes them.

- `POST /api/gate/spend`: stores the snapshot (the last `KEEP` of them) and answers
  `{"received": true}`.
- `GET /api/gate/budgets`: answers `{"budgets": {agent_id: {"budget_total": n}}}`.

Both need `Authorization: Bearer <expected_key>` when one is set (401 otherwise), and
each consumes the next queued fault, if any, answering that status instead. Control:

- `POST /_mock/console` `{"budgets"?: {...}, "faults"?: [503, ...], "expected_key"?:
  str | null, "reset"?: true}` — budgets replace the ones handed out, faults are added.
- `GET /_mock/console` — what the console received and holds.

These calls are not OpenRouter's, so they stay out of the request log.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from . import wire
from .keys import MOCK_STATE
from .state import ConsoleState

KEEP = 100  # snapshots kept


def _console(request: web.Request) -> ConsoleState:
    return request.app[MOCK_STATE].console


def _refusal(request: web.Request, console: ConsoleState) -> web.Response | None:
    """The answer instead of the real one: a queued fault, or a 401 for a wrong key."""
    if console.faults:
        return wire.error_response(console.faults.pop(0), "console fault (injected)")
    if console.expected_key is None:
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    good = scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), console.expected_key.encode()
    )
    return None if good else wire.error_response(401, "console: bad or missing API key")


async def receive_spend(request: web.Request) -> web.Response:
    console = _console(request)
    console.spend_calls += 1
    refused = _refusal(request, console)
    if refused is not None:
        return refused
    try:
        body = await request.json()
    except ValueError:
        return wire.error_response(400, "console: body must be JSON")
    console.snapshots.append(body)
    del console.snapshots[:-KEEP]
    return web.json_response({"received": True})


async def budgets(request: web.Request) -> web.Response:
    console = _console(request)
    console.budget_calls += 1
    refused = _refusal(request, console)
    if refused is not None:
        return refused
    return web.json_response({"budgets": console.budgets})


async def control(request: web.Request) -> web.Response:
    console = _console(request)
    try:
        raw: Any = await request.json()
    except ValueError:
        return wire.error_response(400, "body must be JSON")
    if not isinstance(raw, dict) or set(raw) - {"budgets", "faults", "expected_key", "reset"}:
        return wire.error_response(400, "fields: budgets, faults, expected_key, reset")
    faults = raw.get("faults", [])
    if not isinstance(faults, list) or not all(
        isinstance(f, int) and not isinstance(f, bool) and 400 <= f <= 599 for f in faults
    ):
        return wire.error_response(400, "faults must be a list of statuses 400..599")
    if "budgets" in raw and not isinstance(raw["budgets"], dict):
        return wire.error_response(400, "budgets must be an object")
    if not isinstance(raw.get("expected_key", ""), str | None):
        return wire.error_response(400, "expected_key must be a string or null")
    if raw.get("reset") is True:
        console.reset()
    if "budgets" in raw:
        console.budgets = dict(raw["budgets"])
    if "expected_key" in raw:
        console.expected_key = raw["expected_key"]
    console.faults.extend(faults)
    return await received(request)


async def received(request: web.Request) -> web.Response:
    console = _console(request)
    return web.json_response(
        {
            "budgets": console.budgets,
            "snapshots": console.snapshots,
            "spend_calls": console.spend_calls,
            "budget_calls": console.budget_calls,
            "faults_queued": len(console.faults),
        }
    )
