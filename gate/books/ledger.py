"""Budgets, holds and settlements, kept in memory and recorded in the spend log.

The spend log is the source of truth: `replay()` rebuilds every account from it at
start-up, and every change made here is appended to it as a line, in the order the
changes were made. Each agent's changes run under that agent's asyncio lock; the lock
is never held across an upstream call or a disk write.

This is the JSONL spend store (`gate.books.store.SpendStore`). The shared store
(`gate.books.redis_store`) keeps one inside as this instance's mirror and log, with
itself as the `Follower`: it counts `held` and is told of every settlement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from gate.books.accounts import (
    Account,
    Books,
    account_view,
    carry_accounts,
    new_account,
    next_reset,
    roll_period,
    tier_of,
)
from gate.books.holds import Hold, HoldDefaults, HoldRequest, OpenHolds, decide
from gate.books.lines import (
    RequestLine,
    budget_line,
    generation_line,
    hold_line,
    request_line,
    reset_line,
    sent_line,
    settled,
    task_end_line,
)
from gate.books.observers import LineObserver, Observer, notify, tell_line
from gate.books.refusals import Refusals
from gate.books.replay import replay_records
from gate.books.snapshots import snapshot_record
from gate.books.spendlog import SpendLog, SpendLogError
from gate.books.store import Follower, Sharing
from gate.books.task_desk import TaskDesk
from gate.books.tasks import TaskBook
from gate.config import AgentPolicy, Tier
from gate.core.clock import Clock, iso
from gate.core.cost import ZERO, ModelPrice
from gate.core.router import Admission, Refusal

__all__ = ["SNAPSHOT_EVERY", "Ledger"]


SNAPSHOT_EVERY = 10_000  # lines between snapshots: start-up replays at most about this many


class Ledger:
    def __init__(
        self,
        agents: Mapping[str, AgentPolicy],
        spend_log: SpendLog,
        clock: Clock,
        follower: Follower | None = None,
    ) -> None:
        self._log = spend_log
        # Under a shared store: it counts `held`, it is told of settlements, and the
        # shared state rolls periods and needs no snapshots (see `Follower`).
        self._follower = follower
        self._clock = clock
        now = clock()
        self._accounts = {aid: new_account(p, now) for aid, p in agents.items()}
        # Agents a reload removed: refused like unknown ones, but their books are kept
        # (a stream still running settles here; snapshots carry them; a reload that adds
        # the agent back resumes them). See `apply_policies`.
        self._dormant: dict[str, Account] = {}
        self._holds = OpenHolds()
        self._task_book = TaskBook()  # task budgets (`gate.books.tasks`), state of these books
        self.tasks = TaskDesk(self, self._task_book)
        self._since_snapshot = 0
        # Set where every upstream call waits for `mark_sent` (gate.upstream.sendmark): hold lines
        # then promise a send mark before their request can reach upstream.
        self.marks_sends = False
        self.observers: list[Observer] = []
        self.line_observers: list[LineObserver] = []
        self.refusals = Refusals(self.append, clock, self._remaining, self.line_observers)

    def notify(self, agent_id: str, change: str) -> None:
        """Tell the observers an agent's account changed (`change` says how)."""
        notify(self.observers, agent_id, change)

    # -- the log ----------------------------------------------------------------------

    def append(
        self, record: Mapping[str, Any], *, durable: bool = False
    ) -> asyncio.Future[None] | None:
        written = self._log.append(record, durable=durable)
        self._since_snapshot += 1
        if self._since_snapshot >= SNAPSHOT_EVERY:
            self.write_snapshot()
        return written

    @property
    def lines_since_snapshot(self) -> int:
        return self._since_snapshot

    def write_snapshot(self) -> None:
        """Append the whole state as one line; replay starts from the last one. A
        mirror writes none: the shared store holds the state, a rebuild merges logs."""
        self._since_snapshot = 0
        if self._follower is None:
            self._log.append(self.snapshot_record())

    def snapshot_record(self) -> dict[str, Any]:
        books = Books(self._accounts, self._dormant, self._holds.by_id, self._task_book.by_id)
        return snapshot_record(self._clock(), books)

    # -- reading ----------------------------------------------------------------------

    def now(self) -> datetime:
        """The ledger's clock (the one its lines are stamped with)."""
        return self._clock()

    @property
    def spend_log(self) -> SpendLog:
        return self._log

    @property
    def sharing(self) -> Sharing | None:
        """None: this instance's books are its own."""
        return None

    def account(self, agent_id: str) -> Account | None:
        acct = self._accounts.get(agent_id)
        if acct is not None:
            self.roll(acct, self._clock())
            if self._task_book.by_id:  # a task that expired meanwhile lets its reservation go
                self.sync_held(acct)
        return acct

    def agent_ids(self) -> list[str]:
        return list(self._accounts)

    def configured(self, agent_id: str) -> Account:
        """A configured agent's account as it stands (KeyError for any other)."""
        return self._accounts[agent_id]

    def book(self, agent_id: str) -> Account | None:
        """The agent's account, configured or dormant (for settling and replaying)."""
        return self._accounts.get(agent_id) or self._dormant.get(agent_id)

    def open_holds(self) -> list[Hold]:
        return [h for h in self._holds.by_id.values() if not h.settled]

    def hold_ids(self) -> list[str]:
        return list(self._holds.by_id)

    def adopt(self, hold: Hold) -> None:
        """Take an open hold over (a dead instance's, claimed from a shared store)."""
        self._holds.open(hold)

    async def claim_expired(self) -> list[Hold]:
        """None: no other instance places holds in these books."""
        return []

    async def all_settled(self) -> None:
        """Wait until no hold is open (every request in flight has written its line)."""
        await self._holds.all_closed()

    # The JSONL store is always current, never fails apart from its log, and has nothing
    # to close; a shared store (gate.books.redis_store) has its own three.
    @property
    def store_error(self) -> str | None:
        """Why the spend store cannot be used now, or None."""
        return None

    async def refresh(self) -> None:
        """Bring the in-memory view up to date with the store."""

    async def aclose(self) -> None:
        """Hand everything still owed to the store over, then let go of it."""

    def view(self, agent_id: str) -> dict[str, Any] | None:
        """The account as the admin API shows it."""
        acct = self.account(agent_id)
        return None if acct is None else account_view(agent_id, acct)

    def current_tier(self, agent_id: str) -> Tier | None:
        acct = self.account(agent_id)
        return None if acct is None else tier_of(acct)

    def resets_at(self, agent_id: str) -> str | None:
        """When the agent's budget next resets (its period's end, UTC), None for
        `never` or an agent this ledger does not know."""
        acct = self.account(agent_id)
        return None if acct is None else next_reset(acct, self._clock())

    # -- requests ---------------------------------------------------------------------

    async def reserve(
        self,
        agent_id: str,
        request_id: str,
        ask: HoldRequest,
        prices: Mapping[str, ModelPrice],
        defaults: HoldDefaults,
    ) -> tuple[Admission, Hold] | Refusal:
        """Decide the request and place its hold; the hold line is on disk on return.
        Raises SpendLogError (and places nothing) when the line cannot be written."""
        acct = self._accounts[agent_id]
        async with acct.lock:
            now = self._clock()
            self.roll(acct, now)
            if self._task_book.by_id:  # a task past its expiry lets its reservation go
                self.sync_held(acct)
            unused = self._task_book.unused(ask.task_id, now)
            decision = decide(acct, ask, prices, defaults, unused)
            if isinstance(decision, Refusal):
                if decision.status == 402:  # the budget's refusal, not a body too costly
                    self.notify(agent_id, "refused")
                return decision
            hold = Hold(request_id, agent_id, decision.hold, api=ask.api, task_id=ask.task_id)
            written = self.record_hold(hold, decision.tier.name, now)
            self.sync_held(acct)
        await self.hold_written(hold, written)
        return decision, hold

    def record_hold(self, hold: Hold, tier: str, now: datetime) -> asyncio.Future[None]:
        """Open the hold and append its line (durable). Runs under the agent's lock."""
        self._holds.open(hold)
        if self.marks_sends:
            hold.sent = False  # until `mark_sent`
        written = self.append(hold_line(hold, tier, now), durable=True)
        assert written is not None
        return written

    async def hold_written(self, hold: Hold, written: asyncio.Future[None]) -> None:
        """Wait (outside the lock) until the hold's line is on disk; undo the hold if it
        never will be."""
        try:
            await written
        except SpendLogError:
            self.release(hold)  # its line was dropped: nothing to settle
            raise
        except asyncio.CancelledError:
            # The hold line may still reach the file: settle it, so no restart charges it.
            line = request_line(hold.request_id, hold.api)
            line["status"], line["cost_source"] = 499, "none"
            self.settle(hold, ZERO, line)
            raise

    def name_generation(self, hold: Hold, generation_id: str) -> None:
        """Record the generation id as soon as upstream names it (for crash recovery)."""
        if hold.generation_id is not None or hold.settled:
            return
        hold.generation_id = generation_id
        self.append(generation_line(hold, generation_id, self._clock()))

    def mark_sent(self, hold: Hold) -> asyncio.Future[None] | None:
        """Record, durably, that the request is about to reach upstream; its call waits
        for the returned future. Without this mark a crash recovery knows the request
        never left the gate (see gate.books.reconcile). None: nothing to wait for."""
        if not self.marks_sends or hold.sent or hold.settled:
            return None
        hold.sent = True
        return self.append(sent_line(hold, self._clock()), durable=True)

    def settle(self, hold: Hold, cost: Decimal, line: RequestLine) -> Decimal | None:
        """Release the hold, charge the real cost and write the request line.
        Returns the agent's remaining budget. Settling twice does nothing."""
        if hold.settled:
            return None
        hold.settled = True
        self._holds.close(hold)
        now = self._clock()
        acct = self.book(hold.agent_id)  # a dormant agent's stream is charged to it
        remaining: Decimal | None = None
        if acct is not None:
            self.roll(acct, now)
            task = self._task_book.by_id.get(hold.task_id) if hold.task_id is not None else None
            if task is not None:
                task.spent += cost
            acct.spent += cost
            self.sync_held(acct)
            remaining = acct.remaining
        settled(line, iso(now), hold, cost, remaining)
        self.append(line)
        tell_line(self.line_observers, line, False)
        if hold.agent_id in self._accounts:
            self.notify(hold.agent_id, "settle")
        if self._follower is not None:
            self._follower.settled(hold, cost, line["ts"])
        return remaining

    def _remaining(self, agent_id: str) -> Decimal | None:
        acct = self._accounts.get(agent_id)
        return None if acct is None else acct.remaining

    def projected_remaining(self, hold: Hold, cost: Decimal) -> Decimal | None:
        acct = self.book(hold.agent_id)
        return None if acct is None else acct.remaining - cost

    def release(self, hold: Hold) -> None:
        """Let a hold go uncharged (its line never reached the log)."""
        if self._follower is not None:
            self._follower.settled(hold, ZERO, None)
        hold.settled = True
        self._holds.close(hold)
        acct = self.book(hold.agent_id)
        if acct is not None:
            self.sync_held(acct)

    def sync_held(self, acct: Account) -> None:
        """`held` is the sum of the agent's open holds and of what its open tasks still
        reserve, summed again on every change (a running tally could drift); under a
        shared store, what that store counts."""
        agent_id = acct.policy.agent_id
        if self._follower is not None:
            acct.held = self._follower.held(agent_id)
            return
        if not self._task_book.by_id:
            acct.held = self._holds.held(agent_id)
            return
        now = self._clock()
        acct.held, expired = self._task_book.held(self._holds.by_id.values(), agent_id, now)
        for task in expired:  # its reservation is no longer held
            self.append(task_end_line(task, now))

    # -- admin ------------------------------------------------------------------------

    async def set_budget(
        self,
        agent_id: str,
        budget_total: Decimal | None,
        budget_spent: Decimal | None,
        *,
        source: str | None = None,
    ) -> None:
        """Set the budget (admin API; `source="jetpatch"` from the console sync)."""
        acct = self._accounts[agent_id]
        async with acct.lock:
            now = self._clock()
            self.roll(acct, now)
            if budget_total is not None:
                acct.budget_total = budget_total
                acct.total_set_by_admin = True
            if budget_spent is not None:
                acct.spent = budget_spent
            self.append(budget_line(iso(now), agent_id, budget_total, budget_spent, source))
            self.notify(agent_id, "budget")

    async def reset(self, agent_id: str, reason: str = "admin") -> None:
        acct = self._accounts[agent_id]
        async with acct.lock:
            now = self._clock()
            self.roll(acct, now)
            acct.spent = ZERO
            self.append(reset_line(iso(now), agent_id, reason))
            self.notify(agent_id, "reset")

    def apply_policies(self, agents: Mapping[str, AgentPolicy]) -> None:
        """A reloaded config: new policies in force, spend kept; a budget total set
        through the admin API stays until the config's own total changes. A removed
        agent's account turns dormant, and an agent added back resumes it."""
        now = self._clock()
        accounts, carried = carry_accounts(self._accounts, self._dormant, agents, now)
        for acct in carried:
            self.roll(acct, now)
        self._accounts = accounts
        for agent_id in accounts:
            self.notify(agent_id, "policy")

    # -- periods ----------------------------------------------------------------------

    def roll(self, acct: Account, now: datetime) -> None:
        """Start the agent's next period if `now` is past its end, with a reset line;
        a mirror rolls silently (the shared store's script that rolled it says so)."""
        if roll_period(acct, now) and self._follower is None:
            self.append(reset_line(iso(now), acct.policy.agent_id, "period"))
            self.notify(acct.policy.agent_id, "period")

    # -- start-up ---------------------------------------------------------------------

    def replay(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Rebuild every account from the log; returns the number of records applied.
        Holds without a request line stay open (see `open_holds`) for reconciliation."""
        books = Books(self._accounts, self._dormant, self._holds.by_id, self._task_book.by_id)
        count = replay_records(records, books, self._clock)
        self._holds.recount()
        self._task_book.reindex()
        for acct in [*self._accounts.values(), *self._dormant.values()]:
            self.sync_held(acct)  # open tasks' reservations count as held
        return count
