"""Budgets, holds and settlements, kept in memory and recorded in the spend log.

The spend log is the source of truth: `replay()` rebuilds every account from it at
start-up, and every change made here is appended to it as a line, in the order the
changes were made. Each agent's changes run under that agent's asyncio lock; the lock
is never held across an upstream call or a disk write.

This is the JSONL spend store; a shared store (Redis) offers the same methods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gate.books.refusals import RefusalTally
from gate.books.spendlog import SpendLog, SpendLogError
from gate.config import AgentPolicy, Tier
from gate.core.cost import NO_EXTRAS, ZERO, BodyCost, ModelPrice, to_decimal
from gate.core.periods import PERIODS, period_end, period_start
from gate.core.router import (
    MAX_HOLD_USD,
    Admission,
    PromptTokens,
    Refusal,
    admit,
    choose_tier,
    remaining_fraction,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Told (agent_id, change) after an agent's state changed: "settle", "budget", "reset",
# "period", "policy", or "refused" (a request refused by the budget). Synchronous and
# cheap; an observer reads what it needs itself. See `Ledger.observers`.
Observer = Callable[[str, str], None]
# Told each request line as it is written, and whether the request was refused before
# going upstream (`record_refusal`) rather than settled. Synchronous and cheap, too.
LineObserver = Callable[[Mapping[str, Any], bool], None]
SNAPSHOT_EVERY = 10_000  # lines between snapshots: start-up replays at most about this many


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


@dataclass(slots=True)
class Account:
    policy: AgentPolicy
    budget_total: Decimal
    spent: Decimal
    period_start: datetime | None
    held: Decimal = ZERO
    total_set_by_admin: bool = False
    # (period, start, end) once `period_start` is confirmed current: skips the date
    # arithmetic on every request until `end`.
    period_known: tuple[str, datetime, datetime] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def committed(self) -> Decimal:
        return self.spent + self.held

    @property
    def remaining(self) -> Decimal:
        return self.budget_total - self.spent


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


@dataclass(frozen=True, slots=True)
class HoldRequest:
    requested_model: str | None
    prompt_tokens: int | PromptTokens  # or, per the models it may go to (gate.core.calibrate)
    max_tokens: int | None
    extra_usd: Decimal = ZERO  # a per-request charge tokens do not show (an unpriced plugin)
    body: BodyCost = NO_EXTRAS  # choices, reasoning, images, web search: priced on top


@dataclass(frozen=True, slots=True)
class HoldDefaults:
    unknown_price: Decimal
    default_max_tokens: int
    max_hold_usd: Decimal = MAX_HOLD_USD


class Ledger:
    def __init__(
        self, agents: Mapping[str, AgentPolicy], spend_log: SpendLog, clock: Clock
    ) -> None:
        self._log = spend_log
        self._clock = clock
        now = clock()
        self._accounts = {aid: _new_account(p, now) for aid, p in agents.items()}
        # Agents a reload removed: refused like unknown ones, but their books are kept
        # (a stream still running settles here; snapshots carry them; a reload that adds
        # the agent back resumes them). See `apply_policies`.
        self._dormant: dict[str, Account] = {}
        self._holds: dict[str, Hold] = {}
        self._no_holds = asyncio.Event()
        self._no_holds.set()
        self._since_snapshot = 0
        # Set where every upstream call waits for `mark_sent` (gate.upstream.sendmark): hold lines
        # then promise a send mark before their request can reach upstream.
        self.marks_sends = False
        self.observers: list[Observer] = []
        self.line_observers: list[LineObserver] = []
        self.refusals = RefusalTally()  # refusals of no authenticated agent, counted

    def _notify(self, agent_id: str, change: str) -> None:
        for observer in self.observers:
            try:
                observer(agent_id, change)
            except Exception:  # an observer's bug never breaks the books
                log.exception("ledger observer failed on %s %s", change, agent_id)

    # -- the log ----------------------------------------------------------------------

    def _append(
        self, record: dict[str, Any], *, durable: bool = False
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
        """Append the whole state as one line; replay starts from the last one."""
        self._since_snapshot = 0
        self._log.append(self.snapshot_record())

    def snapshot_record(self) -> dict[str, Any]:
        return {
            "event": "snapshot",
            "ts": iso(self._clock()),
            "agents": {
                agent_id: {
                    "budget_total": acct.budget_total,
                    "total_set_by_admin": acct.total_set_by_admin,
                    "spent": acct.spent,
                    "period_start": iso(acct.period_start) if acct.period_start else None,
                }
                for agent_id, acct in self._accounts.items()
            }
            | {agent_id: _dormant_entry(acct) for agent_id, acct in self._dormant.items()},
            "holds": {
                h.request_id: {
                    "agent_id": h.agent_id,
                    "held": h.amount,
                    "generation_id": h.generation_id,
                    "sent": h.sent,
                }
                for h in self._holds.values()
                if not h.settled
            },
        }

    # -- reading ----------------------------------------------------------------------

    @property
    def spend_log(self) -> SpendLog:
        return self._log

    def account(self, agent_id: str) -> Account | None:
        acct = self._accounts.get(agent_id)
        if acct is not None:
            self._roll(acct, self._clock(), record=True)
        return acct

    def agent_ids(self) -> list[str]:
        return list(self._accounts)

    def _book(self, agent_id: str) -> Account | None:
        """The agent's account, configured or dormant (for settling and replaying)."""
        return self._accounts.get(agent_id) or self._dormant.get(agent_id)

    def open_holds(self) -> list[Hold]:
        return [h for h in self._holds.values() if not h.settled]

    async def all_settled(self) -> None:
        """Wait until no hold is open (every request in flight has written its line)."""
        await self._no_holds.wait()

    # A shared store (gate.books.redis_store) overrides these three; the JSONL store is
    # always current, never fails apart from its log, and has nothing to close.
    @property
    def store_error(self) -> str | None:
        """Why the spend store cannot be used now, or None."""
        return None

    async def refresh(self) -> None:
        """Bring the in-memory view up to date with the store."""

    async def aclose(self) -> None:
        """Hand everything still owed to the store over, then let go of it."""

    def _forget(self, hold: Hold) -> None:
        self._holds.pop(hold.request_id, None)
        if not self._holds:
            self._no_holds.set()

    def view(self, agent_id: str) -> dict[str, Any] | None:
        """The account as the admin API shows it."""
        acct = self.account(agent_id)
        if acct is None:
            return None
        policy = acct.policy
        tier = choose_tier(policy.tiers, acct.budget_total, acct.committed, policy.hard_cap)
        return {
            "agent_id": agent_id,
            "budget_total": acct.budget_total,
            "budget_spent": acct.spent,
            "budget_held": acct.held,
            "budget_remaining": acct.remaining,
            "remaining_fraction": remaining_fraction(acct.budget_total, acct.committed),
            "period": policy.period,
            "period_start": iso(acct.period_start) if acct.period_start else None,
            "hard_cap": policy.hard_cap,
            "budget_source": policy.budget_source,
            "tier": tier.name if tier else None,
            "models_allowed": list(tier.models) if tier else [],
        }

    def current_tier(self, agent_id: str) -> Tier | None:
        acct = self.account(agent_id)
        if acct is None:
            return None
        policy = acct.policy
        return choose_tier(policy.tiers, acct.budget_total, acct.committed, policy.hard_cap)

    def resets_at(self, agent_id: str) -> str | None:
        """When the agent's budget next resets (its period's end, UTC), None for
        `never` or an agent this ledger does not know."""
        acct = self.account(agent_id)
        if acct is None:
            return None
        end = period_end(acct.policy.period, self._clock())
        return iso(end) if end is not None else None

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
            self._roll(acct, now, record=True)
            decision = self._decide(acct, ask, prices, defaults)
            if isinstance(decision, Refusal):
                if decision.status == 402:  # the budget's refusal, not a body too costly
                    self._notify(agent_id, "refused")
                return decision
            hold = Hold(request_id, agent_id, decision.hold)
            written = self._record_hold(hold, decision.tier.name, now)
            self._sync_held(acct)
        await self._hold_on_disk(hold, written)
        return decision, hold

    def _decide(
        self, acct: Account, ask: HoldRequest, prices: Mapping[str, ModelPrice], d: HoldDefaults
    ) -> Admission | Refusal:
        return admit(
            acct.policy,
            acct.budget_total,
            acct.committed,
            ask.requested_model,
            ask.prompt_tokens,
            ask.max_tokens,
            prices,
            d.unknown_price,
            d.default_max_tokens,
            ask.extra_usd,
            ask.body,
            d.max_hold_usd,
        )

    def _record_hold(self, hold: Hold, tier: str, now: datetime) -> asyncio.Future[None]:
        """Open the hold and append its line (durable). Runs under the agent's lock."""
        self._holds[hold.request_id] = hold
        self._no_holds.clear()
        if self.marks_sends:
            hold.sent = False  # until `mark_sent`
        written = self._append(
            {
                "ts": iso(now),
                "event": "hold",
                "request_id": hold.request_id,
                "agent_id": hold.agent_id,
                "held": hold.amount,
                "tier": tier,
                **({"sent": False} if hold.sent is False else {}),
            },
            durable=True,
        )
        assert written is not None
        return written

    async def _hold_on_disk(self, hold: Hold, written: asyncio.Future[None]) -> None:
        """Wait (outside the lock) until the hold's line is on disk; undo the hold if it
        never will be."""
        try:
            await written
        except SpendLogError:
            self._release(hold)  # its line was dropped: nothing to settle
            raise
        except asyncio.CancelledError:
            # The hold line may still reach the file: settle it, so no restart charges it.
            self.settle(hold, ZERO, {"status": 499, "cost_source": "none"})
            raise

    def name_generation(self, hold: Hold, generation_id: str) -> None:
        """Record the generation id as soon as upstream names it (for crash recovery)."""
        if hold.generation_id is not None or hold.settled:
            return
        hold.generation_id = generation_id
        self._append(
            {
                "ts": iso(self._clock()),
                "event": "hold",
                "request_id": hold.request_id,
                "agent_id": hold.agent_id,
                "held": hold.amount,
                "generation_id": generation_id,
            }
        )

    def mark_sent(self, hold: Hold) -> asyncio.Future[None] | None:
        """Record, durably, that the request is about to reach upstream; its call waits
        for the returned future. Without this mark a crash recovery knows the request
        never left the gate (see gate.books.reconcile). None: nothing to wait for."""
        if not self.marks_sends or hold.sent or hold.settled:
            return None
        hold.sent = True
        return self._append(
            {
                "ts": iso(self._clock()),
                "event": "sent",
                "request_id": hold.request_id,
                "agent_id": hold.agent_id,
            },
            durable=True,
        )

    def settle(self, hold: Hold, cost: Decimal, line: dict[str, Any]) -> Decimal | None:
        """Release the hold, charge the real cost and write the request line.
        Returns the agent's remaining budget. Settling twice does nothing."""
        if hold.settled:
            return None
        hold.settled = True
        self._forget(hold)
        now = self._clock()
        acct = self._book(hold.agent_id)  # a dormant agent's stream is charged to it
        remaining: Decimal | None = None
        if acct is not None:
            self._roll(acct, now, record=True)
            self._sync_held(acct)
            acct.spent += cost
            remaining = acct.remaining
        line.update(
            ts=iso(now),
            event="request",
            request_id=hold.request_id,
            agent_id=hold.agent_id,
            cost=cost,
            budget_remaining=remaining,
        )
        self._append(line)
        self._tell_line(line, refused=False)
        if hold.agent_id in self._accounts:
            self._notify(hold.agent_id, "settle")
        return remaining

    def record_refusal(self, line: dict[str, Any]) -> None:
        """A request that never went upstream: a line with cost 0, no state change."""
        agent_id = line.get("agent_id")
        acct = self._accounts.get(agent_id) if isinstance(agent_id, str) else None
        line.update(
            ts=iso(self._clock()),
            event="request",
            cost=ZERO,
            cost_source="none",
            budget_remaining=acct.remaining if acct is not None else None,
        )
        self._append(line)
        self._tell_line(line, refused=True)

    def count_refusal(self, line: dict[str, Any], reason: str) -> None:
        """A request refused before a known agent was authenticated: counted into the
        next `refusals` line (`gate.books.refusals`), not written on its own."""
        line.update(
            ts=iso(self._clock()), event="request", cost=ZERO, cost_source="none",
            budget_remaining=None,
        )
        self.refusals.add(line["ts"], line["status"], reason, line.get("agent_id"))
        self._tell_line(line, refused=True)

    def flush_refusals(self) -> None:
        """Write the refusals counted since the last such line, if any."""
        record = self.refusals.take(iso(self._clock()))
        if record is not None:
            self._append(record)

    def _tell_line(self, line: Mapping[str, Any], *, refused: bool) -> None:
        for observer in self.line_observers:
            try:
                observer(line, refused)
            except Exception:  # an observer's bug never breaks the books
                log.exception("ledger line observer failed")

    def projected_remaining(self, hold: Hold, cost: Decimal) -> Decimal | None:
        acct = self._book(hold.agent_id)
        return None if acct is None else acct.remaining - cost

    def _release(self, hold: Hold) -> None:
        hold.settled = True
        self._forget(hold)
        acct = self._book(hold.agent_id)
        if acct is not None:
            self._sync_held(acct)

    def _sync_held(self, acct: Account) -> None:
        """`held` is the sum of the agent's open holds, summed again on every change (a
        running tally could drift); a shared store keeps its own (`RedisLedger`)."""
        agent_id = acct.policy.agent_id
        acct.held = sum(
            (h.amount for h in self._holds.values() if h.agent_id == agent_id and not h.settled),
            ZERO,
        )

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
            self._roll(acct, now, record=True)
            line: dict[str, Any] = {"ts": iso(now), "event": "budget", "agent_id": agent_id}
            if budget_total is not None:
                acct.budget_total = budget_total
                acct.total_set_by_admin = True
                line["budget_total"] = budget_total
            if budget_spent is not None:
                acct.spent = budget_spent
                line["budget_spent"] = budget_spent
            if source is not None:
                line["source"] = source
            self._append(line)
            self._notify(agent_id, "budget")

    async def reset(self, agent_id: str, reason: str = "admin") -> None:
        acct = self._accounts[agent_id]
        async with acct.lock:
            now = self._clock()
            self._roll(acct, now, record=True)
            acct.spent = ZERO
            self._append({"ts": iso(now), "event": "reset", "agent_id": agent_id, "reason": reason})
            self._notify(agent_id, "reset")

    def apply_policies(self, agents: Mapping[str, AgentPolicy]) -> None:
        """A reloaded config: new policies in force, spend kept; a budget total set
        through the admin API stays until the config's own total changes. A removed
        agent's account turns dormant, and an agent added back resumes it."""
        now = self._clock()
        accounts: dict[str, Account] = {}
        for agent_id, policy in agents.items():
            acct = self._accounts.get(agent_id) or self._dormant.pop(agent_id, None)
            if acct is None:
                accounts[agent_id] = _new_account(policy, now)
                continue
            if not acct.total_set_by_admin or policy.budget_total != acct.policy.budget_total:
                acct.budget_total = policy.budget_total
                acct.total_set_by_admin = False
            acct.policy = policy
            self._roll(acct, now, record=True)
            accounts[agent_id] = acct
        self._dormant.update((a, acct) for a, acct in self._accounts.items() if a not in accounts)
        self._accounts = accounts
        for agent_id in accounts:
            self._notify(agent_id, "policy")

    # -- periods ----------------------------------------------------------------------

    def _roll(self, acct: Account, now: datetime, *, record: bool) -> None:
        known = acct.period_known
        if (
            known is not None
            and known[0] == acct.policy.period
            and known[1] == acct.period_start
            and known[1] <= now < known[2]
        ):
            return  # the common case, on every request: still in the current period
        start = period_start(acct.policy.period, now)
        if start is not None and acct.period_start == start:
            end = period_end(acct.policy.period, now)
            assert end is not None
            acct.period_known = (acct.policy.period, start, end)
        if start is None or acct.period_start is None:
            acct.period_start = start
            return
        if start <= acct.period_start:
            return
        acct.period_start = start
        acct.spent = ZERO
        if record:
            self._append(
                {
                    "ts": iso(now),
                    "event": "reset",
                    "agent_id": acct.policy.agent_id,
                    "reason": "period",
                }
            )
            self._notify(acct.policy.agent_id, "period")

    # -- start-up ---------------------------------------------------------------------

    def replay(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Rebuild every account from the log; returns the number of records applied.
        Holds without a request line stay open (see `open_holds`) for reconciliation."""
        for acct in self._accounts.values():
            acct.period_start = None  # set by the agent's first line, rolled by later ones
        count = 0
        for record in records:
            count += 1
            self._apply(record)
        now = self._clock()
        for acct in [*self._accounts.values(), *self._dormant.values()]:
            self._roll(acct, now, record=False)
        if self._holds:
            self._no_holds.clear()
        for hold in self._holds.values():
            holder = self._book(hold.agent_id)
            if holder is not None:
                holder.held += hold.amount
        return count

    def _apply(self, record: Mapping[str, Any]) -> None:
        event = record.get("event")
        if event == "snapshot":
            self._restore(record)
            return
        agent_id = record.get("agent_id")
        request_id = record.get("request_id")
        if event == "hold" and isinstance(request_id, str) and isinstance(agent_id, str):
            hold = self._holds.get(request_id)
            if hold is None:
                amount = to_decimal(record.get("held")) or ZERO
                hold = self._holds[request_id] = Hold(request_id, agent_id, amount)
            gen = record.get("generation_id")
            if isinstance(gen, str):
                hold.generation_id = gen
            if record.get("sent") is False and hold.sent is None:
                hold.sent = False  # a send mark comes before the request can leave
            return
        if event == "sent":
            if isinstance(request_id, str) and (sent := self._holds.get(request_id)):
                sent.sent = True
            return
        if event == "request" and isinstance(request_id, str):
            self._holds.pop(request_id, None)
        acct = self._book(agent_id) if isinstance(agent_id, str) else None
        if acct is None:
            return
        ts = parse_ts(record.get("ts"))
        if ts is not None:
            self._roll(acct, ts, record=False)
        if event == "request":
            acct.spent += to_decimal(record.get("cost")) or ZERO
        elif event == "reset" and not _rolled_already(acct, record):
            acct.spent = ZERO
        elif event == "budget":
            total = to_decimal(record.get("budget_total"))
            spent = to_decimal(record.get("budget_spent"))
            if total is not None:
                acct.budget_total = total
                acct.total_set_by_admin = True
            if spent is not None:
                acct.spent = spent

    def _restore(self, snapshot: Mapping[str, Any]) -> None:
        agents = snapshot.get("agents")
        for agent_id, saved in (agents if isinstance(agents, dict) else {}).items():
            if not isinstance(saved, dict):
                continue
            acct = self._accounts.get(agent_id)
            if acct is None:  # not configured now: kept dormant, never forgotten
                acct = self._dormant[agent_id] = _dormant_account(agent_id, saved)
            total = to_decimal(saved.get("budget_total"))
            if saved.get("total_set_by_admin") is True and total is not None:
                acct.budget_total, acct.total_set_by_admin = total, True
            acct.spent = to_decimal(saved.get("spent")) or ZERO
            acct.period_start = parse_ts(saved.get("period_start"))
        self._holds.clear()
        holds = snapshot.get("holds")
        for request_id, saved in (holds if isinstance(holds, dict) else {}).items():
            if isinstance(saved, dict) and isinstance(saved.get("agent_id"), str):
                hold = Hold(request_id, saved["agent_id"], to_decimal(saved.get("held")) or ZERO)
                gen = saved.get("generation_id")
                hold.generation_id = gen if isinstance(gen, str) else None
                sent = saved.get("sent")
                hold.sent = sent if isinstance(sent, bool) else None
                self._holds[request_id] = hold


def _rolled_already(acct: Account, record: Mapping[str, Any]) -> bool:
    """A period line naming the start it rolled to (the Redis store's) when the books
    are in that period already: the lines' own timestamps rolled them, and lines of the
    new period written before this one (on any instance) count in it."""
    rolled_to = parse_ts(record.get("period_start")) if record.get("reason") == "period" else None
    if rolled_to is None or acct.period_start is None:
        return False
    return acct.period_start >= rolled_to


def _dormant_entry(acct: Account) -> dict[str, Any]:
    """A dormant account in a snapshot: what a configured one has, and what a start
    without the agent in its config needs to keep it (its period, its config total)."""
    return {
        "budget_total": acct.budget_total,
        "total_set_by_admin": acct.total_set_by_admin,
        "spent": acct.spent,
        "period_start": iso(acct.period_start) if acct.period_start else None,
        "dormant": True,
        "period": acct.policy.period,
        "config_total": acct.policy.budget_total,
    }


def _dormant_account(agent_id: str, saved: Mapping[str, Any]) -> Account:
    """A snapshot's account of an agent the config does not name. Its policy is a
    stand-in that admits nothing (no tiers); a reload naming the agent replaces it."""
    period = saved.get("period")
    total = to_decimal(saved.get("config_total")) or to_decimal(saved.get("budget_total")) or ZERO
    policy = AgentPolicy(
        agent_id=agent_id,
        budget_total=total,
        budget_spent=ZERO,
        budget_source="config",
        period=period if period in PERIODS else "never",
        hard_cap=True,
        tiers=(),
    )
    return Account(policy=policy, budget_total=total, spent=ZERO, period_start=None)


def _new_account(policy: AgentPolicy, now: datetime) -> Account:
    return Account(
        policy=policy,
        budget_total=policy.budget_total,
        spent=policy.budget_spent,
        period_start=period_start(policy.period, now),
    )
