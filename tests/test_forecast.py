"""The forecast as a pure function: the decayed pace and the projection, with tables."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gate.books.paces import Paces
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
        # a date past any horizon (beyond what a timedelta can hold, too): none, no error
        (1e-9, Decimal("50"), DAILY_END, None, False),
        (0.02, Decimal("1000000000"), DAILY_END, None, False),
        (1.0, Decimal("87600"), None, T0 + 87600 * HOUR, True),  # ten years: still named
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


# --- on a running gate: the pace is fed by settled lines, shown by /api/spend -------

ADMIN = {"Authorization": "Bearer forecast-admin-token-0123456789"}


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_api_spend_projects_the_settled_pace(start_gate, mock, tmp_path) -> None:
    from .support import chat, make_config, request_lines

    clock = _Clock(datetime(2026, 11, 10, 12, 0, tzinfo=UTC))
    cfg = make_config(tmp_path, mock.base_url, admin_token=ADMIN["Authorization"][7:])
    client = await start_gate(cfg, clock=clock)
    agent_1 = {"X-Agent-ID": "agent-1"}
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=chat(), headers=agent_1)).ok
    spent = sum(line["cost"] for line in request_lines(tmp_path / "spend.jsonl"))
    assert spent > 0
    rate = float(spent) * math.log(2)  # three costs at one instant: the whole mass, fresh

    view = await (await client.get("/api/spend/agent-1", headers=ADMIN)).json()
    forecast = view["forecast"]
    assert forecast["rate_usd_per_hour"] == pytest.approx(rate, rel=1e-5)
    assert forecast["resets_at"] == "2026-12-01T00:00:00.000Z"  # the monthly period's end
    assert forecast["before_reset"] is False  # $50 at cents an hour: years, not weeks

    # nearly all of it spent by the admin (not a settled line: the pace is unchanged)
    left = Decimal("0.001")
    body = {"budget_spent": float(Decimal(str(view["budget_total"])) - left)}
    assert (await client.post("/api/budget/agent-1", json=body, headers=ADMIN)).ok
    view = await (await client.get("/api/spend/agent-1", headers=ADMIN)).json()
    forecast = view["forecast"]
    runs_out = datetime.fromisoformat(forecast["runs_out_at"])
    assert Decimal(str(view["budget_remaining"])) == left
    expected = clock.now + timedelta(hours=float(left) / rate)
    assert abs((runs_out - expected).total_seconds()) < 0.01
    assert forecast["before_reset"] is True

    clock.now += timedelta(hours=40)  # quiet for 40 half-lives: no pace left to project
    forecast = (await (await client.get("/api/spend", headers=ADMIN)).json())["agents"]
    assert forecast["agent-1"]["forecast"]["before_reset"] is False
    assert forecast["agent-1"]["forecast"]["runs_out_at"] is None
    assert forecast["default"]["forecast"]["rate_usd_per_hour"] == 0  # never spent


@pytest.mark.parametrize("spent", ["0", "0.000001", "0.4", "1", "2.5", "40"])
@pytest.mark.parametrize("remaining", ["0.000001", "0.5", "1", "3", "1000000000"])
@pytest.mark.parametrize("hours_to_reset", [0.01, 1, 24, 720])
def test_the_alerters_quick_check_agrees_with_the_forecast(spent, remaining, hours_to_reset):
    """`Paces.outlasts` (the alerter's check on every settle) says exactly when the
    forecast would not run the budget out before the reset."""
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    paces = Paces(clock=lambda: now)
    if Decimal(spent):
        paces.request_line({"agent_id": "a", "cost": Decimal(spent)}, refused=False)
    reset = now + timedelta(hours=hours_to_reset)
    forecast = paces.forecast_at("a", Decimal(remaining), reset)
    assert paces.outlasts("a", Decimal(remaining), reset) is not forecast.before_reset
