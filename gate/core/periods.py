"""Budget period boundaries, in UTC. Pure: the caller passes the clock in.

A period is the half-open interval ``[period_start(p, now), period_end(p, now))``:
`daily` starts at midnight UTC, `weekly` on Monday 00:00 UTC (ISO weeks), `monthly`
on the 1st at 00:00 UTC. `never` has no boundaries, so both functions give None.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["PERIODS", "period_end", "period_start"]

PERIODS: Final = ("daily", "weekly", "monthly", "never")


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()}: pass an aware (UTC) datetime")
    return now.astimezone(UTC)


def _check(period: str) -> None:
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}: must be one of {', '.join(PERIODS)}")


def period_start(period: str, now: datetime) -> datetime | None:
    """Start of the period that contains `now` (aware, UTC); None for `never`."""
    _check(period)
    now = _utc(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return midnight
    if period == "weekly":
        return midnight - timedelta(days=midnight.weekday())  # Monday is 0
    if period == "monthly":
        return midnight.replace(day=1)
    return None


def period_end(period: str, now: datetime) -> datetime | None:
    """Exclusive end of the period that contains `now`: the next start. None for `never`."""
    start = period_start(period, now)
    if start is None:
        return None
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(weeks=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)
