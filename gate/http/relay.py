"""The answer's way back: one admitted request (`Call`), its upstream call, and the
non-streaming relay, the same for every API (its adapter says where usage is).
Whatever happens, the hold is settled exactly once: from usage, the price table,
OpenRouter's `/generation`, or else the hold itself (gate.http.stream has the streaming
relay)."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web

from gate.books.holds import Hold
from gate.books.lines import RequestLine
from gate.books.spendlog import SpendLogError
from gate.context import Gate
from gate.core.cost import ZERO, price_of, to_decimal, usage_cost, usage_tokens
from gate.core.jsonfmt import dumpb, finite_float, loads
from gate.core.router import Admission
from gate.core.scrub import scrub, scrub_bytes
from gate.http.apis import ApiRequest, upstream_body
from gate.http.errors import (
    UPSTREAM_CREDITS,
    UPSTREAM_ERROR,
    log_unavailable,
)
from gate.http.intake import Caller
from gate.http.limits import Ticket, answer_headers
from gate.upstream.client import UpstreamError, UpstreamUnreachable
from gate.upstream.sendmark import before_send

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's status for a client that left before the answer ended


@dataclass(slots=True)
class Call:
    """One admitted request on its way through the gate."""

    gate: Gate
    request: web.Request
    ask: ApiRequest
    caller: Caller
    admission: Admission
    hold: Hold
    line: RequestLine
    started: float
    usage: dict[str, Any] | None = None
    status: int = 200
    client_left: bool = False  # the client went before the answer ended
    ticket: Ticket | None = None  # what the rate limits counted for it

    def headers(self) -> dict[str, str]:
        agent_id = self.caller.policy.agent_id
        return {
            "X-Execwall-Agent": agent_id,
            "X-Execwall-Tier": self.admission.tier.name,
            "X-Execwall-Models-Allowed": ",".join(self.admission.tier.models),
            "X-Request-ID": self.hold.request_id,
            **answer_headers(self.gate, agent_id, self.ticket),
        }

    def execwall(self, cost: Decimal, remaining: Decimal | None) -> dict[str, Any]:
        info: dict[str, Any] = {
            "agent_id": self.caller.policy.agent_id,
            "request_id": self.hold.request_id,
            "cost": finite_float(cost),
            "budget_remaining": None if remaining is None else finite_float(remaining),
            "models_allowed": list(self.admission.tier.models),
            "tier": self.admission.tier.name,
        }
        if self.admission.clamped:
            info["max_tokens"] = self.admission.max_tokens
            info["max_tokens_clamped"] = True
        return info

    def error(
        self,
        status: int,
        type_: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """An error answer in this request's API's shape, with the gate's headers."""
        return self.ask.api.error_response(status, type_, message, headers or self.headers())

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
            if self.ask.stream:
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
        line = self.line
        line["tier"] = self.admission.tier.name
        line["models_allowed"] = list(self.admission.tier.models)
        line["stream"] = self.ask.stream
        line["status"] = self.status
        line["cost_source"] = source
        line["latency_ms"] = round(seconds * 1000, 3)
        if self.client_left:
            self.line["client_disconnected"] = True
        remaining = self.gate.ledger.settle(self.hold, cost, self.line)
        if self.ticket is not None:  # the tokens counted: the real ones from now on
            self.ticket.settled(self.line["prompt_tokens"] + self.line["completion_tokens"])
        self.gate.metrics.request(
            self.line["agent_id"],
            self.admission.tier.name,
            self.status,
            cost,
            seconds,
            self.ask.stream,
            model=self.line["model"],
            api=self.line["api"],
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
                prompt, completion = record.get("tokens_prompt"), record.get("tokens_completion")
                if isinstance(prompt, int):
                    self.line["prompt_tokens"] = prompt
                if isinstance(completion, int):
                    self.line["completion_tokens"] = completion
                return cost, self.settle(cost, "generation")
        return self.settle_now()


async def open_upstream(call: Call) -> aiohttp.ClientResponse | web.Response:
    """The upstream 200 response, or the error answer to give the client (settled)."""
    api = call.ask.api
    body = upstream_body(call.ask, call.admission.models, call.admission.max_tokens)
    metrics = call.gate.metrics
    try:
        return await call.gate.upstream.post(
            api.path,
            body,
            call.caller.authorization,
            on_retry=lambda status: metrics.retries.labels(str(status)).inc(),
            before_send=before_send(call.gate.ledger, call.hold),
            forwarded=call.caller.forwarded,
        )
    except SpendLogError as err:  # its send mark cannot be written: it was not sent
        call.status = 503
        call.settle(ZERO, "none")
        refusal = log_unavailable(str(err))
        return call.error(503, refusal.type, refusal.message, {**call.headers(), **refusal.headers})
    except UpstreamError as err:
        call.status = err.status
        call.settle(ZERO, "none")
        return _relayed_error(err, call)
    except UpstreamUnreachable as err:
        call.status = 504 if err.timed_out else 502
        call.settle(ZERO, "none")
        message = "upstream did not answer in time" if err.timed_out else "upstream unreachable"
        return call.error(call.status, UPSTREAM_ERROR, f"{message} ({err})")


def _relayed_error(err: UpstreamError, call: Call) -> web.Response:
    message = f"upstream answered {err.status}"
    try:  # OpenAI's shape and Anthropic's both name it `error.message`
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
    return call.error(err.status, kind, scrub(message, call.gate.secrets()), headers)


async def relay_json(call: Call) -> web.StreamResponse:
    try:
        opened = await open_upstream(call)
        if isinstance(opened, web.Response):
            return opened
        try:
            async with opened:
                raw = await opened.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            call.status = 504 if isinstance(exc, TimeoutError) else 502
            call.settle(call.hold.amount, "hold")
            return call.error(call.status, UPSTREAM_ERROR, "upstream answer was cut off")
        try:
            answer = loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            call.status = 502
            call.settle(call.hold.amount, "hold")
            return call.error(502, UPSTREAM_ERROR, "upstream answer is not JSON")
        facts = call.ask.api.answer(answer)
        call.note_generation(opened.headers.get("X-Generation-Id") or facts.generation_id)
        call.note_model(facts.model)
        if facts.error_status is not None:  # a 200 that carries an error (OpenRouter does this)
            call.status = facts.error_status
            raw = scrub_bytes(raw, call.gate.secrets())  # its message may echo a key
        call.usage = facts.usage
        cost, remaining = await call.settle_final()
        extra = dumpb({"_execwall": call.execwall(cost, remaining)})
        return web.Response(
            body=_splice(raw, extra),
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
