"""Pure routing decisions: which tier an agent is in, which models go upstream, and
whether a request's hold fits. No clock, no I/O: tests call these with plain tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from .config import AgentPolicy, Tier
from .cost import ModelPrice, affordable_completion_tokens, worst_price

MAX_UPSTREAM_MODELS = 3  # OpenRouter refuses a longer `models` list


@dataclass(frozen=True, slots=True)
class Admission:
    tier: Tier
    models: tuple[str, ...]  # sent upstream, at most 3, all from the tier
    hold: Decimal
    max_tokens: int | None  # the max_tokens to send upstream; None leaves the client's as is
    clamped: bool  # the gate lowered (or set) max_tokens so the hold fits the budget


@dataclass(frozen=True, slots=True)
class Refusal:
    message: str
    tier: Tier | None


def remaining_fraction(budget_total: Decimal, committed: Decimal) -> Decimal:
    if budget_total <= 0:
        return Decimal(0)
    return (budget_total - committed) / budget_total


def choose_tier(
    tiers: Sequence[Tier], budget_total: Decimal, committed: Decimal, hard_cap: bool
) -> Tier | None:
    """The first tier (highest threshold first) whose threshold is below the remaining
    fraction; None when the budget is used up and capped."""
    if budget_total - committed <= 0:
        return None if hard_cap else tiers[-1]
    fraction = remaining_fraction(budget_total, committed)
    for tier in tiers:
        if fraction > tier.threshold:
            return tier
    return tiers[-1]


def upstream_models(tier: Tier, requested: str | None) -> tuple[str, ...]:
    """The client's model first when the tier has it (the exact id), then the tier's order."""
    if requested is not None and requested in tier.models:
        rest = tuple(m for m in tier.models if m != requested)
        return ((requested, *rest))[:MAX_UPSTREAM_MODELS]
    return tier.models[:MAX_UPSTREAM_MODELS]


def admit(
    policy: AgentPolicy,
    budget_total: Decimal,
    committed: Decimal,
    requested_model: str | None,
    prompt_tokens: int,
    max_tokens: int | None,
    prices: Mapping[str, ModelPrice],
    unknown_price: Decimal,
    default_max_tokens: int,
    extra_usd: Decimal = Decimal(0),
) -> Admission | Refusal:
    """Decide one request: its tier, its upstream models and the hold it must place.

    With a hard cap the hold must fit what is left; a request whose `max_tokens` (or the
    default, when it set none) would not fit is clamped to what the budget pays for, and
    refused only when not even its prompt (and `extra_usd`, a per-request charge such as
    a web-search plugin's) fits.
    """
    tier = choose_tier(policy.tiers, budget_total, committed, policy.hard_cap)
    if tier is None:
        return Refusal("budget exhausted for this period", None)
    models = upstream_models(tier, requested_model)
    price = worst_price(prices, models, unknown_price)
    if extra_usd:
        price = replace(price, request=price.request + extra_usd)
    completion = max_tokens if max_tokens is not None else default_max_tokens
    if not policy.hard_cap:
        hold = price.cost(prompt_tokens, completion)
        return Admission(tier, models, hold, None, False)
    left = budget_total - committed
    affordable = affordable_completion_tokens(price, prompt_tokens, left)
    if affordable < 1:
        return Refusal("remaining budget cannot cover this request", tier)
    if completion > affordable:
        completion = affordable
    clamped = max_tokens is None or completion != max_tokens
    hold = price.cost(prompt_tokens, completion)
    return Admission(tier, models, hold, completion, clamped)
