"""`POST /chat/completions`: plan the answer, apply the fault, bill, stream or reply."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web

from . import wire
from .auth import auth_error
from .keys import MOCK_STATE
from .prices import PRICES, ModelPrice, cost_of, count_prompt_tokens, provider_name
from .reqlog import redact_headers
from .state import Fault, MockState

log = logging.getLogger(__name__)

MAX_MODELS = 3
_POLL_SECONDS = 0.02  # how often a waiting stream looks whether its client is still there
_MID_STREAM_ERROR = "Provider disconnected unexpectedly"


class PlanError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Plan:
    """Everything decided about one answer before a byte of it is sent."""

    reply: wire.Reply
    price: ModelPrice
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    stream: bool
    usage_include: bool  # `usage: {include: true}`
    stream_usage: bool  # a usage chunk was asked for (usage.include or stream_options)
    fault: Fault


def _pick_model(body: dict[str, Any]) -> str:
    models = body.get("models")
    if models is not None:
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise PlanError("'models' must be an array of model IDs")
        if len(models) > MAX_MODELS:
            raise PlanError(f"'models' array must have {MAX_MODELS} items or fewer")
    candidates: list[Any] = models or [body.get("model")]
    if not isinstance(candidates[0], str) or not candidates[0]:
        raise PlanError("No models provided")
    for model in candidates:
        if model in PRICES:
            return str(model)
    raise PlanError(f"{candidates[0]} is not a valid model ID")


def _max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_tokens", body.get("max_completion_tokens"))
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PlanError("max_tokens must be a non-negative integer")
    return value


def _flag(obj: Any, name: str) -> bool:
    return isinstance(obj, dict) and obj.get(name) is True


def make_plan(body: dict[str, Any], body_size: int, fault: Fault, default_chunks: int) -> Plan:
    """Pure: the model that answers, token counts and what to report (PlanError -> 400)."""
    model = _pick_model(body)
    answer = fault.answer_model or model
    wanted = fault.chunks if fault.chunks is not None else default_chunks
    limit = _max_tokens(body)
    completion = wanted if limit is None else min(wanted, limit)
    usage_include = _flag(body.get("usage"), "include")
    return Plan(
        reply=wire.Reply(
            gen_id=f"gen-{int(time.time())}-{secrets.token_hex(10)}",
            model=answer,
            provider=provider_name(answer),
            created=int(time.time()),
        ),
        price=PRICES.get(answer, PRICES[model]),
        prompt_tokens=count_prompt_tokens(body.get("messages", []), body_size),
        completion_tokens=completion,
        finish_reason="length" if completion < wanted else "stop",
        stream=body.get("stream") is True,
        usage_include=usage_include,
        stream_usage=usage_include or _flag(body.get("stream_options"), "include_usage"),
        fault=fault,
    )


def _bill(
    state: MockState, plan: Plan, completion_tokens: int, *, cancelled: bool, finish: str
) -> Decimal:
    cost = cost_of(plan.price, plan.prompt_tokens, completion_tokens)
    state.record_generation(
        plan.reply.gen_id,
        model=plan.reply.model,
        cost=cost,
        tokens_prompt=plan.prompt_tokens,
        tokens_completion=completion_tokens,
        streamed=plan.stream,
        cancelled=cancelled,
        finish_reason=finish,
        provider=plan.reply.provider,
    )
    return cost


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


def _usage(plan: Plan, completion_tokens: int, *, with_cost: bool) -> dict[str, Any] | None:
    if plan.fault.no_usage:
        return None
    return wire.usage(
        plan.price,
        plan.prompt_tokens,
        completion_tokens,
        with_cost=with_cost and not plan.fault.no_cost,
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[MOCK_STATE]
    raw = await request.read()
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = None
    state.requests.append(
        {"path": request.path, "headers": redact_headers(request.headers), "body": body}
    )
    denied = auth_error(request, state)
    if denied is not None:
        return denied
    if not isinstance(body, dict):
        return wire.error_response(400, "Request body must be a JSON object")
    fault = state.next_fault()
    if fault.hang:
        try:
            await _pause(request, fault.hang)
        except ConnectionResetError:
            return web.Response()  # nobody to answer; nothing was generated
    if fault.status is not None:
        return wire.error_response(fault.status, fault.message, fault.retry_after)
    try:
        plan = make_plan(body, len(raw), fault, state.default_chunks)
    except PlanError as exc:
        return wire.error_response(400, exc.message)
    if plan.stream:
        return await _stream(request, state, plan)
    return await _complete(request, state, plan)


async def _complete(request: web.Request, state: MockState, plan: Plan) -> web.StreamResponse:
    fault = plan.fault
    tokens = plan.completion_tokens
    for limit in (fault.cut_after, fault.error_after):
        if limit is not None:
            tokens = min(tokens, limit)
    await asyncio.sleep(fault.first_delay + fault.chunk_delay * tokens)
    if _cuts(fault):
        _bill(state, plan, tokens, cancelled=True, finish="cut")
        _cut(request)
        return web.Response()
    errored = fault.error_after is not None
    finish = "error" if errored else plan.finish_reason
    _bill(state, plan, tokens, cancelled=_client_gone(request), finish=finish)
    body = wire.completion(
        plan.reply,
        "".join(wire.token_text(i, fault.long_line) for i in range(tokens)),
        finish,
        _usage(plan, tokens, with_cost=plan.usage_include),
        (fault.message or _MID_STREAM_ERROR) if errored else None,
    )
    return web.json_response(body, headers={"X-Generation-Id": plan.reply.gen_id})


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


async def _stream(request: web.Request, state: MockState, plan: Plan) -> web.StreamResponse:
    fault = plan.fault
    reply = plan.reply
    resp = web.StreamResponse(headers={**wire.SSE_HEADERS, "X-Generation-Id": reply.gen_id})
    stop_at = plan.completion_tokens
    for limit in (fault.cut_after, fault.error_after):
        if limit is not None:
            stop_at = min(stop_at, limit)
    generated = 0
    billed = False
    started = False
    try:
        await resp.prepare(request)
        started = True
        await resp.write(wire.COMMENT)
        await _quiet(request, resp, fault.first_delay, fault.keepalive)
        for index in range(stop_at):
            if index:
                await _pause(request, fault.chunk_delay)
            if index == fault.stall_after:
                await _quiet(request, resp, fault.stall, fault.keepalive)
            generated += 1
            await resp.write(wire.sse(wire.chunk(reply, wire.token_text(index, fault.long_line))))
        if fault.stall_after is not None and fault.stall_after >= stop_at:
            await _quiet(request, resp, fault.stall, fault.keepalive)
        if _cuts(fault):
            billed = True
            _bill(state, plan, generated, cancelled=True, finish="cut")
            _cut(request)
            return resp
        errored = fault.error_after is not None
        finish = "error" if errored else plan.finish_reason
        billed = True
        _bill(state, plan, generated, cancelled=False, finish=finish)
        if errored:
            last = wire.error_chunk(reply, fault.message or _MID_STREAM_ERROR)
        else:
            last = wire.chunk(reply, "", finish)
        await resp.write(wire.sse(last))
        usage = _usage(plan, generated, with_cost=True) if plan.stream_usage else None
        if usage is not None:
            await resp.write(wire.sse(wire.usage_chunk(reply, usage)))
        await resp.write(wire.DONE)
    except ConnectionResetError:
        log.debug("client left generation %s after %d chunks", reply.gen_id, generated)
    finally:
        if started and not billed:
            _bill(state, plan, generated, cancelled=True, finish="cancelled")
    return resp
