"""The door a browser cannot open: every request's `Host`, `Origin` and body type checked
before any route runs (inference, admin, dashboard, metrics).

A web page the operator opens can send a "simple" cross-site request (a form, or a fetch
with a `text/plain` body) without a CORS preflight, and a DNS-rebinding page reaches the
gate under a name of its own. So: a `Host` must name the gate (a loopback name, the
address the connection came in on, or one of `allowed_hosts`), an `Origin`, when sent,
must be the gate's own, and a POST body must be `application/json`. Agents and SDKs send
no `Origin`; the dashboard is served by the gate itself.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gate.config.hosts import host_name
from gate.http.errors import INVALID_REQUEST, PERMISSION, error_response

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
JSON = "application/json"


def _own_address(request: web.Request) -> str | None:
    """The local address the connection came in on (the bound host, or the one of all
    interfaces it was reached through)."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and sockname and isinstance(sockname[0], str):
        return sockname[0].lower().removeprefix("::ffff:")  # IPv4 on a dual-stack socket
    return None


def host_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    raw = request.headers.get("Host")
    if raw is None:  # HTTP/1.0 without Host: no browser sends that
        return True
    name = host_name(raw)
    if name is None:
        return False
    return name in LOOPBACK_NAMES or name in allowed or name == _own_address(request)


def origin_allowed(request: web.Request) -> bool:
    """No `Origin`, or the gate's own: the scheme is http(s) and its host and port are
    the (already checked) `Host` the request was sent to."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    host = request.headers.get("Host")
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or host is None or parts.path not in ("", "/"):
        return False
    default = ":80" if parts.scheme == "http" else ":443"
    netloc, host = parts.netloc.lower(), host.strip().lower()
    return netloc == host or netloc + default == host or netloc == host.removesuffix(default)


def body_type_allowed(request: web.Request) -> bool:
    """A POST's body is `application/json` (any parameters; none is no JSON). A POST
    without a body may say anything (clients send octet-stream on an empty POST)."""
    if request.method != "POST" or not request.body_exists:
        return True
    return "Content-Type" in request.headers and request.content_type == JSON


def door_middleware(allowed_hosts: Callable[[], tuple[str, ...]]) -> aiohttp.typedefs.Middleware:
    """The middleware; `allowed_hosts()` gives the configured names as of now (a reload
    may change them)."""

    @web.middleware
    async def door(request: web.Request, handler: aiohttp.typedefs.Handler) -> web.StreamResponse:
        if not host_allowed(request, allowed_hosts()):
            return error_response(
                403, PERMISSION, "Host is not this gate's address (see allowed_hosts)"
            )
        if not origin_allowed(request):
            return error_response(403, PERMISSION, "cross-origin requests are refused")
        if not body_type_allowed(request):
            return error_response(415, INVALID_REQUEST, "request body must be application/json")
        return await handler(request)

    return door
