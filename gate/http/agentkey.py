"""`GET /api/v1/key` (and `/v1/key`) for an agent: its own budget, in OpenRouter's shape.

A tool written for OpenRouter checks its key's balance with `GET /api/v1/key`; through
the gate the "key" is the calling agent, so it sees the agent's budget — `limit` is the
period's `budget_total`, `usage` what it spent, `limit_remaining` what is left after
open holds, `limit_reset` its period — and never the numbers (or anything else) of the
gate's real upstream key, which is not even asked.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gate.context import GATE
from gate.core.jsonfmt import dumps
from gate.http.intake import identify

LIMIT_RESET = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "never": None}


def key_view(view: dict[str, Any], resets_at: str | None) -> dict[str, Any]:
    """OpenRouter's `/key` body for an agent's admin view (pure)."""
    period = view["period"]
    usage = view["budget_spent"]
    data: dict[str, Any] = {
        "label": f"execwall agent {view['agent_id']}",
        "limit": view["budget_total"],
        "usage": usage,
        "limit_remaining": max(view["budget_remaining"], 0),
        "limit_reset": LIMIT_RESET[period],
        "is_free_tier": False,
        "is_provisioning_key": False,
        "include_byok_in_limit": False,
        "expires_at": None,
        "execwall": {
            "agent_id": view["agent_id"],
            "budget_held": view["budget_held"],
            "resets_at": resets_at,
            "tier": view["tier"],
            "models_allowed": view["models_allowed"],
        },
    }
    if period in ("daily", "weekly", "monthly"):
        data[f"usage_{period}"] = usage
    return {"data": data}


async def agent_key(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    caller = identify(request, gate.config)
    agent_id = caller.policy.agent_id
    view = gate.ledger.view(agent_id)
    assert view is not None  # identify() found its policy, so the ledger has it
    body = key_view(view, gate.ledger.resets_at(agent_id))
    return web.Response(text=dumps(body), content_type="application/json")
