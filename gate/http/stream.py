"""Streaming relays: upstream's SSE bytes to the client as they arrive, unchanged.

A side parser watches the events go by for the generation id, an error event and the
final usage chunk — the only event the gate may rewrite (to add `_execwall`) or hold
back (when the client did not ask for usage). A client that leaves mid-stream is still
billed: the gate reads on to the usage chunk within `drain_timeout_seconds`, then asks
`/generation`, and only then charges the hold.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from gate.core.scrub import scrub_bytes
from gate.core.sse import Event, SSEParser, is_done
from gate.http.errors import UPSTREAM_ERROR, sse_error_event
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
    client_ok: bool = True
    done: bool = False
    seen_data: bool = False
    error: dict[str, Any] | None = None
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

    def ended(self) -> str:
        """How a stream that upstream closed ended: [DONE] or usage seen is a proper end."""
        return "done" if self.done or self.call.usage is not None else "eof"

    def _relayed(self, events: list[Event]) -> bytes:
        if not events:
            return b""
        parts: list[bytes] = []
        for event in events:
            raw = event.raw
            if not self.seen_data and event.data is not None:
                self.seen_data = True
                self.call.gate.metrics.first_chunk.observe(time.perf_counter() - self.call.started)
                self._first(event.data)
            if b'"usage"' in raw or b'"error"' in raw:
                seen_error = self.error
                replaced = self._examine(event.data)
                if self.error is not seen_error:  # an error event's message may echo a key
                    secrets = self.call.gate.secrets()
                    replaced = scrub_bytes(raw if replaced is None else replaced, secrets)
                if replaced is not None:
                    parts.append(replaced)
                    continue
            elif b"[DONE]" in raw and is_done(event):
                self.done = True
            parts.append(raw)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _first(self, data: bytes) -> None:
        try:
            chunk = json.loads(data)
        except ValueError:
            return
        if isinstance(chunk, dict):
            self.call.note_generation(chunk.get("id"))
            self.call.note_model(chunk.get("model"))

    def _examine(self, data: bytes | None) -> bytes | None:
        """Look at an event that may carry usage or an error; return its replacement
        (b"" to hold it back) or None to relay it unchanged."""
        if data is None:
            return None
        try:
            chunk = json.loads(data)
        except ValueError:
            return None
        if not isinstance(chunk, dict):
            return None
        error = chunk.get("error")
        if isinstance(error, dict):
            self.error = error
            code = error.get("code")
            self.call.status = code if isinstance(code, int) and 400 <= code < 600 else 502
        usage = chunk.get("usage")
        if not isinstance(usage, dict):
            return None
        call = self.call
        call.usage = usage
        call.note_model(chunk.get("model"))
        if chunk.get("choices"):
            return None  # usage riding on a content chunk: content is never dropped
        if not call.chat.wants_usage:
            return b""
        cost, _ = call.known_cost()
        chunk["_execwall"] = call.execwall(
            cost, call.gate.ledger.projected_remaining(call.hold, cost)
        )
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


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
        stream = _Stream(call, out)
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
        stream.call.flags["client_disconnected"] = True
        if stream.call.usage is not None or stream.done:
            return "done"
        async with asyncio.timeout(stream.call.gate.config.openrouter.drain_timeout_seconds):
            while chunk := await content.readany():
                stream.events_out(chunk)
                if stream.call.usage is not None:
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
        await stream.send(sse_error_event(status, UPSTREAM_ERROR, message))
    if stream.client_ok:
        try:
            await stream.out.write_eof()
        except (ConnectionResetError, RuntimeError):
            stream.client_ok = False


async def _settle_stream(stream: _Stream) -> None:
    call = stream.call
    if not stream.client_ok:
        call.flags["client_disconnected"] = True
        if call.status == 200:  # what upstream said (an error status) stays on the line
            call.status = CLIENT_CLOSED
    await call.settle_final()
