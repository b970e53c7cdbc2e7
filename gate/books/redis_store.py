"""The shared spend store: budgets, holds and settlements in Redis, so any number of
gate instances draw on one budget per agent (`spend_store: {backend: redis}`).

Redis is authoritative for each agent's budget_total, spent, held and period start,
and for the holds; every change is one Lua script (see `redis_scripts`). A `Ledger`
inside (`self.books`, with this store as its `Follower`) keeps this instance's mirror
of what Redis last said, plus the changes it has queued for Redis and not yet seen
applied, so views and routing read it without a round trip; it also writes this
instance's own JSONL spend log, in the same format, as its audit trail. Both stores
implement `gate.books.store.SpendStore`; neither reaches into the other. The Redis
side (the scripts run on an account, their replies, the queue) is
`gate.books.redis_accounts.SharedAccounts`.

`reserve` decides with the pure `router.admit` on the mirror, then the reserve script
re-checks the cap atomically and places the hold; a lost race re-decides with the
state the script returned. `settle` stays synchronous: the mirror and the request
line change at once, the settlement goes to Redis through one ordered queue, retried
until Redis takes it; a done key per request makes it count once. Holds carry an
expiry that their instance renews; a dead instance's holds expire and another
instance claims and settles them (`claim_expired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gate.books import redis_scripts as lua
from gate.books.accounts import Account
from gate.books.holds import Hold, HoldDefaults, HoldRequest
from gate.books.ledger import Ledger
from gate.books.lines import RequestLine, budget_line, reset_line
from gate.books.observers import LineObserver, Observer
from gate.books.redis_accounts import SharedAccounts
from gate.books.redis_connect import connect, not_ready_message, redacted
from gate.books.refusals import Refusals
from gate.books.spendlog import SpendLog
from gate.books.store import (
    Sharing,
    SpendStoreError,
    SpendStoreRefused,
    SpendStoreStartError,
)
from gate.books.task_desk import NoTasks
from gate.config import AgentPolicy, SpendStoreConfig, Tier
from gate.core.clock import Clock
from gate.core.cost import ModelPrice
from gate.core.router import Admission, Refusal

__all__ = ["RedisLedger", "SpendStoreError", "SpendStoreRefused", "SpendStoreStartError"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_SECONDS = 10.0


class RedisLedger:
    def __init__(
        self,
        agents: Mapping[str, AgentPolicy],
        spend_log: SpendLog,
        clock: Clock,
        store: SpendStoreConfig,
        client: Redis | None = None,
    ) -> None:
        self.books = Ledger(agents, spend_log, clock, follower=self)
        self.observers: list[Observer] = self.books.observers
        self.line_observers: list[LineObserver] = self.books.line_observers
        self._clock = clock
        self.store = store
        self._client = client if client is not None else connect(store)
        instance = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.shared = SharedAccounts(self.books, self._client, store, clock, instance)
        self._tasks: list[asyncio.Task[None]] = []
        # A task's reservation would have to be shared too: not on this store yet.
        self.tasks = NoTasks("task budgets need the JSONL spend store (spend_store.backend: jsonl)")

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Check the store is there and initialised, bring the config in, start the
        background work. Raises SpendStoreStartError (and closes the client) otherwise."""
        try:
            ready = await self._client.exists(self.shared.keys.marker)
            if not ready:
                raise SpendStoreStartError(not_ready_message(self.store))
            for agent_id in self.agent_ids():
                await self.shared.read(agent_id, self.shared.lua.policy)
        except (RedisError, OSError, SpendStoreError) as exc:
            await self._client.aclose()
            url = redacted(self.store.url or "")
            raise SpendStoreStartError(f"spend store {url} cannot be used: {exc}") from None
        except SpendStoreStartError:
            await self._client.aclose()
            raise
        self._tasks = [
            asyncio.create_task(self.shared.writer.run(), name="spend-store-writer"),
            asyncio.create_task(self._keep_fresh(), name="spend-store-refresh"),
        ]

    async def aclose(self) -> None:
        """Send what is queued (for a while, if Redis is away), then stop and disconnect."""
        writer = self.shared.writer
        try:
            await asyncio.wait_for(writer.drained.wait(), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            log.error("spend store: %d changes could not be sent at shutdown", len(writer.queue))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    @property
    def sharing(self) -> Sharing:
        """The Redis the instances share, for the rate limits and dead instances' holds."""
        store = self.store
        return Sharing(
            self._client, store.key_prefix, store.on_store_error == "open", store.refresh_seconds
        )

    @property
    def store_error(self) -> str | None:
        return self.shared.lua.error

    async def all_settled(self) -> None:
        await self.books.all_settled()
        await self.shared.writer.drained.wait()

    async def _keep_fresh(self) -> None:
        """Read the shared state back now and then (other instances' spend, admin
        changes, a rolled period) and renew this instance's holds."""
        while True:
            # A period, not a wait for an event; often enough to renew holds in time.
            await asyncio.sleep(min(self.store.refresh_seconds, self.store.hold_ttl_seconds / 3))
            with contextlib.suppress(SpendStoreError):
                await self.refresh()

    async def refresh(self) -> None:
        """Bring the mirror up to date with Redis and renew this instance's holds."""
        for agent_id in self.agent_ids():
            await self.shared.read(agent_id)
        await self.shared.renew(self.books.hold_ids())

    # -- read from the mirror ---------------------------------------------------------

    @property
    def spend_log(self) -> SpendLog:
        return self.books.spend_log

    @property
    def lines_since_snapshot(self) -> int:
        return self.books.lines_since_snapshot

    def now(self) -> datetime:
        return self._clock()

    def agent_ids(self) -> list[str]:
        return self.books.agent_ids()

    def account(self, agent_id: str) -> Account | None:
        return self.books.account(agent_id)

    def view(self, agent_id: str) -> dict[str, Any] | None:
        return self.books.view(agent_id)

    def current_tier(self, agent_id: str) -> Tier | None:
        return self.books.current_tier(agent_id)

    def resets_at(self, agent_id: str) -> str | None:
        return self.books.resets_at(agent_id)

    def open_holds(self) -> list[Hold]:
        return self.books.open_holds()

    def projected_remaining(self, hold: Hold, cost: Decimal) -> Decimal | None:
        return self.books.projected_remaining(hold, cost)

    def mark_sent(self, hold: Hold) -> asyncio.Future[None] | None:
        return None  # holds here are renewed in Redis: a dead instance's are claimed

    @property
    def refusals(self) -> Refusals:
        return self.books.refusals

    def write_snapshot(self) -> None:
        """No snapshots: Redis holds the state, and a rebuild merges many logs."""
        self.books.write_snapshot()

    # -- the Follower of `self.books` ---------------------------------------------------

    def held(self, agent_id: str) -> Decimal:
        return self.shared.held(agent_id)

    def settled(self, hold: Hold, cost: Decimal, at: str | None) -> None:
        self.shared.queue_settle(hold, cost, at)

    # -- requests ---------------------------------------------------------------------

    async def reserve(
        self,
        agent_id: str,
        request_id: str,
        ask: HoldRequest,
        prices: Mapping[str, ModelPrice],
        defaults: HoldDefaults,
    ) -> tuple[Admission, Hold] | Refusal:
        acct = self.books.configured(agent_id)
        async with acct.lock:
            try:
                outcome = await self.shared.reserve(acct, request_id, ask, prices, defaults)
            except SpendStoreError:
                if self.store.on_store_error != "open":
                    raise
                outcome = self.shared.reserve_offline(acct, request_id, ask, prices, defaults)
            if isinstance(outcome, Refusal):
                if outcome.status == 402:  # the budget's refusal, not a body too costly
                    self.books.notify(agent_id, "refused")
                return outcome
            decision, hold = outcome
            written = self.books.record_hold(hold, decision.tier.name, self._clock())
        await self.books.hold_written(hold, written)
        return decision, hold

    def settle(self, hold: Hold, cost: Decimal, line: RequestLine) -> Decimal | None:
        """The mirror settles at once (its line written); `settled` sends it on."""
        return self.books.settle(hold, cost, line)

    def name_generation(self, hold: Hold, generation_id: str) -> None:
        if hold.generation_id is not None or hold.settled:
            return
        self.books.name_generation(hold, generation_id)
        self.shared.queue_name(hold, generation_id)

    async def claim_expired(self) -> list[Hold]:
        """Take over the holds of instances that stopped renewing them (they died);
        the caller settles them. Each expired hold goes to one instance only."""
        claimed = await self.shared.claim_expired()
        for hold in claimed:
            self.books.adopt(hold)
        return claimed

    # -- admin ------------------------------------------------------------------------

    async def set_budget(
        self,
        agent_id: str,
        budget_total: Decimal | None,
        budget_spent: Decimal | None,
        *,
        source: str | None = None,
    ) -> None:
        """Redis first (every instance sees it), then this instance's log line."""
        acct = self.books.configured(agent_id)
        async with acct.lock:
            total = "" if budget_total is None else str(lua.to_units(budget_total))
            spent = "" if budget_spent is None else str(lua.to_units(budget_spent))
            now = await self.shared.new_epoch(agent_id, total, spent)
            self.books.append(budget_line(now, agent_id, budget_total, budget_spent, source))
            self.books.notify(agent_id, "budget")

    async def reset(self, agent_id: str, reason: str = "admin") -> None:
        acct = self.books.configured(agent_id)
        async with acct.lock:
            now = await self.shared.new_epoch(agent_id, "", "0")
            self.books.append(reset_line(now, agent_id, reason))
            self.books.notify(agent_id, "reset")

    def apply_policies(self, agents: Mapping[str, AgentPolicy]) -> None:
        self.books.apply_policies(agents)
        for agent_id in agents:
            self.shared.queue_policy(agent_id)
