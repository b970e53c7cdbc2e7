"""The mock's own control endpoints (`/_mock/...`), for subprocess tests and the demo."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import wire
from .keys import MOCK_STATE
from .state import Fault


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(reason="body must be JSON") from exc


async def add_faults(request: web.Request) -> web.Response:
    """Body: a list of Fault field objects (or one object); appended to the FIFO queue."""
    state = request.app[MOCK_STATE]
    raw = await _json(request)
    items = raw if isinstance(raw, list) else [raw]
    try:
        faults = [Fault.from_dict(item) for item in items]
    except (TypeError, ValueError) as exc:
        return wire.error_response(400, str(exc))
    state.faults.extend(faults)
    return web.json_response({"queued": len(state.faults)})


async def reset(request: web.Request) -> web.Response:
    request.app[MOCK_STATE].reset()
    return web.json_response({"status": "reset"})


async def stats(request: web.Request) -> web.Response:
    state = request.app[MOCK_STATE]
    total = state.total_charged()
    return web.json_response(
        {
            "chat_requests": state.chat_count(),
            "requests_by_api": state.requests_by_api(),
            "total_charged": float(total),
            "total_charged_str": str(total),
            "generations": len(state.generations),
            "faults_queued": len(state.faults),
        }
    )


async def configure(request: web.Request) -> web.Response:
    state = request.app[MOCK_STATE]
    raw = await _json(request)
    try:
        state.configure(raw)
    except (TypeError, ValueError) as exc:
        return wire.error_response(400, str(exc))
    return web.json_response(state.config())
