"""The shared spend store: budgets, holds and settlements in Redis, so any number of
gate instances draw on one budget per agent (`spend_store: {backend: redis}`).

Redis is authoritative for each agent's budget_total, spent, held and period start,
and for the holds; every change is one Lua script (see `redis_scripts`). A `Ledger`
inside (`self.books`, with this store as its `Follower`) keeps this instance's mirror
of what Redis last said, plus the changes it has queued for Redis and not yet seen
applied, so views and routing read it without a round trip; it also writes this
instance's own JSONL spend log, in the same format, as its audit trail. Both stores
implement `gate.books.store.SpendStore`; neither reaches into the other.

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
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gate.books import redis_scripts as lua
from gate.books.accounts import Account
from gate.books.holds import Hold, HoldDefaults, HoldRequest, decide
from gate.books.ledger import Ledger
from gate.books.lines import RequestLine, budget_line, reset_line
from gate.books.observers import LineObserver, Observer
from gate.books.redis_calls import Scripts
from gate.books.redis_connect import (
    connect,
    epoch,
    epoch_ms,
    from_epoch_ms,
    not_ready_message,
    redacted,
)
from gate.books.redis_writer import Change, ChangeWriter
from gate.books.spendlog import SpendLog
from gate.books.store import (
    Sharing,
    SpendStoreError,
    SpendStoreRefused,
    SpendStoreStartError,
    TaskRefused,
)
from gate.books.tasks import Task
from gate.config import AgentPolicy, SpendStoreConfig, Tier
from gate.core.clock import Clock, iso
from gate.core.cost import ZERO, ModelPrice
from gate.core.periods import period_start
from gate.core.router import Admission, Refusal

__all__ = ["RedisLedger", "SpendStoreError", "SpendStoreRefused", "SpendStoreStartError"]

log = logging.getLogger(__name__)

RESERVE_ATTEMPTS = 8  # re-decisions after losing a race at the budget edge
CLAIM_BATCH = 100
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
        self.keys = lua.Keys(store.key_prefix)
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._client = client if client is not None else connect(store)
        self._lua = Scripts(self._client, store)
        self._writer = ChangeWriter(self._mirror, retry_on=SpendStoreError)
        self._store_held: dict[str, Decimal] = {}  # agent -> held, as Redis last said
        self._offline: set[str] = set()  # holds placed while Redis was away (open mode)
        # agent -> resets/spent-sets this instance wrote: orders its own settlements
        # against them as its log does (see redis_scripts.SETTLE).
        self._resets: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Check the store is there and initialised, bring the config in, start the
        background work. Raises SpendStoreStartError (and closes the client) otherwise."""
        try:
            ready = await self._client.exists(self.keys.marker)
            if not ready:
                raise SpendStoreStartError(not_ready_message(self.store))
            for agent_id in self.agent_ids():
                self._mirror(agent_id, await self._call(self._lua.policy, agent_id))
        except (RedisError, OSError, SpendStoreError) as exc:
            await self._client.aclose()
            url = redacted(self.store.url or "")
            raise SpendStoreStartError(f"spend store {url} cannot be used: {exc}") from None
        except SpendStoreStartError:
            await self._client.aclose()
            raise
        self._tasks = [
            asyncio.create_task(self._worker(), name="spend-store-writer"),
            asyncio.create_task(self._keep_fresh(), name="spend-store-refresh"),
        ]

    async def aclose(self) -> None:
        """Send what is queued (for a while, if Redis is away), then stop and disconnect."""
        try:
            await asyncio.wait_for(self._writer.drained.wait(), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            unsent = len(self._writer.queue)
            log.error("spend store: %d changes could not be sent at shutdown", unsent)
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
        return self._lua.error

    async def all_settled(self) -> None:
        await self.books.all_settled()
        await self._writer.drained.wait()

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

    def record_refusal(self, line: RequestLine) -> None:
        self.books.record_refusal(line)

    def count_refusal(self, line: RequestLine, reason: str) -> None:
        self.books.count_refusal(line, reason)

    def flush_refusals(self) -> None:
        self.books.flush_refusals()

    def write_snapshot(self) -> None:
        """No snapshots: Redis holds the state, and a rebuild merges many logs."""
        self.books.write_snapshot()

    # -- the Follower of `self.books` ---------------------------------------------------

    def held(self, agent_id: str) -> Decimal:
        """Redis sums every instance's holds in whole pico-USD; this instance adds only
        what it has not sent yet."""
        pending = self._writer.pending.get(agent_id, [ZERO, ZERO])
        return self._store_held.get(agent_id, ZERO) + pending[1]

    def settled(self, hold: Hold, cost: Decimal, at: str | None) -> None:
        self._queue_settle(hold, cost, at)

    # -- talking to Redis -------------------------------------------------------------

    def _args(self, agent_id: str) -> tuple[list[str], list[str]]:
        acct = self.books.book(agent_id)  # a dormant agent's settlement still rolls its period
        keys = [self.keys.marker, self.keys.account(agent_id)]
        if acct is None:
            return keys, ["", "", ""]
        start = period_start(acct.policy.period, self._clock())
        policy = acct.policy
        return keys, [
            epoch(start),
            str(lua.to_units(policy.budget_total)),
            str(lua.to_units(policy.budget_spent)),
        ]

    async def _call(
        self, script: Any, agent_id: str, keys: Sequence[str] = (), args: Sequence[Any] = ()
    ) -> list[Any]:
        """Run an account script on the agent's account (`redis_calls.Scripts.call`)."""
        base_keys, base_args = self._args(agent_id)
        return await self._lua.call(script, [*base_keys, *keys], [*base_args, *args])

    def _mirror(self, agent_id: str, reply: list[Any]) -> None:
        """Take Redis's word for an account (plus what this instance has not sent yet);
        a period this reply rolled is written to this instance's log, once."""
        acct = self.books.book(agent_id)
        if acct is None or len(reply) < 7:
            return
        pending = self._writer.pending.get(agent_id, [ZERO, ZERO])
        acct.budget_total = lua.from_units(reply[2])
        acct.spent = lua.from_units(reply[3]) + pending[0]
        self._store_held[agent_id] = lua.from_units(reply[4])
        acct.held = self.held(agent_id)
        acct.period_start = (
            datetime.fromtimestamp(int(reply[5]), UTC) if reply[5] not in ("", None) else None
        )
        acct.total_set_by_admin = str(reply[6]) == "1"
        if int(reply[1]) == 1:
            # The period start it rolled to: the replay counts in the new period the
            # lines from then on, also those written before this line (ledger._apply).
            line = reset_line(iso(self._clock()), agent_id, "period")
            if acct.period_start is not None:
                line["period_start"] = iso(acct.period_start)
            self.books.append(line)
            self.books.notify(agent_id, "period")

    async def _worker(self) -> None:
        """Send the queued changes to Redis, in order (see `redis_writer`)."""
        await self._writer.run()

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
            self._mirror(agent_id, await self._call(self._lua.state, agent_id))
        mine = [rid for rid in self.books.hold_ids() if rid not in self._offline]
        if mine:
            expires = self._clock().timestamp() + self.store.hold_ttl_seconds
            try:
                await self._lua.renew(
                    keys=[self.keys.holds, self.keys.expiry], args=[expires, *mine]
                )
            except (RedisError, OSError) as exc:
                self._lua.unreachable(exc)

    # -- task budgets: not on this store yet --------------------------------------------

    def task_for_key(self, key: str) -> Task | None:
        return None

    def tasks(self) -> list[Task]:
        return []

    async def open_task(
        self, agent_id: str, cap: Decimal, expires_at: datetime, name: str | None
    ) -> tuple[Task, str]:
        """Task budgets are this instance's books alone; the shared store has none yet."""
        raise TaskRefused("task budgets need the JSONL spend store (spend_store.backend: jsonl)")

    def close_task(self, task_id: str) -> Task | None:
        return None

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
                outcome = await self._reserve_shared(acct, request_id, ask, prices, defaults)
            except SpendStoreError:
                if self.store.on_store_error != "open":
                    raise
                outcome = self._reserve_local(acct, request_id, ask, prices, defaults)
            if isinstance(outcome, Refusal):
                if outcome.status == 402:  # the budget's refusal, not a body too costly
                    self.books.notify(agent_id, "refused")
                return outcome
            decision, hold = outcome
            written = self.books.record_hold(hold, decision.tier.name, self._clock())
        await self.books.hold_written(hold, written)
        return decision, hold

    async def _reserve_shared(
        self,
        acct: Account,
        request_id: str,
        ask: HoldRequest,
        prices: Mapping[str, ModelPrice],
        defaults: HoldDefaults,
    ) -> tuple[Admission, Hold] | Refusal:
        agent_id = acct.policy.agent_id
        fresh = False
        decision: Admission | Refusal = Refusal("budget exhausted for this period", None)
        for _ in range(RESERVE_ATTEMPTS):
            decision = decide(acct, ask, prices, defaults)
            if isinstance(decision, Refusal):
                if fresh:
                    return decision
                self._mirror(agent_id, await self._call(self._lua.state, agent_id))
                fresh = True  # the mirror may be stale: refuse only on Redis's word
                continue
            units = lua.to_units(decision.hold)
            expires = self._clock().timestamp() + self.store.hold_ttl_seconds
            body = lua.hold_entry(agent_id, units, self.instance, expires, ask.api)
            reply = await self._call(
                self._lua.reserve,
                agent_id,
                [self.keys.holds, self.keys.expiry],
                [units, "1" if acct.policy.hard_cap else "0", request_id, body, expires],
            )
            self._mirror(agent_id, reply)
            if reply[0] == lua.OK:
                return decision, Hold(request_id, agent_id, decision.hold, api=ask.api)
            fresh = True
        tier = decision.tier if isinstance(decision, Admission) else None
        return Refusal("the remaining budget is held by requests in flight", tier)

    def _reserve_local(
        self,
        acct: Account,
        request_id: str,
        ask: HoldRequest,
        prices: Mapping[str, ModelPrice],
        defaults: HoldDefaults,
    ) -> tuple[Admission, Hold] | Refusal:
        """`on_store_error: open`: decide on this instance's view alone; the hold is
        local and its settlement reaches Redis when Redis is back."""
        self.books.roll(acct, self._clock())
        decision = decide(acct, ask, prices, defaults)
        if isinstance(decision, Refusal):
            return decision
        hold = Hold(request_id, acct.policy.agent_id, decision.hold, api=ask.api)
        self._offline.add(request_id)
        self._writer.owe(hold.agent_id, ZERO, hold.amount)
        self.books.sync_held(acct)
        return decision, hold

    def _queue_settle(self, hold: Hold, cost: Decimal, at: object = None) -> None:
        """Send a settlement to Redis; the mirror has already (or is about to) let go of
        the hold and charged the cost, and the writer's `pending` carries that until Redis has it.
        `at` is its request line's ts: Redis counts the cost only if the line is in the
        current period and after the last reset, as the logs' replay does."""
        offline = hold.request_id in self._offline
        self._offline.discard(hold.request_id)
        agent_id, request_id = hold.agent_id, hold.request_id
        keys = [self.keys.holds, self.keys.expiry, self.keys.done(request_id)]
        args = [
            lua.to_units(cost),
            request_id,
            lua.DONE_TTL_SECONDS,
            epoch_ms(at) if isinstance(at, str) else "",
            self.instance,
            self._resets.get(agent_id, 0),
        ]

        def run() -> Awaitable[Any]:
            return self._call(self._lua.settle, agent_id, keys, args)

        if offline:  # Redis's held never carried it: only the cost is on its way
            self._writer.owe(agent_id, ZERO, -hold.amount)
            self._writer.put(Change(agent_id, run, spent=cost))
        else:
            self._writer.put(Change(agent_id, run, spent=cost, held=-hold.amount))

    def settle(self, hold: Hold, cost: Decimal, line: RequestLine) -> Decimal | None:
        """The mirror settles at once (its line written); `settled` sends it on."""
        return self.books.settle(hold, cost, line)

    def name_generation(self, hold: Hold, generation_id: str) -> None:
        if hold.generation_id is not None or hold.settled:
            return
        self.books.name_generation(hold, generation_id)
        if hold.request_id in self._offline:
            return
        holds, rid = self.keys.holds, hold.request_id

        async def run() -> None:
            try:
                await self._lua.name(keys=[holds], args=[rid, generation_id])
            except (RedisError, OSError) as exc:
                self._lua.unreachable(exc)
                raise SpendStoreError(str(exc)) from None

        self._writer.put(Change(hold.agent_id, run))

    async def claim_expired(self) -> list[Hold]:
        """Take over the holds of instances that stopped renewing them (they died);
        the caller settles them. Each expired hold goes to one instance only."""
        now = self._clock().timestamp()
        try:
            found = await self._lua.claim(
                keys=[self.keys.marker, self.keys.holds, self.keys.expiry],
                args=[now, now + self.store.hold_ttl_seconds, self.instance, CLAIM_BATCH],
            )
        except (RedisError, OSError) as exc:
            self._lua.unreachable(exc)
            return []
        claimed = []
        for request_id, encoded in zip(found[::2], found[1::2], strict=True):
            hold = lua.hold_of_entry(request_id, encoded)
            self.books.adopt(hold)
            claimed.append(hold)
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
            now = await self._new_epoch(agent_id, total, spent)
            self.books.append(budget_line(now, agent_id, budget_total, budget_spent, source))
            self.books.notify(agent_id, "budget")

    async def reset(self, agent_id: str, reason: str = "admin") -> None:
        acct = self.books.configured(agent_id)
        async with acct.lock:
            now = await self._new_epoch(agent_id, "", "0")
            self.books.append(reset_line(now, agent_id, reason))
            self.books.notify(agent_id, "reset")

    async def _new_epoch(self, agent_id: str, total: str, spent: str) -> str:
        """Run the budget script; returns the ts its log line must carry. A new spent
        starts an epoch: settlements whose lines this instance wrote before the line
        about to be written, and other instances' lines with a ts up to this one, do
        not count in it — exactly what the replay of the logs says."""
        count = self._resets.get(agent_id, 0) + (spent != "")
        args = [total, spent, epoch_ms(self._clock()), self.instance, count]
        try:
            reply = await self._call(self._lua.budget, agent_id, (), args)
        finally:
            # Even on an error: Redis may have taken it, and a higher count is harmless.
            self._resets[agent_id] = count
        if spent != "":
            for op in self._writer.queue:  # queued here before the line: Redis will not count them
                if op.agent_id == agent_id and op.spent:
                    self._writer.owe(agent_id, -op.spent, ZERO)
                    op.spent = ZERO
        self._mirror(agent_id, reply)
        return iso(from_epoch_ms(reply[7]))

    def apply_policies(self, agents: Mapping[str, AgentPolicy]) -> None:
        self.books.apply_policies(agents)
        for agent_id in agents:

            def run(agent_id: str = agent_id) -> Awaitable[Any]:
                return self._call(self._lua.policy, agent_id)

            self._writer.put(Change(agent_id, run))
