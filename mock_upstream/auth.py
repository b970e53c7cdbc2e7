"""OpenRouter-style authentication for the mock's API endpoints."""

from __future__ import annotations

import hmac

from aiohttp import web

from .state import MockState


def auth_error(request: web.Request, state: MockState, *, x_api_key: bool = False) -> str | None:
    """None when the request may proceed, else the message of the 401 to answer.

    A bearer token, or (Anthropic's way, where `x_api_key`) an `x-api-key` header. Any
    key passes unless `state.expected_key` is set; then only that one.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    if not token and x_api_key:
        token = request.headers.get("x-api-key", "").strip()
    if not token:
        return "No auth credentials found"
    expected = state.expected_key
    if expected is not None and not hmac.compare_digest(token.encode(), expected.encode()):
        return "User not found."
    return None
