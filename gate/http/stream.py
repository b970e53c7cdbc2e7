"""Streaming relays: upstream's SSE bytes to the client as they arrive, unchanged.

A side parser watches the events go by; the API's `Watch` reads the generation id, an
error event and the usage from the few events that can carry them — the one event that
carries the final usage is the only one the gate may rewrite (to add `_execwall`) or
hold back (chat, when the client did not ask for usage). A client that leaves mid-stream is still
billed: the gate reads on to the usage chunk within `drain_timeout_seconds`, then asks
`/generation`, and only then charges the hold.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from gate.core.jsonfmt import dumpb, loads
from gate.core.scrub import scrub_bytes
from gate.core.sse import Event, SSEParser, is_done
from gate.http.apis.base import Watch, splice_event
from gate.http.errors import UPSTREAM_ERROR
from gate.http.relay import CLIENT_CLOSED, Call, open_upstream

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
STALL_CHECK_BYTES = 16 * 1024  # unsent bytes queued for a client before writes get a deadline


@dataclass(slots=True)
class _Stream:
    call: Call
    out: web.StreamResponse
    watch: Watch
    client_ok: bool = True
    done: bool = False
    seen_data: bool = False
    parser: SSEParser = field(default_factory=SSEParser)

    async def send(self, data: bytes) -> None:
        if not self.client_ok or not data:
            return
        transport = self.call.request.transport
        try:
            queued = 0 if transport is None else transport.get_write_buffer_size()
            if queued + len(data) < STALL_CHECK_BYTES:
                await self.out.write(data)  # the common case: the client keeps up
                return
            # The client is not reading: a write may wait for it, but not forever.
            async with asyncio.timeout(self.call.gate.config.limits.client_timeout_seconds):
                await self.out.write(data)
        except (ConnectionResetError, RuntimeError):
            self.client_ok = False
        except TimeoutError:
            self.client_ok = False
            if transport is not None:
                transport.abort()

    def events_out(self, chunk: bytes) -> bytes:
        """Feed a chunk; return the bytes to relay (usually the complete events, unchanged)."""
        return self._relayed(self.parser.feed(chunk))

    def tail_out(self) -> bytes:
        """At upstream's end: the last event, even one that lacks its blank line."""
        return self._relayed(self.parser.finish())

    @property
    def error(self) -> dict[str, Any] | None:
        return self.watch.error

    def finished(self) -> bool:
        """The answer's proper end was seen: [DONE], or the API's last event (usage)."""
        return self.done or self.watch.final

    def ended(self) -> str:
        """How a stream that upstream closed ended: properly ("done") or not ("eof")."""
        return "done" if self.finished() else "eof"

    def _relayed(self, events: list[Event]) -> bytes:
        if not events:
            return b""
        parts: list[bytes] = []
        wants = self.watch.wants
        for event in events:
            raw = event.raw
            chunk: dict[str, Any] | None = None
            if not self.seen_data and event.data is not None:
                self.seen_data = True
                self.call.gate.metrics.first_chunk.observe(time.perf_counter() - self.call.started)
                chunk = _parsed(event.data)
                if chunk is not None:
                    self.watch.first(chunk)
                    self.call.note_generation(self.watch.generation_id)
                    self.call.note_model(self.watch.model)
            if wants(raw):
                replaced = self._examine(raw, chunk or _parsed(event.data))
                if replaced is not None:
                    parts.append(replaced)
                    continue
            elif b"[DONE]" in raw and is_done(event):
                self.done = True
            parts.append(raw)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _examine(self, raw: bytes, chunk: dict[str, Any] | None) -> bytes | None:
        """Read an event that may carry usage or an error; return its replacement (b""
        to hold it back) or None to relay it unchanged."""
        if chunk is None:
            return None
        watch, call = self.watch, self.call
        seen_error = watch.error
        carrier = watch.see(chunk)
        call.note_model(watch.model)
        replaced: bytes | None = None
        if watch.error is not seen_error:  # an error event's message may echo a key
            call.status = watch.error_status
            replaced = raw = scrub_bytes(raw, call.gate.secrets())
        if watch.usage is not None:
            call.usage = watch.usage
        if not carrier:
            return replaced
        if not call.ask.wants_usage:
            return b""
        cost, _ = call.known_cost()
        note = call.execwall(cost, call.gate.ledger.projected_remaining(call.hold, cost))
        extra = dumpb({"_execwall": note})
        return splice_event(raw, extra) or raw


def _parsed(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        chunk = loads(data)
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None


async def relay_stream(call: Call) -> web.StreamResponse:
    metrics = call.gate.metrics
    try:
        opened = await open_upstream(call)
        if isinstance(opened, web.Response):
            return opened
        # OpenRouter names the generation in a header, before any event: known from here
        # on, it bills a stream that dies before its first chunk (or a crash) exactly.
        call.note_generation(opened.headers.get("X-Generation-Id"))
        out = web.StreamResponse(status=200, headers={**SSE_HEADERS, **call.headers()})
        stream = _Stream(call, out, call.ask.api.watch())
        metrics.streams.inc()
        try:
            async with opened:
                try:
                    await out.prepare(call.request)
                except (ConnectionResetError, RuntimeError):
                    stream.client_ok = False
                ended = await _pump(stream, opened)
            await _finish(stream, ended)
        finally:
            metrics.streams.dec()
        await _settle_stream(stream)
        return out
    finally:
        if not call.hold.settled:
            call.status = CLIENT_CLOSED
            call.settle(call.hold.amount, "hold")


async def _pump(stream: _Stream, upstream: aiohttp.ClientResponse) -> str:
    """Relay until upstream ends; after the client left, drain for the usage chunk.
    Returns how upstream ended: "done", "eof", "timeout" or "cut"."""
    content = upstream.content
    try:
        while stream.client_ok:
            chunk = await content.readany()
            if not chunk:
                await stream.send(stream.tail_out())
                return stream.ended()
            await stream.send(stream.events_out(chunk))
        stream.call.client_left = True
        if stream.finished():
            return "done"
        async with asyncio.timeout(stream.call.gate.config.openrouter.drain_timeout_seconds):
            while chunk := await content.readany():
                stream.events_out(chunk)
                if stream.finished():
                    return "done"
        stream.tail_out()
        return stream.ended()
    except TimeoutError:
        return "timeout"
    except aiohttp.ClientError:
        return "cut"


async def _finish(stream: _Stream, ended: str) -> None:
    """End the client's stream: as upstream ended it, or with an error event."""
    if not stream.client_ok:
        return
    if ended != "done" and stream.error is None:
        status, message = (
            (504, "upstream went silent mid-stream")
            if ended == "timeout"
            else (502, "upstream stream ended before completion")
        )
        stream.call.status = status
        event = stream.call.ask.api.error_event(
            status, UPSTREAM_ERROR, message, stream.watch.generation_id
        )
        await stream.send(event)
    if stream.client_ok:
        try:
            await stream.out.write_eof()
        except (ConnectionResetError, RuntimeError):
            stream.client_ok = False


async def _settle_stream(stream: _Stream) -> None:
    call = stream.call
    if not stream.client_ok:
        call.client_left = True
        if call.status == 200:  # what upstream said (an error status) stays on the line
            call.status = CLIENT_CLOSED
    await call.settle_final()
