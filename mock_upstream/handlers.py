"""OpenRouter's read endpoints: `/models`, `/key`, `/generation`."""

from __future__ import annotations

from decimal import Decimal

from aiohttp import web

from . import wire
from .auth import auth_error
from .keys import MOCK_STATE


async def models(request: web.Request) -> web.Response:
    return web.json_response(wire.models_list())


async def key(request: web.Request) -> web.Response:
    state = request.app[MOCK_STATE]
    denied = auth_error(request, state)
    if denied is not None:
        return wire.error_response(401, denied)
    used = state.total_charged()
    limit = Decimal(str(state.key_limit))
    return web.json_response(
        {
            "data": {
                "label": "sk-or-...redacted",
                "limit": state.key_limit,
                "usage": float(used),
                "limit_remaining": float(limit - used),
                "is_free_tier": False,
                "rate_limit": {"requests": 1000, "interval": "10s"},
            }
        }
    )


async def generation(request: web.Request) -> web.Response:
    state = request.app[MOCK_STATE]
    denied = auth_error(request, state)
    if denied is not None:
        return wire.error_response(401, denied)
    gen_id = request.query.get("id", "")
    if not gen_id:
        return wire.error_response(400, "Missing generation id")
    record = state.visible_generation(gen_id)
    if record is None:
        return wire.error_response(404, "Generation not found")
    return web.json_response(wire.generation(record))
