"""A hold: the amount set aside for a request in flight until it settles; what a
request asks for (`HoldRequest`), the defaults its hold is sized with, and the
admission decision on an account's current state."""

from __future__ import annotations

import asyncio
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


class OpenHolds:
    """The holds in flight, by request id, with each agent's sum kept as they open and
    close (Decimal, so exact: it cannot drift) instead of summed over every open hold on
    each change, and an event that is set while none is open."""

    def __init__(self) -> None:
        self.by_id: dict[str, Hold] = {}  # filled directly by replay, then `recount()`
        self._sums: dict[str, Decimal] = {}
        self._none = asyncio.Event()
        self._none.set()

    def open(self, hold: Hold) -> None:
        if hold.request_id in self.by_id:
            return
        self.by_id[hold.request_id] = hold
        self._sums[hold.agent_id] = self._sums.get(hold.agent_id, ZERO) + hold.amount
        self._none.clear()

    def close(self, hold: Hold) -> None:
        if self.by_id.pop(hold.request_id, None) is not None:
            self._sums[hold.agent_id] -= hold.amount
        if not self.by_id:
            self._none.set()

    def held(self, agent_id: str) -> Decimal:
        return self._sums.get(agent_id, ZERO)

    def recount(self) -> None:
        """Sum again what `by_id` holds (after a replay filled it)."""
        self._sums = {}
        for hold in self.by_id.values():
            self._sums[hold.agent_id] = self._sums.get(hold.agent_id, ZERO) + hold.amount
        if self.by_id:
            self._none.clear()

    async def all_closed(self) -> None:
        await self._none.wait()
