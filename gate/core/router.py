"""Pure routing decisions: which tier an agent is in, which models go upstream, and
whether a request's hold fits. No clock, no I/O: tests call these with plain tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from gate.config import AgentPolicy, Tier
from gate.core.cost import (
    NO_EXTRAS,
    PICO,
    BodyCost,
    ModelPrice,
    affordable_completion_tokens,
    completion_per_choice,
    hold_usd,
    worst_price,
)

# The largest hold one request may place unless the config says (holds.max_hold_usd).
MAX_HOLD_USD = Decimal(1000)

MAX_UPSTREAM_MODELS = 3  # OpenRouter refuses a longer `models` list

# The prompt tokens a hold assumes, given the models it may go to (`gate.core.calibrate`).
PromptTokens = Callable[[Sequence[str]], int]


@dataclass(frozen=True, slots=True)
class Admission:
    tier: Tier
    models: tuple[str, ...]  # sent upstream, at most 3, all from the tier
    hold: Decimal
    max_tokens: int | None  # the max_tokens to send upstream; None leaves the client's as is
    clamped: bool  # the budget lowered max_tokens (set or defaulted) so the hold fits


@dataclass(frozen=True, slots=True)
class Refusal:
    message: str
    tier: Tier | None
    status: int = 402  # 400: the body itself could cost more than one hold may be


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
    prompt_tokens: int | PromptTokens,
    max_tokens: int | None,
    prices: Mapping[str, ModelPrice],
    unknown_price: Decimal,
    default_max_tokens: int,
    extra_usd: Decimal = Decimal(0),
    body: BodyCost = NO_EXTRAS,
    max_hold_usd: Decimal = MAX_HOLD_USD,
    limit: Decimal | None = None,
) -> Admission | Refusal:
    """Decide one request: its tier, its upstream models and the hold it must place.

    The hold covers what the body can be billed (`cost.hold_usd`: every choice's
    completion, reasoning, images, web results, and `extra_usd`, a flat charge for what
    has no price). It must fit `max_hold_usd`, and with a hard cap what is left: a
    request whose `max_tokens` (or the default, when it set none) would not fit is
    clamped to what that pays for, and refused only when not even the rest fits.
    `limit` (a task's unspent cap) bounds the hold as a hard cap does, whatever the
    agent's own `hard_cap`.
    """
    tier = choose_tier(policy.tiers, budget_total, committed, policy.hard_cap)
    if tier is None:
        return Refusal("budget exhausted for this period", None)
    models = upstream_models(tier, requested_model)
    if callable(prompt_tokens):
        prompt_tokens = prompt_tokens(models)
    price = worst_price(prices, models, unknown_price)
    completion = completion_per_choice(max_tokens, body, default_max_tokens, price)
    left = budget_total - committed
    cap = min(left, max_hold_usd) if policy.hard_cap else max_hold_usd
    if limit is not None:
        cap = min(cap, limit)
    # one pico-USD of room: the hold is rounded up to whole pico-USD
    affordable = affordable_completion_tokens(price, prompt_tokens, cap - PICO, body, extra_usd)
    if affordable < min(completion, 1):  # an answer of one token; none for embeddings
        if limit is not None and limit < max_hold_usd and (not policy.hard_cap or limit < left):
            return Refusal("the task's remaining budget cannot cover this request", tier)
        if policy.hard_cap and left < max_hold_usd:
            return Refusal("remaining budget cannot cover this request", tier)
        return Refusal(
            f"this request could cost more than one request may hold ({max_hold_usd} USD)",
            tier,
            400,
        )
    limited = completion > affordable
    if limited:
        completion = affordable
    hold = hold_usd(price, prompt_tokens, completion, body, extra_usd)
    if not policy.hard_cap and limit is None and not limited:
        return Admission(tier, models, hold, None, False)
    # the gate sends the hold's assumption upstream, so it bounds the cost; it reports a
    # clamp only when the budget lowered it, not when it filled in the default
    return Admission(tier, models, hold, completion, limited)
