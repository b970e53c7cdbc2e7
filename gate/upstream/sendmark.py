"""The send mark: a request's last line before it can reach upstream.

A hold line is on disk before a request goes upstream, but a crash can land between
that line and the request's first byte on the wire (a burst of requests still waiting
to be connected). So the upstream connector waits, once per request,
for a durable `{"event": "sent"}` line naming the request — after the connection to
upstream is made, just before the request is written on it. A crash recovery that finds
a hold promising this mark (`"sent": false`) without it knows the request never left the
gate, and charges it nothing (gate.books.reconcile). It costs one more group-committed line per
request; the request waits for it only as long as for its hold line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

import aiohttp
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from gate.books.holds import Hold
from gate.books.store import SpendStore

BeforeSend = Callable[[], Awaitable[None]]

# The request being connected (set by `sending` around one POST): the connector reads it
# once its connection is ready. A context variable, not a TraceConfig: aiohttp's tracing
# builds a Trace and sends its ~8 (mostly empty) signals on every request (measured
# ~15 us per request); this costs one lookup.
_BEFORE_SEND: ContextVar[BeforeSend | None] = ContextVar("gate_before_send", default=None)


class SendMarkConnector(aiohttp.TCPConnector):
    """A TCPConnector that runs the current request's `before_send` once its connection
    is ready (new or reused), before the request is written on it."""

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> Connection:
        conn = await super().connect(req, traces, timeout)
        before_send = _BEFORE_SEND.get()
        if before_send is not None:
            try:
                await before_send()
            except BaseException:
                conn.release()  # nothing was written on it: it stays good for the next
                raise
        return conn


class sending:
    """Within: the connector runs `before_send` for the request being made. A class,
    not a generator: one is entered for every request."""

    __slots__ = ("_before_send", "_token")

    def __init__(self, before_send: BeforeSend | None) -> None:
        self._before_send = before_send

    def __enter__(self) -> None:
        self._token = _BEFORE_SEND.set(self._before_send)

    def __exit__(self, *_: object) -> None:
        _BEFORE_SEND.reset(self._token)


def before_send(ledger: SpendStore, hold: Hold) -> BeforeSend:
    """Waits until the hold's send mark is on disk (SpendLogError when it cannot be)."""

    async def wait() -> None:
        written = ledger.mark_sent(hold)
        if written is not None:
            await written

    return wait
