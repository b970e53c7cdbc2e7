"""When an agent's budget runs out at its recent pace. Pure: no clock, no I/O.

The pace is a time-decayed spend rate. Each settled cost adds to a "mass" that halves
every `HALF_LIFE_SECONDS` (1 h); the rate is that mass times ln 2 / half-life, in USD
an hour. For steady spend at R $/h the rate converges on R; a burst of $B followed by
quiet reads B·ln2/h at first and halves every hour after, so quiet brings the
projection back out past the reset by itself. Unlike spent ÷ elapsed, the first call of
a period does not read as an infinite rate: one $1 call reads as $0.69/h.

`project(rate, remaining, now, resets_at)` is remaining ÷ rate: when that lands before
the period's end (or the period is `never`), `before_reset` is true.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from gate.core.clock import iso

__all__ = ["HALF_LIFE_SECONDS", "Forecast", "Pace", "project", "start"]

HALF_LIFE_SECONDS: Final = 3600.0
_DECAY: Final = math.log(2) / HALF_LIFE_SECONDS  # per second
# Below this a rate is no pace at all (a $0.000001 call a day): no projection.
MIN_RATE_USD_PER_HOUR: Final = 1e-9
# Beyond this a projection is no date worth naming (and stays inside datetime's range).
MAX_HORIZON: Final = timedelta(days=3650)
_MAX_HOURS: Final = MAX_HORIZON.total_seconds() / 3600


@dataclass(frozen=True, slots=True)
class Pace:
    """The decayed spend mass (USD) as of `at` (aware UTC)."""

    mass: float
    at: datetime

    def add(self, cost: Decimal | float, when: datetime) -> Pace:
        """The pace after a cost settled at `when`; a line older than `at` is decayed
        into the mass as of `at` (lines may arrive slightly out of order)."""
        amount = float(cost)
        if not math.isfinite(amount) or amount <= 0:
            return self
        if when >= self.at:
            return Pace(self.decayed(when) + amount, when)
        age = (self.at - when).total_seconds()
        return Pace(self.mass + amount * math.exp(-_DECAY * age), self.at)

    def decayed(self, now: datetime) -> float:
        seconds = max(0.0, (now - self.at).total_seconds())
        return self.mass * math.exp(-_DECAY * seconds)

    def rate_usd_per_hour(self, now: datetime) -> float:
        return self.decayed(now) * _DECAY * 3600.0


def start(cost: Decimal | float, when: datetime) -> Pace:
    return Pace(0.0, when).add(cost, when)


@dataclass(frozen=True, slots=True)
class Forecast:
    rate_usd_per_hour: float
    runs_out_at: datetime | None  # None: no spend to project from, or never within reach
    before_reset: bool  # runs out before `resets_at` (always, for a `never` period)
    resets_at: datetime | None  # None: a `never` period

    def view(self) -> dict[str, object]:
        return {
            "rate_usd_per_hour": float(f"{self.rate_usd_per_hour:.6g}"),  # 6 figures, tiny too
            "runs_out_at": _iso(self.runs_out_at),
            "before_reset": self.before_reset,
            "resets_at": _iso(self.resets_at),
        }


def _iso(when: datetime | None) -> str | None:
    return None if when is None else iso(when)


def project(
    rate_usd_per_hour: float,
    remaining: Decimal | None,
    now: datetime,
    resets_at: datetime | None,
) -> Forecast:
    """When `remaining` (None: unlimited) runs out at `rate_usd_per_hour`, and whether
    that is before `resets_at`. A budget already out runs out `now`."""
    rate = rate_usd_per_hour if math.isfinite(rate_usd_per_hour) else 0.0
    rate = max(rate, 0.0)
    if remaining is None:
        return Forecast(rate, None, False, resets_at)
    if remaining <= 0:
        return Forecast(rate, now, resets_at is None or now < resets_at, resets_at)
    if rate < MIN_RATE_USD_PER_HOUR:
        return Forecast(rate, None, False, resets_at)
    hours = float(remaining) / rate
    if not math.isfinite(hours) or hours > _MAX_HOURS:  # compared as a float: a timedelta
        # of that many hours may not even exist (OverflowError past 999,999,999 days)
        return Forecast(rate, None, False, resets_at)
    runs_out = now + timedelta(hours=hours)
    before = resets_at is None or runs_out < resets_at
    return Forecast(rate, runs_out, before, resets_at)
