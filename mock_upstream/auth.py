"""OpenRouter-style bearer authentication for the mock's API endpoints."""

from __future__ import annotations

import hmac

from aiohttp import web

from .state import MockState
from .wire import error_response


def auth_error(request: web.Request, state: MockState) -> web.Response | None:
    """None when the request may proceed, else the 401 to answer.

    Any bearer token passes unless `state.expected_key` is set; then only that one.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return error_response(401, "No auth credentials found")
    expected = state.expected_key
    if expected is not None and not hmac.compare_digest(token.encode(), expected.encode()):
        return error_response(401, "User not found.")
    return None
