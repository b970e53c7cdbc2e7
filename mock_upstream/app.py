"""`create_app`: the mock's state, request log, middlewares and route table."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from . import console, control, handlers, messages, wire
from .chat import chat_completions
from .completions import completions
from .embeddings import embeddings
from .keys import MOCK_STATE, REQUEST_LOG
from .reqlog import RequestLog
from .responses import responses
from .state import MockState

__all__ = ["MOCK_STATE", "create_app"]

MAX_BODY_BYTES = 64 * 1024 * 1024  # far above the gate's own limit, so the gate decides

_API_PREFIXES = ("/api/v1", "/v1")
_API_ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
    ("POST", "/chat/completions", chat_completions),
    ("POST", "/responses", responses),
    ("POST", "/messages", messages.messages),
    ("POST", "/completions", completions),
    ("POST", "/embeddings", embeddings),
    ("GET", "/models", handlers.models),
    ("GET", "/key", handlers.key),
    ("GET", "/generation", handlers.generation),
]
_CONTROL_ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
    ("POST", "/_mock/faults", control.add_faults),
    ("POST", "/_mock/reset", control.reset),
    ("GET", "/_mock/stats", control.stats),
    ("POST", "/_mock/config", control.configure),
    # console mode: the JetPatch console's calls, and their control
    ("POST", "/api/gate/spend", console.receive_spend),
    ("GET", "/api/gate/budgets", console.budgets),
    ("POST", "/_mock/console", console.control),
    ("GET", "/_mock/console", console.received),
]
_NOT_LOGGED = ("/_mock/", "/api/gate/")  # not OpenRouter's calls


@web.middleware
async def openrouter_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, 413, ...) in OpenRouter's error shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if _api_of(request.path) == "messages":
            return messages.error_response(exc.status, exc.reason)
        return wire.error_response(exc.status, exc.reason)


def _api_of(path: str) -> str | None:
    """`chat`, `responses`, `messages`, ... for an API path; None for any other."""
    for prefix in _API_PREFIXES:
        if path.startswith(prefix + "/"):
            rest = path[len(prefix) + 1 :]
            return "chat" if rest == "chat/completions" else rest
    return None


def _parsed(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


@web.middleware
async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every OpenRouter API request (not `/_mock/*`, not the console's `/api/gate/*`) is
    one line of the request log."""
    if not request.path.startswith(_NOT_LOGGED):
        raw = await request.read() if request.body_exists else b""
        request.app[REQUEST_LOG].write(
            request.method, request.path, _api_of(request.path), request.headers, _parsed(raw)
        )
    return await handler(request)


async def _request_log_ctx(app: web.Application) -> AsyncIterator[None]:
    app[REQUEST_LOG].open()
    try:
        yield
    finally:
        app[REQUEST_LOG].close()


def create_app(state: MockState | None = None, request_log: Path | None = None) -> web.Application:
    """The mock OpenRouter. `request_log=None` keeps no log file (state.requests still fills)."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES, middlewares=[openrouter_errors, log_requests]
    )
    app[MOCK_STATE] = state if state is not None else MockState()
    app[REQUEST_LOG] = RequestLog(request_log)
    app.cleanup_ctx.append(_request_log_ctx)
    for prefix in _API_PREFIXES:
        for method, path, handler in _API_ROUTES:
            app.router.add_route(method, prefix + path, handler)
    for method, path, handler in _CONTROL_ROUTES:
        app.router.add_route(method, path, handler)
    return app
