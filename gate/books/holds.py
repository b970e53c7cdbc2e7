"""A hold: the amount set aside for a request in flight until it settles; what a
request asks for (`HoldRequest`), the defaults its hold is sized with, and the
admission decision on an account's current state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from gate.books.accounts import Account
from gate.core.cost import NO_EXTRAS, ZERO, BodyCost, ModelPrice
from gate.core.router import MAX_HOLD_USD, Admission, PromptTokens, Refusal, admit


@dataclass(slots=True)
class Hold:
    request_id: str
    agent_id: str
    amount: Decimal
    generation_id: str | None = None
    settled: bool = False
    # Whether the request may have reached upstream: False while it cannot have (its
    # hold line said a send mark would come first, and none came), True once the mark
    # is on disk, None when the log cannot tell (a hold line from before send marks).
    sent: bool | None = None
    api: str = "chat"  # the inference API it was asked through (`gate.http.apis`)
    task_id: str | None = None  # made with a task's key (`gate.books.tasks`)


@dataclass(frozen=True, slots=True)
class HoldRequest:
    requested_model: str | None
    prompt_tokens: int | PromptTokens  # or, per the models it may go to (gate.core.calibrate)
    max_tokens: int | None
    extra_usd: Decimal = ZERO  # a per-request charge tokens do not show (an unpriced plugin)
    body: BodyCost = NO_EXTRAS  # choices, reasoning, images, web search: priced on top
    api: str = "chat"  # which inference API asks (written on its hold line)
    task_id: str | None = None  # asked with a task's key: its cap bounds the hold too


@dataclass(frozen=True, slots=True)
class HoldDefaults:
    unknown_price: Decimal
    default_max_tokens: int
    max_hold_usd: Decimal = MAX_HOLD_USD


def decide(
    acct: Account,
    ask: HoldRequest,
    prices: Mapping[str, ModelPrice],
    d: HoldDefaults,
    task_unused: Decimal | None = None,
) -> Admission | Refusal:
    """Admit the request on the account as it stands (the pure `router.admit`). A task's
    request (`task_unused`: what its task may still spend) may use the task's own
    reservation, and no more than it."""
    committed = acct.committed
    if task_unused is not None:
        committed -= task_unused  # its task's reservation is its own to spend
    return admit(
        acct.policy,
        acct.budget_total,
        committed,
        ask.requested_model,
        ask.prompt_tokens,
        ask.max_tokens,
        prices,
        d.unknown_price,
        d.default_max_tokens,
        ask.extra_usd,
        ask.body,
        d.max_hold_usd,
        task_unused,
    )
