"""gate.core.periods: UTC period boundaries, as a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gate.core.periods import PERIODS, period_end, period_start


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def at(year: int, month: int, day: int, hour: int, minute: int = 0, *, hours: float) -> datetime:
    """A local time at a fixed UTC offset of `hours`."""
    return datetime(year, month, day, hour, minute, tzinfo=timezone(timedelta(hours=hours)))


CASES = [
    # (period, now, start, end)
    ("daily", utc(2024, 5, 17, 13, 45, 12, 345), utc(2024, 5, 17), utc(2024, 5, 18)),
    ("daily", utc(2024, 5, 17), utc(2024, 5, 17), utc(2024, 5, 18)),  # exactly at start
    ("daily", utc(2024, 5, 17, 23, 59, 59, 999999), utc(2024, 5, 17), utc(2024, 5, 18)),
    ("daily", utc(2024, 1, 31, 12), utc(2024, 1, 31), utc(2024, 2, 1)),  # month end
    ("daily", utc(2023, 12, 31, 12), utc(2023, 12, 31), utc(2024, 1, 1)),  # year end
    ("daily", utc(2024, 2, 28, 12), utc(2024, 2, 28), utc(2024, 2, 29)),  # leap year
    ("daily", utc(2024, 2, 29, 12), utc(2024, 2, 29), utc(2024, 3, 1)),  # leap day
    ("daily", utc(2023, 2, 28, 12), utc(2023, 2, 28), utc(2023, 3, 1)),  # common year
    # weekly: 2024-05-13 is a Monday, 2024-05-19 a Sunday
    ("weekly", utc(2024, 5, 13), utc(2024, 5, 13), utc(2024, 5, 20)),  # Monday 00:00
    ("weekly", utc(2024, 5, 13, 0, 0, 0, 1), utc(2024, 5, 13), utc(2024, 5, 20)),
    ("weekly", utc(2024, 5, 16, 9), utc(2024, 5, 13), utc(2024, 5, 20)),  # Thursday
    ("weekly", utc(2024, 5, 19, 23, 59, 59, 999999), utc(2024, 5, 13), utc(2024, 5, 20)),
    ("weekly", utc(2024, 5, 20), utc(2024, 5, 20), utc(2024, 5, 27)),  # next Monday
    ("weekly", utc(2025, 1, 1, 8), utc(2024, 12, 30), utc(2025, 1, 6)),  # across a year
    ("weekly", utc(2024, 2, 29), utc(2024, 2, 26), utc(2024, 3, 4)),  # across leap day
    ("weekly", utc(2021, 1, 3, 12), utc(2020, 12, 28), utc(2021, 1, 4)),  # Sunday, ISO week 53
    ("monthly", utc(2024, 5, 17, 13), utc(2024, 5, 1), utc(2024, 6, 1)),
    ("monthly", utc(2024, 5, 1), utc(2024, 5, 1), utc(2024, 6, 1)),  # exactly at start
    ("monthly", utc(2024, 5, 31, 23, 59, 59, 999999), utc(2024, 5, 1), utc(2024, 6, 1)),
    ("monthly", utc(2024, 2, 29, 23), utc(2024, 2, 1), utc(2024, 3, 1)),  # leap day
    ("monthly", utc(2023, 2, 28, 23), utc(2023, 2, 1), utc(2023, 3, 1)),
    ("monthly", utc(2023, 12, 31, 23, 59), utc(2023, 12, 1), utc(2024, 1, 1)),  # year end
    ("monthly", utc(2024, 1, 1), utc(2024, 1, 1), utc(2024, 2, 1)),  # year start
    ("never", utc(2024, 5, 17, 13), None, None),
    # aware but not UTC: converted first, so the UTC day/week/month counts
    ("daily", at(2024, 5, 18, 1, hours=2), utc(2024, 5, 17), utc(2024, 5, 18)),
    ("daily", at(2024, 5, 17, 22, hours=-5), utc(2024, 5, 18), utc(2024, 5, 19)),
    # Monday locally, still Sunday in UTC
    ("weekly", at(2024, 5, 20, 0, 30, hours=1), utc(2024, 5, 13), utc(2024, 5, 20)),
    # March locally, still leap-day February in UTC
    ("monthly", at(2024, 3, 1, 5, 29, hours=5.5), utc(2024, 2, 1), utc(2024, 3, 1)),
    # New Year's Eve locally, already January in UTC
    ("monthly", at(2023, 12, 31, 20, hours=-8), utc(2024, 1, 1), utc(2024, 2, 1)),
]


@pytest.mark.parametrize(("period", "now", "start", "end"), CASES)
def test_period_boundaries(
    period: str, now: datetime, start: datetime | None, end: datetime | None
) -> None:
    got_start = period_start(period, now)
    got_end = period_end(period, now)
    assert got_start == start
    assert got_end == end
    if got_start is not None and got_end is not None:
        assert got_start.utcoffset() == timedelta(0)
        assert got_end.utcoffset() == timedelta(0)
        assert got_start <= now < got_end
        # the end is the next period's start
        assert period_start(period, got_end) == got_end


def test_periods_tuple() -> None:
    assert PERIODS == ("daily", "weekly", "monthly", "never")


@pytest.mark.parametrize("period", PERIODS)
def test_naive_datetime_raises(period: str) -> None:
    naive = datetime(2024, 5, 17, 12)
    with pytest.raises(ValueError, match="naive"):
        period_start(period, naive)
    with pytest.raises(ValueError, match="naive"):
        period_end(period, naive)


@pytest.mark.parametrize("period", ["hourly", "Daily", "", "month"])
def test_unknown_period_raises(period: str) -> None:
    now = utc(2024, 5, 17)
    with pytest.raises(ValueError, match="unknown period"):
        period_start(period, now)
    with pytest.raises(ValueError, match="unknown period"):
        period_end(period, now)
