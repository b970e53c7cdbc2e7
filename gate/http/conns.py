"""File descriptors and connections: idle clients must not starve the gate.

Each client connection costs a descriptor, and so does each upstream call. At start the
soft RLIMIT_NOFILE is raised to the hard limit; open client connections are capped in
total (`limits.max_connections`, never more than half the descriptors left) and per
client address (`limits.max_connections_per_client`): the excess is closed the moment it
is accepted, before aiohttp sees it. When accept() still fails for want of descriptors,
asyncio reports it through the loop's exception handler on every retry; that is logged
once per interval, with a count.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any, cast

from aiohttp import web

log = logging.getLogger(__name__)

FD_RESERVE = 64  # descriptors kept for the spend log, Redis, Postgres, DNS, ...
MAX_SOFT_LIMIT = 1 << 20  # a hard limit of "unlimited" is raised to this
RESOURCE_LOG_SECONDS = 60.0  # one "out of system resource" line at most this often
RESOURCE_MESSAGE = "out of system resource"


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_SOFT_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return MAX_SOFT_LIMIT if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def connection_cap(configured: int, fd_limit: int) -> int:
    """At most `configured` client connections, and no more than half the descriptors
    left after the reserve: each admitted request may need an upstream socket too."""
    return max(1, min(configured, (fd_limit - FD_RESERVE) // 2))


class ConnectionCap:
    """The protocol factory given to `loop.create_server`: aiohttp's own, behind a count
    of open connections in total and per client address."""

    def __init__(self, inner: Any, total: int, per_client: int) -> None:
        self.inner = inner  # aiohttp's web.Server: calling it makes a RequestHandler
        self.total = total
        self.per_client = per_client
        self.open = 0
        self.by_client: dict[str, int] = {}
        self.refused = 0

    def __call__(self) -> asyncio.Protocol:
        return _Counted(self)

    def admit(self, client: str) -> bool:
        held = self.by_client.get(client, 0)
        if self.open >= self.total or held >= self.per_client:
            self.refused += 1
            return False
        self.open += 1
        self.by_client[client] = held + 1
        return True

    def release(self, client: str) -> None:
        self.open -= 1
        left = self.by_client.get(client, 1) - 1
        if left > 0:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)


class _Counted(asyncio.Protocol):
    """One accepted connection: closed at once when over the cap, else handed to
    aiohttp's handler, which gets every event from then on."""

    __slots__ = ("_cap", "_client", "_inner")

    def __init__(self, cap: ConnectionCap) -> None:
        self._cap = cap
        self._client: str | None = None
        self._inner: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._cap.admit(client):
            cast(asyncio.Transport, transport).abort()
            return
        self._client = client
        self._inner = self._cap.inner()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is None:
            return
        if self._client is not None:
            self._cap.release(self._client)
            self._client = None
        self._inner.connection_lost(exc)


class CappedRunner(web.AppRunner):
    """An AppRunner whose sites accept through a `ConnectionCap`."""

    def __init__(self, app: web.Application, total: int, per_client: int, **kw: Any) -> None:
        super().__init__(app, **kw)
        self._limits = (total, per_client)
        self._cap: ConnectionCap | None = None

    @property
    def server(self) -> Any:  # what the sites hand to loop.create_server
        inner = super().server
        if inner is None:
            return None
        if self._cap is None or self._cap.inner is not inner:
            self._cap = ConnectionCap(inner, *self._limits)
        return self._cap


class ResourceErrorLog:
    """A loop exception handler: "out of system resource" (accept() failing for want of
    descriptors, retried by asyncio every second per socket) at most once per interval,
    with the count since; everything else as asyncio logs it."""

    def __init__(self, interval: float = RESOURCE_LOG_SECONDS) -> None:
        self.interval = interval
        self.suppressed = 0
        self._last: float | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if RESOURCE_MESSAGE not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return
        exc = context.get("exception")
        log.error(
            "accept() failed: %s (%s); %d more such failures in the last %.0f s",
            context.get("message"),
            exc,
            self.suppressed,
            self.interval,
        )
        self._last, self.suppressed = now, 0
