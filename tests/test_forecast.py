"""The forecast as a pure function: the decayed pace and the projection, with tables."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gate.core.forecast import HALF_LIFE_SECONDS, Pace, project, start
from gate.core.periods import period_end

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def steady(usd_per_hour: float, hours: float, every: timedelta = timedelta(minutes=1)) -> Pace:
    pace = Pace(0.0, T0)
    per_call = usd_per_hour * every.total_seconds() / 3600
    t = T0
    while t < T0 + timedelta(hours=hours):
        t += every
        pace = pace.add(per_call, t)
    return pace


@pytest.mark.parametrize(
    ("usd_per_hour", "hours", "expected", "tolerance"),
    [
        (2.0, 8, 2.0, 0.02),  # long steady spend: the pace is the spend rate
        (0.5, 12, 0.5, 0.01),
        (2.0, 1, 1.0, 0.02),  # one half-life in: half of the true rate has built up
    ],
)
def test_steady_spend_converges_on_its_rate(usd_per_hour, hours, expected, tolerance):
    pace = steady(usd_per_hour, hours)
    assert pace.rate_usd_per_hour(pace.at) == pytest.approx(expected, rel=tolerance)


def test_a_burst_then_quiet_halves_every_half_life():
    pace = start(Decimal("1"), T0)
    first = pace.rate_usd_per_hour(T0)
    assert first == pytest.approx(math.log(2))  # $1 now reads $0.69/h, not infinite
    assert pace.rate_usd_per_hour(T0 + HOUR) == pytest.approx(first / 2)
    assert pace.rate_usd_per_hour(T0 + 3 * HOUR) == pytest.approx(first / 8)
    assert HALF_LIFE_SECONDS == 3600


def test_a_line_out_of_order_counts_decayed_and_bad_costs_are_ignored():
    pace = start(1, T0 + HOUR).add(1, T0)
    assert pace.at == T0 + HOUR
    assert pace.mass == pytest.approx(1.5)
    assert pace.add(0, T0 + 2 * HOUR) == pace
    assert pace.add(float("nan"), T0 + 2 * HOUR) == pace
    assert pace.add(-1, T0 + 2 * HOUR) == pace


DAILY_END = period_end("daily", T0)  # 2026-12-04 00:00Z


@pytest.mark.parametrize(
    ("rate", "remaining", "resets_at", "runs_out_at", "before_reset"),
    [
        # steady: $1/h with $5 left at 09:00 runs out at 14:00, before midnight
        (1.0, Decimal("5"), DAILY_END, T0 + 5 * HOUR, True),
        # the projection lands beyond the reset: no alarm
        (1.0, Decimal("20"), DAILY_END, T0 + 20 * HOUR, False),
        # no spend: no projection
        (0.0, Decimal("5"), DAILY_END, None, False),
        # budget already out: now, before the reset
        (1.0, Decimal("0"), DAILY_END, T0, True),
        (0.0, Decimal("-0.5"), DAILY_END, T0, True),
        # a `never` period: any projection is before a reset that never comes
        (1.0, Decimal("5"), None, T0 + 5 * HOUR, True),
        (0.0, Decimal("5"), None, None, False),
        # unlimited budget: nothing runs out
        (3.0, None, DAILY_END, None, False),
        # a pace too small to name a date for
        (1e-12, Decimal("5"), DAILY_END, None, False),
        (float("inf"), Decimal("5"), DAILY_END, None, False),
        (float("nan"), Decimal("5"), DAILY_END, None, False),
    ],
)
def test_project(rate, remaining, resets_at, runs_out_at, before_reset):
    forecast = project(rate, remaining, T0, resets_at)
    assert forecast.runs_out_at == runs_out_at
    assert forecast.before_reset is before_reset
    assert forecast.resets_at == resets_at
    view = forecast.view()
    # every number finite: strict JSON accepts it
    assert json.loads(json.dumps(view, allow_nan=False)) == view
    assert math.isfinite(view["rate_usd_per_hour"])


def test_burst_then_quiet_projection_moves_out_past_the_reset():
    pace = start(Decimal("3"), T0)  # $3 at 09:00, $3 left
    hot = project(pace.rate_usd_per_hour(T0), Decimal("3"), T0, DAILY_END)
    assert hot.before_reset and hot.runs_out_at is not None
    later = T0 + 4 * HOUR
    calm = project(pace.rate_usd_per_hour(later), Decimal("3"), later, DAILY_END)
    assert not calm.before_reset


def test_view_shape():
    view = project(1.0, Decimal("5"), T0, DAILY_END).view()
    assert view == {
        "rate_usd_per_hour": 1.0,
        "runs_out_at": "2026-12-03T14:00:00.000Z",
        "before_reset": True,
        "resets_at": "2026-12-04T00:00:00.000Z",
    }
