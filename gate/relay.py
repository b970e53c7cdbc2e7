"""The answer's way back: relay upstream to the client and settle the hold, always.

Streaming relays upstream's bytes as they arrive, event by event and unchanged; a side
parser watches for the generation id, an error event and the final usage chunk (the
only event the gate may rewrite or hold back). A client that leaves mid-stream is
still billed: the gate reads on to the usage chunk, within `drain_timeout_seconds`,
then asks `/generation`, and only then charges the hold.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web

from .context import Gate
from .cost import ZERO, price_of, to_decimal, usage_cost, usage_tokens
from .errors import (
    UPSTREAM_CREDITS,
    UPSTREAM_ERROR,
    error_response,
    sse_error_event,
)
from .intake import Caller, ChatRequest, upstream_body
from .ledger import Hold
from .router import Admission
from .scrub import scrub, scrub_bytes
from .sse import SSEParser, is_done
from .upstream import UpstreamError, UpstreamUnreachable

log = logging.getLogger(__name__)

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
CLIENT_CLOSED = 499  # nginx's status for a client that left before the answer ended
STALL_CHECK_BYTES = 16 * 1024  # unsent bytes queued for a client before writes get a deadline


@dataclass(slots=True)
class Call:
    """One admitted request on its way through the gate."""

    gate: Gate
    request: web.Request
    chat: ChatRequest
    caller: Caller
    admission: Admission
    hold: Hold
    line: dict[str, Any]
    started: float
    usage: dict[str, Any] | None = None
    status: int = 200
    flags: dict[str, Any] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        return {
            "X-Execwall-Agent": self.caller.policy.agent_id,
            "X-Execwall-Tier": self.admission.tier.name,
            "X-Execwall-Models-Allowed": ",".join(self.admission.tier.models),
            "X-Request-ID": self.hold.request_id,
        }

    def execwall(self, cost: Decimal, remaining: Decimal | None) -> dict[str, Any]:
        info: dict[str, Any] = {
            "agent_id": self.caller.policy.agent_id,
            "request_id": self.hold.request_id,
            "cost": float(cost),
            "budget_remaining": None if remaining is None else float(remaining),
            "models_allowed": list(self.admission.tier.models),
            "tier": self.admission.tier.name,
        }
        if self.admission.clamped:
            info["max_tokens"] = self.admission.max_tokens
            info["max_tokens_clamped"] = True
        return info

    def note_model(self, model: object) -> None:
        if not isinstance(model, str) or self.line["model"] is not None:
            return
        self.line["model"] = model
        if model not in self.admission.tier.models:
            self.line["model_mismatch"] = True
            log.warning(
                "upstream answered %s with a model outside tier %s",
                self.hold.request_id,
                self.admission.tier.name,
            )

    def note_generation(self, generation_id: object) -> None:
        if isinstance(generation_id, str) and self.line["generation_id"] is None:
            self.line["generation_id"] = generation_id
            if self.chat.stream:
                self.gate.ledger.name_generation(self.hold, generation_id)

    def price_table_cost(self) -> Decimal | None:
        """Usage tokens at the answering model's price, when usage carried no cost."""
        model = self.line["model"]
        if self.usage is None or model is None or model not in self.gate.prices.prices:
            return None
        prompt, completion = usage_tokens(self.usage)
        return price_of(self.gate.prices.prices, model, ZERO).cost(prompt, completion)

    def settle(self, cost: Decimal, source: str) -> Decimal | None:
        if self.usage is not None:
            self.line["prompt_tokens"], self.line["completion_tokens"] = usage_tokens(self.usage)
        seconds = time.perf_counter() - self.started
        self.line.update(
            tier=self.admission.tier.name,
            models_allowed=list(self.admission.tier.models),
            stream=self.chat.stream,
            status=self.status,
            cost_source=source,
            latency_ms=round(seconds * 1000, 3),
            **self.flags,
        )
        remaining = self.gate.ledger.settle(self.hold, cost, self.line)
        self.gate.metrics.request(
            self.line["agent_id"],
            self.admission.tier.name,
            self.status,
            cost,
            seconds,
            self.chat.stream,
            model=self.line["model"],
        )
        return remaining

    def settle_now(self) -> tuple[Decimal, Decimal | None]:
        """Settle from what is known right now: usage, the price table, else the hold."""
        cost, source = self.known_cost()
        return cost, self.settle(cost, source)

    def known_cost(self) -> tuple[Decimal, str]:
        if self.usage is not None:
            reported = usage_cost(self.usage)
            if reported is not None:
                return reported, "usage"
        priced = self.price_table_cost()
        if priced is not None:
            return priced, "price_table"
        return self.hold.amount, "hold"

    async def settle_final(self) -> tuple[Decimal, Decimal | None]:
        """Settle once the answer has ended: from usage or the price table when they give
        a cost, else from OpenRouter's record of the generation, else the hold."""
        generation_id = self.line["generation_id"]
        if generation_id is not None and self.known_cost()[1] == "hold":
            record = await self.gate.upstream.generation(generation_id, self.caller.authorization)
            cost = to_decimal(record.get("total_cost")) if record is not None else None
            if record is not None and cost is not None:
                for key, field_name in (
                    ("tokens_prompt", "prompt_tokens"),
                    ("tokens_completion", "completion_tokens"),
                ):
                    if isinstance(record.get(key), int):
                        self.line[field_name] = record[key]
                return cost, self.settle(cost, "generation")
        return self.settle_now()


async def _open_upstream(call: Call) -> aiohttp.ClientResponse | web.Response:
    """The upstream 200 response, or the error answer to give the client (settled)."""
    body = upstream_body(call.chat, call.admission.models, call.admission.max_tokens)
    metrics = call.gate.metrics
    try:
        return await call.gate.upstream.chat(
            body,
            call.caller.authorization,
            on_retry=lambda status: metrics.retries.labels(str(status)).inc(),
        )
    except UpstreamError as err:
        call.status = err.status
        call.settle(ZERO, "none")
        return _relayed_error(err, call)
    except UpstreamUnreachable as err:
        call.status = 504 if err.timed_out else 502
        call.settle(ZERO, "none")
        message = "upstream did not answer in time" if err.timed_out else "upstream unreachable"
        return error_response(call.status, UPSTREAM_ERROR, f"{message} ({err})", call.headers())


def _relayed_error(err: UpstreamError, call: Call) -> web.Response:
    message = f"upstream answered {err.status}"
    try:
        found = json.loads(err.body)
        inner = found.get("error") if isinstance(found, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            message = inner["message"]
    except ValueError:
        pass
    kind = UPSTREAM_CREDITS if err.status == 402 and err.retry_after is None else UPSTREAM_ERROR
    headers = call.headers()
    if err.retry_after is not None:
        headers["Retry-After"] = str(math.ceil(err.retry_after))
    return error_response(err.status, kind, scrub(message, call.gate.secrets()), headers)


async def relay_json(call: Call) -> web.StreamResponse:
    try:
        opened = await _open_upstream(call)
        if isinstance(opened, web.Response):
            return opened
        try:
            async with opened:
                raw = await opened.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            call.status = 504 if isinstance(exc, TimeoutError) else 502
            call.settle(call.hold.amount, "hold")
            return error_response(
                call.status, UPSTREAM_ERROR, "upstream answer was cut off", call.headers()
            )
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            call.status = 502
            call.settle(call.hold.amount, "hold")
            return error_response(
                502, UPSTREAM_ERROR, "upstream answer is not JSON", call.headers()
            )
        call.note_generation(answer.get("id"))
        call.note_model(answer.get("model"))
        error = answer.get("error")
        if isinstance(error, dict):  # a 200 that carries an error (OpenRouter does this)
            code = error.get("code")
            call.status = code if isinstance(code, int) and 400 <= code < 600 else 502
            raw = scrub_bytes(raw, call.gate.secrets())  # its message may echo a key
        usage = answer.get("usage")
        call.usage = usage if isinstance(usage, dict) else None
        cost, remaining = await call.settle_final()
        extra = json.dumps({"_execwall": call.execwall(cost, remaining)}, separators=(",", ":"))
        return web.Response(
            body=_splice(raw, extra.encode()),
            content_type="application/json",
            headers=call.headers(),
        )
    finally:
        if not call.hold.settled:  # cancelled, or a bug: never leave a hold open
            call.status = CLIENT_CLOSED
            call.settle(call.hold.amount, "hold")


def _splice(raw: bytes, extra_object: bytes) -> bytes:
    """Add the members of `extra_object` to the JSON object `raw` without re-serialising it."""
    body = raw.rstrip()
    if body.endswith(b"{}") and body.strip() == b"{}":
        return extra_object
    return body[:-1] + b"," + extra_object[1:]


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
        events = self.parser.feed(chunk)
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
        opened = await _open_upstream(call)
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
                return "done" if stream.done else "eof"
            await stream.send(stream.events_out(chunk))
        stream.call.flags["client_disconnected"] = True
        if stream.call.usage is not None or stream.done:
            return "done"
        async with asyncio.timeout(stream.call.gate.config.openrouter.drain_timeout_seconds):
            while chunk := await content.readany():
                stream.events_out(chunk)
                if stream.call.usage is not None:
                    return "done"
        return "done" if stream.done else "eof"
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
        call.status = CLIENT_CLOSED
    await call.settle_final()
