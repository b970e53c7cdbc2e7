"""The spend store's protocol: what the rest of the gate may ask of the books, whichever
store keeps them. Two implement it, neither a subclass of the other: `Ledger`
(`gate.books.ledger`, the JSONL store: the books in memory, rebuilt from this
instance's log) and `RedisLedger` (`gate.books.redis_store`, the shared store: Redis
decides, a `Ledger` inside keeps this instance's mirror and log). The decisions both
make are the pure functions of `gate.books.holds`, `gate.books.accounts` and
`gate.core.router`. `gate.books.opening` opens the one the config names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from gate.books.accounts import Account
from gate.books.holds import Hold, HoldDefaults, HoldRequest
from gate.books.lines import RequestLine
from gate.books.observers import LineObserver, Observer
from gate.books.refusals import Refusals
from gate.books.spendlog import SpendLog, SpendLogError
from gate.books.tasks import Task
from gate.config import AgentPolicy, Tier
from gate.core.cost import ModelPrice
from gate.core.router import Admission, Refusal

if TYPE_CHECKING:
    from redis.asyncio import Redis


class SpendStoreError(SpendLogError):
    """The shared store cannot be used now: no paid request is admitted (fail closed)."""


class SpendStoreRefused(Exception):
    """The store refused one change for what it carried (an integer out of range): that
    request's error, not the store's; the store stays in use."""


class SpendStoreStartError(Exception):
    """The gate must not start on this store: one line says why and what to do."""


class TaskRefused(Exception):
    """A task's cap that the agent's budget cannot cover, or a store without tasks."""


@dataclass(frozen=True, slots=True)
class Sharing:
    """How a store shared by several instances is reached, for what else they share
    there (the rate-limit windows) and for claiming a dead instance's holds."""

    client: Redis
    key_prefix: str
    fail_open: bool  # `on_store_error: open`: admit on this instance's view when away
    sweep_seconds: float  # how often expired holds are looked for


class Follower(Protocol):
    """A shared store under which these books are one instance's mirror: it says what
    an agent has held (every instance's holds) and is told of each hold let go."""

    def held(self, agent_id: str) -> Decimal:
        """The agent's held amount, as the shared store counts it."""
        ...

    def settled(self, hold: Hold, cost: Decimal, at: str | None) -> None:
        """A hold settled at `cost` (its request line stamped `at`), or released (cost
        0, `at` None): to be sent on to the shared store."""
        ...


class TaskStore(Protocol):
    """A store's task budgets (`gate.books.task_desk`)."""

    def for_key(self, key: str) -> Task | None: ...
    def all(self) -> list[Task]: ...
    async def open(
        self, agent_id: str, cap: Decimal, expires_at: datetime, name: str | None
    ) -> tuple[Task, str]: ...
    def close(self, task_id: str) -> Task | None: ...


class SpendStore(Protocol):
    """Budgets, holds and settlements. Every change is one line in this instance's
    spend log; `reserve` and the admin changes run under the agent's lock, which is
    never held across an upstream call."""

    observers: list[Observer]  # told (agent_id, change) after each change
    line_observers: list[LineObserver]  # told every request line written

    # -- reading ----------------------------------------------------------------------
    @property
    def tasks(self) -> TaskStore: ...
    @property
    def refusals(self) -> Refusals: ...

    @property
    def spend_log(self) -> SpendLog: ...
    @property
    def store_error(self) -> str | None: ...
    @property
    def sharing(self) -> Sharing | None: ...
    @property
    def lines_since_snapshot(self) -> int: ...
    def now(self) -> datetime: ...
    def agent_ids(self) -> list[str]: ...
    def account(self, agent_id: str) -> Account | None: ...
    def view(self, agent_id: str) -> dict[str, Any] | None: ...
    def current_tier(self, agent_id: str) -> Tier | None: ...
    def resets_at(self, agent_id: str) -> str | None: ...
    def open_holds(self) -> list[Hold]: ...
    def projected_remaining(self, hold: Hold, cost: Decimal) -> Decimal | None: ...

    # -- requests ---------------------------------------------------------------------
    async def reserve(
        self,
        agent_id: str,
        request_id: str,
        ask: HoldRequest,
        prices: Mapping[str, ModelPrice],
        defaults: HoldDefaults,
    ) -> tuple[Admission, Hold] | Refusal: ...
    def name_generation(self, hold: Hold, generation_id: str) -> None: ...
    def mark_sent(self, hold: Hold) -> asyncio.Future[None] | None: ...
    def settle(self, hold: Hold, cost: Decimal, line: RequestLine) -> Decimal | None: ...
    async def claim_expired(self) -> list[Hold]: ...

    # -- admin and life cycle ---------------------------------------------------------
    async def set_budget(
        self,
        agent_id: str,
        budget_total: Decimal | None,
        budget_spent: Decimal | None,
        *,
        source: str | None = None,
    ) -> None: ...
    async def reset(self, agent_id: str, reason: str = "admin") -> None: ...
    def apply_policies(self, agents: Mapping[str, AgentPolicy]) -> None: ...
    def write_snapshot(self) -> None: ...
    async def refresh(self) -> None: ...
    async def all_settled(self) -> None: ...
    async def aclose(self) -> None: ...
