"""An agent's account: its budget, spend and holds in one period, how it rolls into
the next period, and how the admin API shows it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from gate.config import AgentPolicy, Tier
from gate.core.clock import iso
from gate.core.cost import ZERO, to_decimal
from gate.core.periods import PERIODS, period_end, period_start
from gate.core.router import choose_tier, remaining_fraction

if TYPE_CHECKING:
    from gate.books.holds import Hold
    from gate.books.tasks import Task


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


class Books(NamedTuple):
    """The ledger's whole state, by reference: the configured accounts, the dormant
    ones (agents a reload removed), the holds by request id and the tasks by id."""

    accounts: Mapping[str, Account]
    dormant: dict[str, Account]
    holds: dict[str, Hold]
    tasks: dict[str, Task]

    def book(self, agent_id: str) -> Account | None:
        """The agent's account, configured or dormant."""
        return self.accounts.get(agent_id) or self.dormant.get(agent_id)


def new_account(policy: AgentPolicy, now: datetime) -> Account:
    return Account(
        policy=policy,
        budget_total=policy.budget_total,
        spent=policy.budget_spent,
        period_start=period_start(policy.period, now),
    )


def dormant_account(agent_id: str, saved: Mapping[str, Any]) -> Account:
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


def roll_period(acct: Account, now: datetime) -> bool:
    """Bring the account into the period `now` is in; True when that is a new period
    (its spend back to zero), which the caller may record as a period reset line."""
    known = acct.period_known
    if (
        known is not None
        and known[0] == acct.policy.period
        and known[1] == acct.period_start
        and known[1] <= now < known[2]
    ):
        return False  # the common case, on every request: still in the current period
    start = period_start(acct.policy.period, now)
    if start is not None and acct.period_start == start:
        end = period_end(acct.policy.period, now)
        assert end is not None
        acct.period_known = (acct.policy.period, start, end)
    if start is None or acct.period_start is None:
        acct.period_start = start
        return False
    if start <= acct.period_start:
        return False
    acct.period_start = start
    acct.spent = ZERO
    return True


def take_policy(acct: Account, policy: AgentPolicy) -> None:
    """A reloaded policy in force, spend kept; a budget total set through the admin
    API stays until the config's own total changes."""
    if not acct.total_set_by_admin or policy.budget_total != acct.policy.budget_total:
        acct.budget_total = policy.budget_total
        acct.total_set_by_admin = False
    acct.policy = policy


def carry_accounts(
    current: Mapping[str, Account],
    dormant: dict[str, Account],
    agents: Mapping[str, AgentPolicy],
    now: datetime,
) -> tuple[dict[str, Account], list[Account]]:
    """A reloaded config's accounts, the one rule every store follows: a configured agent
    keeps its account (spend kept, the new policy taken), one added back resumes its
    dormant account, a new one starts fresh, and a removed one's account turns dormant
    (moved into `dormant`, in place). Returns the new accounts and those carried over
    (whose periods the store then rolls)."""
    accounts: dict[str, Account] = {}
    carried: list[Account] = []
    for agent_id, policy in agents.items():
        acct = current.get(agent_id) or dormant.pop(agent_id, None)
        if acct is None:
            accounts[agent_id] = new_account(policy, now)
            continue
        take_policy(acct, policy)
        carried.append(acct)
        accounts[agent_id] = acct
    dormant.update((a, acct) for a, acct in current.items() if a not in accounts)
    return accounts, carried


def next_reset_at(acct: Account, now: datetime) -> datetime | None:
    """When the budget next resets (its period's end, UTC), None for `never`."""
    known = acct.period_known
    if known is not None and known[0] == acct.policy.period and known[1] <= now < known[2]:
        return known[2]  # the current period's, as `roll_period` found it
    return period_end(acct.policy.period, now)


def next_reset(acct: Account, now: datetime) -> str | None:
    """`next_reset_at` as the spend log writes time."""
    end = next_reset_at(acct, now)
    return iso(end) if end is not None else None


def tier_of(acct: Account) -> Tier | None:
    """The tier the account's remaining budget routes to now."""
    policy = acct.policy
    return choose_tier(policy.tiers, acct.budget_total, acct.committed, policy.hard_cap)


def account_view(agent_id: str, acct: Account) -> dict[str, Any]:
    """The account as the admin API shows it."""
    policy = acct.policy
    tier = tier_of(acct)
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
        # where each tier starts, as a fraction of the budget left (the dashboard's marks)
        "tier_thresholds": [{"name": t.name, "threshold": t.threshold} for t in policy.tiers],
    }
