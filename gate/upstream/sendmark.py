"""The send mark: a request's last line before it can reach upstream.

A hold line is on disk before a request goes upstream, but a crash can land between
that line and the request's first byte on the wire (a burst of requests still waiting
to be connected). So the upstream session's connection hooks wait, once per request,
for a durable `{"event": "sent"}` line naming the request — after the connection to
upstream is made, just before the request is written on it. A crash recovery that finds
a hold promising this mark (`"sent": false`) without it knows the request never left the
gate, and charges it nothing (gate.books.reconcile). It costs one more group-committed line per
request; the request waits for it only as long as for its hold line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from gate.books.holds import Hold
from gate.books.ledger import Ledger

BeforeSend = Callable[[], Awaitable[None]]


def send_mark_trace() -> aiohttp.TraceConfig:
    """The trace config the upstream session needs: runs a request's `before_send`
    (passed as its `trace_request_ctx`) when its connection is ready."""
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(_before_send)
    trace.on_connection_reuseconn.append(_before_send)
    return trace


async def _before_send(_session: aiohttp.ClientSession, ctx: Any, _params: object) -> None:
    before_send = ctx.trace_request_ctx
    if callable(before_send):
        await before_send()


def before_send(ledger: Ledger, hold: Hold) -> BeforeSend:
    """Waits until the hold's send mark is on disk (SpendLogError when it cannot be)."""

    async def wait() -> None:
        written = ledger.mark_sent(hold)
        if written is not None:
            await written

    return wait
