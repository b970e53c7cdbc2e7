"""Pure planning of one answer: the model, the token counts, what is reported.

Shared by every inference API: `make_plan` reads the common fields (`model`, `models`)
and asks the API (`Api.ask`) for its own; nothing here touches the network.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import wire
from .prices import PRICES, ModelPrice, cost_of, count_prompt_tokens, provider_name
from .state import Fault

if TYPE_CHECKING:
    from .engine import Api

MAX_MODELS = 3


class PlanError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Ask:
    """What an API's request asks for, in the engine's terms."""

    prompt: Any  # the part of the body whose size makes the prompt tokens
    max_tokens: int | None
    stream: bool
    cost_in_body: bool  # a non-streamed answer reports its cost
    stream_usage: bool  # a streamed answer reports usage (with cost)
    generates: bool = True  # False: embeddings, no completion tokens
    extra: dict[str, Any] = field(default_factory=dict)  # API-specific (tools, inputs)


@dataclass(frozen=True)
class Plan:
    """Everything decided about one answer before a byte of it is sent."""

    reply: wire.Reply
    price: ModelPrice
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"; each API names it its own way
    ask: Ask
    fault: Fault


@dataclass(frozen=True)
class Counts:
    """Usage to report: tokens, and the cost unless it is withheld (None)."""

    prompt: int
    completion: int
    cost: Decimal | None
    price: ModelPrice


@dataclass(frozen=True)
class Done:
    """How an answer ended, for the API to render its last frames or its body."""

    tokens: int
    text: str
    finish: str  # "stop", "length" or "error"
    usage: Counts | None  # None: no usage reported
    error: str | None = None  # the mid-stream error's message


def pick_model(body: dict[str, Any]) -> str:
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


def token_limit(body: dict[str, Any], *names: str) -> int | None:
    """The first of the `names` fields present: a non-negative integer, or PlanError."""
    value = next((body[name] for name in names if body.get(name) is not None), None)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PlanError(f"{names[0]} must be a non-negative integer")
    return value


def flag(obj: Any, name: str) -> bool:
    return isinstance(obj, dict) and obj.get(name) is True


def make_plan(api: Api, body: dict[str, Any], body_size: int, fault: Fault, chunks: int) -> Plan:
    """Pure: the model that answers, token counts and what to report (PlanError -> 400)."""
    model = pick_model(body)
    ask = api.ask(body, fault)
    answer = fault.answer_model or model
    wanted = (fault.chunks if fault.chunks is not None else chunks) if ask.generates else 0
    completion = wanted if ask.max_tokens is None else min(wanted, ask.max_tokens)
    return Plan(
        reply=wire.Reply(
            gen_id=f"{api.id_prefix}{int(time.time())}-{secrets.token_hex(10)}",
            model=answer,
            provider=provider_name(answer),
            created=int(time.time()),
        ),
        price=PRICES.get(answer, PRICES[model]),
        prompt_tokens=count_prompt_tokens(ask.prompt),
        completion_tokens=completion,
        finish_reason="length" if completion < wanted else "stop",
        ask=ask,
        fault=fault,
    )


def counts(plan: Plan, tokens: int, *, with_cost: bool) -> Counts | None:
    if plan.fault.no_usage:
        return None
    cost = None
    if with_cost and not plan.fault.no_cost:
        cost = cost_of(plan.price, plan.prompt_tokens, tokens)
    return Counts(plan.prompt_tokens, tokens, cost, plan.price)
