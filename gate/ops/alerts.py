"""Alerts to a Slack- or Discord-compatible webhook, and the list behind /api/alerts.

The ledger, the spend log and the upstream client tell the alerter what changed through
small synchronous hooks; it decides at once whether a line was crossed, records the
alert and queues it. One background task posts the queue, in order, with retries: no
request ever waits for a webhook.

What fires (each once per crossing):
- `budget_fraction`: an agent's spend reached one of `alerts.spent_fractions`;
- `tier_drop`: its spend put it in a lower tier;
- `budget_refused`: a request of a hard-capped agent was refused by its budget;
- `upstream_credits`: OpenRouter answered 402 without Retry-After (credits gone);
- `upstream_rate_limited`: `rate_limit_storm_count` upstream 429s within
  `rate_limit_storm_seconds`;
- `budget_forecast`: at its recent pace (`gate.books.paces`) an agent's budget runs out
  before its period resets — once a period (re-armed by a reset, a budget change or a new
  period), before any threshold need be reached;
- `loop_detected`: the runaway breaker refused an agent's request (once per episode:
  `gate.core.loops`);
- `spend_log_failing` / `spend_log_recovered`.

Deduplication is by level, not by time: per agent the alerter remembers how many
fractions it has reported, the lowest tier it has reported and whether it reported a
refusal. A level fires when it is first reached and is re-armed only when the agent
falls back below it (a new period, a reset, a raised budget), so repeated crossings of
the same line within a period never fire twice. The levels are taken from the ledger
as replayed at start, so a restart re-sends nothing that was already crossed. Upstream
alerts re-arm when upstream recovers (a 200; a window without 429s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from gate.books.accounts import Account, next_reset_at
from gate.context import Gate
from gate.core.clock import Clock, iso
from gate.core.loops import SAME_REQUEST, Loop
from gate.core.router import choose_tier
from gate.ops.webhook import Alert, deliver

log = logging.getLogger(__name__)

RECENT = 200  # alerts kept for /api/alerts
QUEUE_LIMIT = 1000  # undelivered alerts kept while the webhook is down; the oldest go first
RE_ARMING = frozenset({"budget", "reset", "period", "policy"})  # may lift an agent off its cap


@dataclass(slots=True)
class _Levels:
    fractions: int  # how many of spent_fractions have been reported
    tier: int  # index of the lowest tier reported (0: the top one)
    capped: bool  # a refusal at the cap has been reported
    pace: bool = False  # a projection running out before the reset has been reported


def _usd(amount: Decimal) -> str:
    return f"${amount:,.2f}"


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


class Alerter:
    def __init__(self, gate: Gate, clock: Clock) -> None:
        self._gate = gate
        self._clock = clock
        self.recent: deque[Alert] = deque(maxlen=RECENT)
        self._queue: deque[Alert] = deque()
        self._wakeup = asyncio.Event()
        self._next_id = 1
        self._levels: dict[str, _Levels] = {}
        self._credits_out = False
        self._rate_limited: deque[float] = deque()
        self._storm_until = 0.0  # monotonic: a storm is on until a quiet window passes
        self._log_failing = False
        for agent_id in gate.ledger.agent_ids():  # what was crossed before this start
            acct = gate.ledger.account(agent_id)
            if acct is not None:
                fractions, tier, exhausted = self._measure(acct)
                self._levels[agent_id] = _Levels(fractions, tier, exhausted)
        if gate.ledger.spend_log.error is not None:
            self.spend_log_changed(gate.ledger.spend_log.error)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- hooks (synchronous, cheap, never raising into the caller's path) -----------

    def ledger_changed(self, agent_id: str, change: str) -> None:
        acct = self._gate.ledger.account(agent_id)
        if acct is None:
            return
        fractions, tier, exhausted = self._measure(acct)
        seen = self._levels.get(agent_id)
        if seen is None:  # an agent added by a reload starts where it stands
            self._levels[agent_id] = _Levels(fractions, tier, exhausted)
            return
        if fractions > seen.fractions:
            self._fraction_alert(agent_id, acct, fractions)
        if tier > seen.tier and not exhausted:  # at a hard cap it is refused, not moved
            self._tier_alert(agent_id, acct, tier)
        seen.fractions, seen.tier = fractions, tier
        if change == "refused" and not seen.capped:
            seen.capped = True
            self._fire(
                "budget_refused",
                f"{agent_id} was refused at its budget cap: {_usd(acct.spent)} of "
                f"{_usd(acct.budget_total)} spent; its requests get 402 until the budget "
                "is raised or reset or the period ends",
                agent_id,
                budget_total=acct.budget_total,
                budget_spent=acct.spent,
            )
        elif change in RE_ARMING and not exhausted:
            seen.capped = False
        if change in RE_ARMING:
            seen.pace = False  # a new period, a reset, a new budget: a new projection
        elif change == "settle" and not seen.pace and not exhausted:
            seen.pace = self._pace_alert(agent_id, acct)

    def upstream_answer(self, status: int, retry_after: float | None) -> None:
        if status == 200:
            self._credits_out = False
            return
        if status == 402 and retry_after is None:
            if not self._credits_out:
                self._credits_out = True
                self._fire(
                    "upstream_credits",
                    "OpenRouter answered 402: the key's credits are used up; "
                    "every request fails until credits are added",
                    status=402,
                )
            return
        if status != 429:
            return
        now = time.monotonic()
        cfg = self._gate.config.alerts
        window, count = cfg.rate_limit_storm_seconds, cfg.rate_limit_storm_count
        seen = self._rate_limited
        if seen.maxlen != count:
            seen = self._rate_limited = deque(seen, maxlen=count)
        seen.append(now)
        storming = now < self._storm_until
        if storming or (len(seen) == count and seen[0] >= now - window):
            self._storm_until = now + window  # on until a window passes without a 429
        if not storming and now < self._storm_until:
            self._fire(
                "upstream_rate_limited",
                f"OpenRouter answered 429 (rate limited) {count} times within "
                f"{window:g} s; requests are being retried and may fail",
                status=429,
                count=count,
                window_seconds=window,
            )

    def loop_detected(self, agent_id: str, loop: Loop) -> None:
        what = (
            f"the same request more than {loop.limit} times within {loop.window_seconds:g} s"
            if loop.rule == SAME_REQUEST
            else f"more than {loop.limit} requests a minute without a new user message"
        )
        self._fire(
            "loop_detected",
            f"{agent_id} looks stuck in a loop: it sent {what}; such requests get 429 "
            "loop_detected (nothing is sent upstream) until they slow down or change",
            agent_id,
            rule=loop.rule,
            limit=loop.limit,
            window_seconds=loop.window_seconds,
        )

    def spend_log_changed(self, error: str | None) -> None:
        if error is not None and not self._log_failing:
            self._log_failing = True
            self._fire(
                "spend_log_failing",
                f"the spend log cannot be written ({error}); paid requests are refused "
                "with 503 until it can",
                error=error,
            )
        elif error is None and self._log_failing:
            self._log_failing = False
            self._fire("spend_log_recovered", "the spend log is being written again")

    # -- deciding ---------------------------------------------------------------------

    def _measure(self, acct: Account) -> tuple[int, int, bool]:
        """(fractions reached, tier index by spend, exhausted at a hard cap)."""
        total, spent, policy = acct.budget_total, acct.spent, acct.policy
        used = Decimal(1) if total <= 0 else spent / total
        fractions = sum(1 for f in self._gate.config.alerts.spent_fractions if used >= f)
        tier = choose_tier(policy.tiers, total, spent, hard_cap=False)
        index = policy.tiers.index(tier) if tier is not None else 0
        return fractions, index, policy.hard_cap and total - spent <= 0

    def _fraction_alert(self, agent_id: str, acct: Account, reached: int) -> None:
        fractions = self._gate.config.alerts.spent_fractions
        fraction = fractions[reached - 1]
        total = acct.budget_total
        used = Decimal(1) if total <= 0 else acct.spent / total  # may jump past several
        self._fire(
            "budget_fraction",
            f"{agent_id} has spent {used:.0%} of its {acct.policy.period} budget "
            f"({_usd(acct.spent)} of {_usd(total)}), past its {fraction:.0%} alert",
            agent_id,
            fraction=fraction,
            budget_total=acct.budget_total,
            budget_spent=acct.spent,
        )

    def _pace_alert(self, agent_id: str, acct: Account) -> bool:
        """Whether the agent's pace (`gate.books.paces`) runs its budget out before the
        period resets; if so, said once, before any threshold need be reached."""
        reset = next_reset_at(acct, self._gate.ledger.now())  # the account was just rolled
        if reset is None:  # `never`: there is no reset to run out before
            return False
        if self._gate.paces.outlasts(agent_id, acct.remaining, reset):
            return False  # the usual case, said without building a forecast
        forecast = self._gate.paces.forecast_at(agent_id, acct.remaining, reset)
        if not forecast.before_reset or forecast.runs_out_at is None:
            return False
        self._fire(
            "budget_forecast",
            f"at this pace {agent_id} runs out at {_when(forecast.runs_out_at)}, before its "
            f"reset at {_when(forecast.resets_at)} ({_usd(acct.spent)} of "
            f"{_usd(acct.budget_total)} spent, {forecast.rate_usd_per_hour:.4g} $/h)",
            agent_id,
            **forecast.view(),
        )
        return True

    def _tier_alert(self, agent_id: str, acct: Account, index: int) -> None:
        tiers = acct.policy.tiers
        tier = tiers[index]
        self._fire(
            "tier_drop",
            f"{agent_id} dropped to tier {tier.name} ({', '.join(tier.models)}): "
            f"{_usd(acct.spent)} of {_usd(acct.budget_total)} spent",
            agent_id,
            tier=tier.name,
            models=list(tier.models),
            budget_total=acct.budget_total,
            budget_spent=acct.spent,
        )

    def _fire(self, kind: str, message: str, agent_id: str | None = None, **details: Any) -> None:
        alert = Alert(self._next_id, iso(self._clock()), kind, message, agent_id, details)
        self._next_id += 1
        self.recent.append(alert)
        log.warning("alert %s: %s", kind, message)
        if self._gate.config.alerts.webhook_url is None:
            alert.delivery = "not_configured"
            return
        if len(self._queue) >= QUEUE_LIMIT:
            self._queue.popleft().delivery = "dropped"
        self._queue.append(alert)
        self._wakeup.set()

    # -- delivering -------------------------------------------------------------------

    async def run(self) -> None:
        """Post queued alerts, one at a time, in order, until cancelled."""
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await deliver(self._gate, self._queue.popleft())
