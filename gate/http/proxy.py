"""Every inference endpoint (`POST /v1/<api>`, one handler per API adapter) and
`GET /v1/models`: admission, then the relay.

Admission decides everything before a cent is spent — who calls, whether the body is
sound, which tier and models, and the hold — and every refusal still writes its line.
It is the same for every API; the adapter (`gate.http.apis`) reads the body.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gate.books.holds import Hold, HoldDefaults, HoldRequest
from gate.books.lines import RequestLine, request_line
from gate.books.refusals import reason_of
from gate.books.spendlog import SpendLogError
from gate.books.store import SpendStoreError, SpendStoreRefused
from gate.config import GateConfig
from gate.context import GATE, Gate
from gate.core.cost import ZERO
from gate.core.router import Admission, Refusal
from gate.http.apis import CHAT, ApiRequest, InferenceApi
from gate.http.errors import (
    INVALID_REQUEST,
    GateError,
    budget_refusal,
    log_unavailable,
    store_unavailable,
)
from gate.http.intake import Caller, agent_id_of, identify, read_json_object, task_of
from gate.http.limits import refusal_headers
from gate.http.relay import Call, relay_json
from gate.http.slots import Slot
from gate.http.stream import relay_stream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def inference(api: InferenceApi) -> Handler:
    """The endpoint of one API: the shared admission and relay, `api` reading its body."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _admit_and_relay(request, api)

    handler.__name__ = handler.__qualname__ = api.name
    return handler


async def _admit_and_relay(request: web.Request, api: InferenceApi) -> web.StreamResponse:
    gate = request.app[GATE]
    cfg = gate.config
    started = time.perf_counter()
    line = request_line(gate.ids.new(), api.name)
    known = False  # a known agent, authenticated: its refusals write their own lines
    ticket = None  # what the rate limits counted, undone if the request is refused later
    try:
        line["agent_id"] = agent_id_of(request)  # as claimed: a refusal names who tried
        task = task_of(request, gate.ledger.tasks)  # a task's key: its agent, its cap
        if task is not None:
            line["agent_id"], line["task_id"] = task.agent_id, task.task_id
        by_task = task is not None
        caller = identify(request, cfg, line["agent_id"], api.forwarded_headers, by_task=by_task)
        known = True
        body, size = await read_json_object(
            request,
            cfg.limits.max_body_bytes,
            cfg.limits.client_timeout_seconds,
            lambda raw: gate.bodies.check(raw, cfg.limits.max_json_values),
        )
        line["stream"] = body.get("stream") is True
        if gate.config is not cfg:  # reloaded while the body arrived: admitted under the new
            cfg = gate.config  # config, so a removed agent gets the unknown agent's 403
            caller = identify(
                request, cfg, line["agent_id"], api.forwarded_headers, by_task=by_task
            )
        ask = api.read(body, size, cfg.holds.max_tokens_ceiling)
        demand = ask.demand
        spend_log = gate.ledger.spend_log
        if spend_log.error is not None:
            raise log_unavailable(spend_log.error)
        if api.watches_loops:  # a runaway loop: 429 (gate.core.loops)
            gate.breaker.check(caller.policy, body, line, api.fingerprint)
        # 429 past a limit; on the Redis store one script call, shared by every instance
        ticket = await gate.limits.admit(gate.ledger, caller.policy, cfg, demand)
        admission, hold, slot = await _reserve(gate, cfg, request, api, ask, caller, line)
    except GateError as err:
        if known:  # the budget (and rate limits) a known agent can see, refused or not
            err.headers.update(refusal_headers(gate, caller.policy.agent_id, ticket))
        reason = None if known else reason_of(err.status, err.message)
        if err.logged_status is not None:
            line["client_status"] = err.status
        _refused(gate, line, err.logged_status or err.status, started, reason)
        raise
    call = Call(gate, request, ask, caller, admission, hold, line, started, ticket=ticket)
    return await gate.shielded(relay_stream(call) if ask.stream else relay_json(call), slot)


async def _reserve(
    gate: Gate,
    cfg: GateConfig,
    request: web.Request,
    api: InferenceApi,
    ask: ApiRequest,
    caller: Caller,
    line: RequestLine,
) -> tuple[Admission, Hold, Slot]:
    """Take a slot for the call and place its hold; or raise the GateError that refuses
    it, its slot given back (402 in the API's own shape for the budget's refusal)."""
    demand = ask.demand
    slot = gate.slots.take(  # synchronously: a burst cannot pass the check together
        caller.policy.agent_id,
        cfg.limits.max_concurrent_upstream,
        caller.policy.max_concurrent or cfg.limits.max_concurrent_per_agent,
    )
    try:
        outcome = await gate.ledger.reserve(
            caller.policy.agent_id,
            line["request_id"],
            HoldRequest(
                ask.model,
                gate.calibration.prompt_tokens(line["request_id"], demand.prompt_tokens),
                demand.max_tokens,
                cfg.holds.plugin_usd_per_request * demand.unpriced_plugins,
                demand.body,
                api.name,
                line.get("task_id"),
            ),
            gate.prices.prices,
            HoldDefaults(
                cfg.holds.unknown_model_usd_per_token,
                cfg.holds.default_max_tokens,
                cfg.holds.max_hold_usd,
            ),
        )
    except SpendStoreRefused as exc:  # this request's amounts, not the store's state
        slot.release()
        raise GateError(400, INVALID_REQUEST, str(exc)) from None
    except SpendStoreError as exc:
        slot.release()
        raise store_unavailable(str(exc)) from None
    except SpendLogError as exc:
        slot.release()
        raise log_unavailable(str(exc)) from None
    except BaseException:
        slot.release()
        raise
    if isinstance(outcome, Refusal):
        slot.release()
        if outcome.tier is not None:
            line["tier"] = outcome.tier.name
            line["models_allowed"] = list(outcome.tier.models)
        if outcome.status == 402:
            # a task's cap never resets; the agent's budget resets with its period
            agent_id = caller.policy.agent_id
            resets_at = None if "task_id" in line else gate.ledger.resets_at(agent_id)
            refusal = budget_refusal(caller.policy.agent_id, outcome.message, resets_at)
            raise api.budget_refusal(request.headers, refusal)
        raise GateError(outcome.status, INVALID_REQUEST, outcome.message)
    admission, hold = outcome
    return admission, hold, slot


chat_completions = inference(CHAT)


def _refused(
    gate: Gate, line: RequestLine, status: int, started: float, reason: str | None = None
) -> None:
    """The refusal's line; with a `reason` (no known agent authenticated) only counted
    into the next `refusals` line (`gate.books.refusals`)."""
    seconds = time.perf_counter() - started
    line["status"] = status
    line["latency_ms"] = round(seconds * 1000, 3)
    if reason is None:
        gate.ledger.refusals.record(line)
    else:
        gate.ledger.refusals.count_one(line, reason)
    gate.metrics.request(
        line["agent_id"], line["tier"], status, ZERO, seconds, line["stream"], api=line["api"]
    )


async def list_models(request: web.Request) -> web.Response:
    """The models the calling agent may use now: in OpenAI's list shape, or in
    Anthropic's when an Anthropic client asks (it sends `anthropic-version`)."""
    gate = request.app[GATE]
    caller = identify(request, gate.config)
    tier = gate.ledger.current_tier(caller.policy.agent_id)
    models = tier.models if tier is not None else ()
    headers = {"X-Execwall-Tier": tier.name if tier else "none"}
    if "anthropic-version" in request.headers:
        listed = [
            {"type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z"}
            for m in models
        ]
        return web.json_response(
            {
                "data": listed,
                "has_more": False,
                "first_id": models[0] if models else None,
                "last_id": models[-1] if models else None,
            },
            headers=headers,
        )
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": m.split("/", 1)[0]}
                for m in models
            ],
        },
        headers=headers,
    )
