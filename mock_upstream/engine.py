"""What every inference API of the mock shares: plan, fault, bill, stream or reply.

An API module (chat, responses, messages, completions, embeddings) is an `Api`: it reads
its own request fields into an `Ask`, and renders its own bodies and SSE frames. The
engine does the rest the same way for all of them — authentication, the queued `Fault`
(status, Retry-After, hang, delays, keep-alives, stalls, cuts, mid-stream errors, usage
without cost), the token counts, the bill, the generation id in `X-Generation-Id`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from . import wire
from .auth import auth_error
from .keys import MOCK_STATE
from .plan import Ask, Done, Plan, PlanError, counts, make_plan
from .prices import cost_of
from .reqlog import redact_headers
from .state import Fault, MockState

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.02  # how often a waiting stream looks whether its client is still there
MID_STREAM_ERROR = "Provider disconnected unexpectedly"


class Api:
    """One inference API's shapes. Subclasses override what differs from chat's."""

    name = "chat"
    id_prefix = "gen-"
    accepts_x_api_key = False

    def ask(self, body: dict[str, Any], fault: Fault) -> Ask:
        """The request's fields (PlanError -> 400); `fault` for API-specific ones."""
        raise NotImplementedError

    def error(
        self, status: int, message: str | None = None, retry_after: float | None = None
    ) -> web.Response:
        return wire.error_response(status, message, retry_after)

    def opening(self, plan: Plan) -> list[bytes]:
        """Frames sent right after the opening comment, before any token."""
        return []

    def delta(self, plan: Plan, index: int, text: str) -> bytes:
        raise NotImplementedError

    def closing(self, plan: Plan, done: Done) -> list[bytes]:
        """The frames after the last token, `done.error` set for a mid-stream error."""
        raise NotImplementedError

    def body(self, plan: Plan, done: Done) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of a non-streamed answer."""
        raise NotImplementedError


def _bill(
    api: Api, state: MockState, plan: Plan, tokens: int, *, cancelled: bool, finish: str
) -> None:
    state.record_generation(
        plan.reply.gen_id,
        model=plan.reply.model,
        cost=cost_of(plan.price, plan.prompt_tokens, tokens),
        tokens_prompt=plan.prompt_tokens,
        tokens_completion=tokens,
        streamed=plan.ask.stream,
        cancelled=cancelled,
        finish_reason=finish,
        provider=plan.reply.provider,
        api=api.name,
    )


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _cut(request: web.Request) -> None:
    """Close the connection under the response: the client sees a truncated answer."""
    if request.transport is not None:
        request.transport.close()


def _cuts(fault: Fault) -> bool:
    """A `cut_after` fault applies unless an `error_after` fault strikes first."""
    if fault.cut_after is None:
        return False
    return fault.error_after is None or fault.cut_after <= fault.error_after


def _stop_at(plan: Plan) -> int:
    stop_at = plan.completion_tokens
    for limit in (plan.fault.cut_after, plan.fault.error_after):
        if limit is not None:
            stop_at = min(stop_at, limit)
    return stop_at


def _text(plan: Plan, tokens: int) -> str:
    return "".join(wire.token_text(i, plan.fault.long_line) for i in range(tokens))


async def serve(request: web.Request, api: Api) -> web.StreamResponse:
    """The handler of every inference API: `api` says how its bodies look."""
    state = request.app[MOCK_STATE]
    raw = await request.read()
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = None
    state.requests.append(
        {
            "api": api.name,
            "path": request.path,
            "headers": redact_headers(request.headers),
            "body": body,
        }
    )
    denied = auth_error(request, state, x_api_key=api.accepts_x_api_key)
    if denied is not None:
        return api.error(401, denied)
    if not isinstance(body, dict):
        return api.error(400, "Request body must be a JSON object")
    fault = state.next_fault()
    if fault.hang:
        try:
            await _pause(request, fault.hang)
        except ConnectionResetError:
            return web.Response()  # nobody to answer; nothing was generated
    if fault.status is not None:
        return api.error(fault.status, fault.message, fault.retry_after)
    try:
        plan = make_plan(api, body, len(raw), fault, state.default_chunks)
    except PlanError as exc:
        return api.error(400, exc.message)
    if plan.ask.stream:
        return await _stream(request, api, state, plan)
    return await _complete(request, api, state, plan)


async def _complete(
    request: web.Request, api: Api, state: MockState, plan: Plan
) -> web.StreamResponse:
    fault = plan.fault
    tokens = _stop_at(plan)
    await asyncio.sleep(fault.first_delay + fault.chunk_delay * tokens)
    if _cuts(fault):
        _bill(api, state, plan, tokens, cancelled=True, finish="cut")
        _cut(request)
        return web.Response()
    errored = fault.error_after is not None
    finish = "error" if errored else plan.finish_reason
    _bill(api, state, plan, tokens, cancelled=_client_gone(request), finish=finish)
    done = Done(
        tokens=tokens,
        text=_text(plan, tokens),
        finish=finish,
        usage=counts(plan, tokens, with_cost=plan.ask.cost_in_body),
        error=(fault.message or MID_STREAM_ERROR) if errored else None,
    )
    status, body = api.body(plan, done)
    return web.json_response(body, status=status, headers={"X-Generation-Id": plan.reply.gen_id})


async def _pause(request: web.Request, seconds: float) -> None:
    """Sleep, but raise ConnectionResetError as soon as the client has left: a provider
    stops generating (and billing) when its caller goes away, not when it next writes."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        await asyncio.sleep(max(0.0, min(end - loop.time(), _POLL_SECONDS)))
        if _client_gone(request):
            raise ConnectionResetError("client left")
        if loop.time() >= end:
            return


async def _quiet(
    request: web.Request, resp: web.StreamResponse, seconds: float, keepalive: float | None
) -> None:
    """Stay silent for `seconds`, but for a keep-alive comment every `keepalive` seconds."""
    remaining = seconds
    while keepalive and remaining > keepalive:
        await _pause(request, keepalive)
        remaining -= keepalive
        await resp.write(wire.COMMENT)
    if remaining > 0:
        await _pause(request, remaining)


async def _stream(
    request: web.Request, api: Api, state: MockState, plan: Plan
) -> web.StreamResponse:
    fault = plan.fault
    resp = web.StreamResponse(headers={**wire.SSE_HEADERS, "X-Generation-Id": plan.reply.gen_id})
    stop_at = _stop_at(plan)
    generated = 0
    billed = False
    started = False
    try:
        await resp.prepare(request)
        started = True
        await resp.write(wire.COMMENT + b"".join(api.opening(plan)))
        await _quiet(request, resp, fault.first_delay, fault.keepalive)
        for index in range(stop_at):
            if index:
                await _pause(request, fault.chunk_delay)
            if index == fault.stall_after:
                await _quiet(request, resp, fault.stall, fault.keepalive)
            generated += 1
            await resp.write(api.delta(plan, index, wire.token_text(index, fault.long_line)))
        if fault.stall_after is not None and fault.stall_after >= stop_at:
            await _quiet(request, resp, fault.stall, fault.keepalive)
        if _cuts(fault):
            billed = True
            _bill(api, state, plan, generated, cancelled=True, finish="cut")
            _cut(request)
            return resp
        errored = fault.error_after is not None
        finish = "error" if errored else plan.finish_reason
        billed = True
        _bill(api, state, plan, generated, cancelled=False, finish=finish)
        done = Done(
            tokens=generated,
            text=_text(plan, generated),
            finish=finish,
            usage=counts(plan, generated, with_cost=True) if plan.ask.stream_usage else None,
            error=(fault.message or MID_STREAM_ERROR) if errored else None,
        )
        for frame in api.closing(plan, done):
            await resp.write(frame)
    except ConnectionResetError:
        log.debug("client left generation %s after %d chunks", plan.reply.gen_id, generated)
    finally:
        if started and not billed:
            _bill(api, state, plan, generated, cancelled=True, finish="cancelled")
    return resp
