"""The agents' accounts as Redis keeps them, seen from one instance: the account
scripts run on one agent's account, their replies taken into the mirror (`books`,
this instance's `Ledger`), and this instance's changes queued for Redis in order.

What Redis says is authoritative; the mirror adds on top only what this instance has
queued and Redis has not applied yet (`ChangeWriter.pending`). `gate.books.redis_store`
is the spend store built on it; this module owns the Redis side of its decisions.
"""

from __future__ import annotations

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
from gate.books.lines import reset_line
from gate.books.redis_calls import Scripts
from gate.books.redis_connect import epoch, epoch_ms, from_epoch_ms
from gate.books.redis_writer import Change, ChangeWriter
from gate.books.store import SpendStoreError
from gate.config import SpendStoreConfig
from gate.core.clock import Clock, iso
from gate.core.cost import ZERO, ModelPrice
from gate.core.periods import period_start
from gate.core.router import Admission, Refusal

RESERVE_ATTEMPTS = 8  # re-decisions after losing a race at the budget edge
CLAIM_BATCH = 100


class SharedAccounts:
    def __init__(
        self, books: Ledger, client: Redis, store: SpendStoreConfig, clock: Clock, instance: str
    ) -> None:
        self.books = books
        self.store = store
        self.instance = instance
        self.keys = lua.Keys(store.key_prefix)
        self.lua = Scripts(client, store)
        self.writer = ChangeWriter(self.take, retry_on=SpendStoreError)
        self._clock = clock
        self._store_held: dict[str, Decimal] = {}  # agent -> held, as Redis last said
        self.offline: set[str] = set()  # holds placed while Redis was away (open mode)
        # agent -> resets/spent-sets this instance wrote: orders its own settlements
        # against them as its log does (see redis_scripts.SETTLE).
        self._resets: dict[str, int] = {}

    def held(self, agent_id: str) -> Decimal:
        """Redis sums every instance's holds in whole pico-USD; this instance adds only
        what it has not sent yet."""
        pending = self.writer.pending.get(agent_id, [ZERO, ZERO])
        return self._store_held.get(agent_id, ZERO) + pending[1]

    # -- account scripts --------------------------------------------------------------

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

    async def call(
        self, script: Any, agent_id: str, keys: Sequence[str] = (), args: Sequence[Any] = ()
    ) -> list[Any]:
        """Run an account script on the agent's account (`redis_calls.Scripts.call`)."""
        base_keys, base_args = self._args(agent_id)
        return await self.lua.call(script, [*base_keys, *keys], [*base_args, *args])

    async def read(self, agent_id: str, script: Any = None) -> None:
        """Take Redis's word for the account now (`script`: the state script, or the
        policy script that also brings the config's amounts in)."""
        self.take(agent_id, await self.call(script or self.lua.state, agent_id))

    def take(self, agent_id: str, reply: list[Any]) -> None:
        """Take Redis's word for an account (plus what this instance has not sent yet);
        a period this reply rolled is written to this instance's log, once."""
        acct = self.books.book(agent_id)
        if acct is None or len(reply) < 7:
            return
        pending = self.writer.pending.get(agent_id, [ZERO, ZERO])
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

    # -- holds ------------------------------------------------------------------------

    async def reserve(
        self,
        acct: Account,
        request_id: str,
        ask: HoldRequest,
        prices: Mapping[str, ModelPrice],
        defaults: HoldDefaults,
    ) -> tuple[Admission, Hold] | Refusal:
        """Decide on the mirror, then let the reserve script re-check the cap and place
        the hold atomically; a lost race re-decides on the state the script returned."""
        agent_id = acct.policy.agent_id
        fresh = False
        decision: Admission | Refusal = Refusal("budget exhausted for this period", None)
        for _ in range(RESERVE_ATTEMPTS):
            decision = decide(acct, ask, prices, defaults)
            if isinstance(decision, Refusal):
                if fresh:
                    return decision
                await self.read(agent_id)
                fresh = True  # the mirror may be stale: refuse only on Redis's word
                continue
            units = lua.to_units(decision.hold)
            expires = self._clock().timestamp() + self.store.hold_ttl_seconds
            body = lua.hold_entry(agent_id, units, self.instance, expires, ask.api)
            reply = await self.call(
                self.lua.reserve,
                agent_id,
                [self.keys.holds, self.keys.expiry],
                [units, "1" if acct.policy.hard_cap else "0", request_id, body, expires],
            )
            self.take(agent_id, reply)
            if reply[0] == lua.OK:
                return decision, Hold(request_id, agent_id, decision.hold, api=ask.api)
            fresh = True
        tier = decision.tier if isinstance(decision, Admission) else None
        return Refusal("the remaining budget is held by requests in flight", tier)

    def reserve_offline(
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
        self.offline.add(request_id)
        self.writer.owe(hold.agent_id, ZERO, hold.amount)
        self.books.sync_held(acct)
        return decision, hold

    async def renew(self, request_ids: list[str]) -> None:
        """Push the expiry of this instance's holds out by a hold's time to live."""
        mine = [rid for rid in request_ids if rid not in self.offline]
        if not mine:
            return
        expires = self._clock().timestamp() + self.store.hold_ttl_seconds
        try:
            await self.lua.renew(keys=[self.keys.holds, self.keys.expiry], args=[expires, *mine])
        except (RedisError, OSError) as exc:
            self.lua.unreachable(exc)

    async def claim_expired(self) -> list[Hold]:
        """The holds of instances that stopped renewing them, now this instance's
        (each expired hold goes to one instance only)."""
        now = self._clock().timestamp()
        keys = self.keys
        try:
            found = await self.lua.claim(
                keys=[keys.marker, keys.holds, keys.expiry],
                args=[now, now + self.store.hold_ttl_seconds, self.instance, CLAIM_BATCH],
            )
        except (RedisError, OSError) as exc:
            self.lua.unreachable(exc)
            return []
        return [
            lua.hold_of_entry(rid, entry)
            for rid, entry in zip(found[::2], found[1::2], strict=True)
        ]

    # -- changes queued for Redis -----------------------------------------------------

    def queue_settle(self, hold: Hold, cost: Decimal, at: str | None) -> None:
        """Send a settlement to Redis; the mirror has already (or is about to) let go of
        the hold and charged the cost, and the writer's `pending` carries that until
        Redis has it. `at` is its request line's ts: Redis counts the cost only if the
        line is in the current period and after the last reset, as the logs' replay does."""
        offline = hold.request_id in self.offline
        self.offline.discard(hold.request_id)
        agent_id, request_id = hold.agent_id, hold.request_id
        keys = [self.keys.holds, self.keys.expiry, self.keys.done(request_id)]
        args = [
            lua.to_units(cost),
            request_id,
            lua.DONE_TTL_SECONDS,
            epoch_ms(at) if at is not None else "",
            self.instance,
            self._resets.get(agent_id, 0),
        ]

        def run() -> Awaitable[Any]:
            return self.call(self.lua.settle, agent_id, keys, args)

        if offline:  # Redis's held never carried it: only the cost is on its way
            self.writer.owe(agent_id, ZERO, -hold.amount)
            self.writer.put(Change(agent_id, run, spent=cost))
        else:
            self.writer.put(Change(agent_id, run, spent=cost, held=-hold.amount))

    def queue_name(self, hold: Hold, generation_id: str) -> None:
        """Send the generation id of a hold Redis has to it (for claiming it later)."""
        if hold.request_id in self.offline:
            return
        holds, rid = self.keys.holds, hold.request_id

        async def run() -> None:
            try:
                await self.lua.name(keys=[holds], args=[rid, generation_id])
            except (RedisError, OSError) as exc:
                self.lua.unreachable(exc)
                raise SpendStoreError(str(exc)) from None

        self.writer.put(Change(hold.agent_id, run))

    def queue_policy(self, agent_id: str) -> None:
        """Send the agent's policy as the config now has it."""

        def run() -> Awaitable[Any]:
            return self.call(self.lua.policy, agent_id)

        self.writer.put(Change(agent_id, run))

    # -- admin ------------------------------------------------------------------------

    async def new_epoch(self, agent_id: str, total: str, spent: str) -> str:
        """Run the budget script; returns the ts its log line must carry. A new spent
        starts an epoch: settlements whose lines this instance wrote before the line
        about to be written, and other instances' lines with a ts up to this one, do
        not count in it — exactly what the replay of the logs says."""
        count = self._resets.get(agent_id, 0) + (spent != "")
        args = [total, spent, epoch_ms(self._clock()), self.instance, count]
        try:
            reply = await self.call(self.lua.budget, agent_id, (), args)
        finally:
            # Even on an error: Redis may have taken it, and a higher count is harmless.
            self._resets[agent_id] = count
        if spent != "":
            for op in self.writer.queue:  # queued here before the line: Redis will not count them
                if op.agent_id == agent_id and op.spent:
                    self.writer.owe(agent_id, -op.spent, ZERO)
                    op.spent = ZERO
        self.take(agent_id, reply)
        return iso(from_epoch_ms(reply[7]))
