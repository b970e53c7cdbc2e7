"""Each agent's recent spend pace, fed by the ledger's settled lines, and the forecast
of when its budget runs out at that pace (`gate.core.forecast` decides; this keeps the
one small `Pace` per agent it needs). In memory: after a restart the pace starts again
from the next settled line."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from gate.core.clock import Clock, utc_now
from gate.core.cost import to_decimal
from gate.core.forecast import Forecast, Pace, project, start

HISTORY_POINTS = 128  # per agent; when full, every other point goes (the shape stays)


class Paces:
    def __init__(self, clock: Clock = utc_now) -> None:
        self.clock = clock
        self._paces: dict[str, Pace] = {}
        self._history: dict[str, list[tuple[str, float]]] = {}

    def request_line(self, line: Mapping[str, Any], refused: bool) -> None:
        """A `Ledger.line_observers` hook: a settled line's cost adds to its agent's
        pace (refusals cost nothing and are not looked at)."""
        if refused:
            return
        agent_id, cost = line.get("agent_id"), to_decimal(line.get("cost"))
        if not isinstance(agent_id, str) or cost is None or cost <= 0:
            return
        now = self.clock()
        pace = self._paces.get(agent_id)
        self._paces[agent_id] = start(cost, now) if pace is None else pace.add(cost, now)
        remaining, ts = to_decimal(line.get("budget_remaining")), line.get("ts")
        if remaining is not None and isinstance(ts, str):
            points = self._history.setdefault(agent_id, [])
            if len(points) >= HISTORY_POINTS:
                del points[::2]
            points.append((ts, float(remaining)))

    def history(self, agent_id: str) -> list[tuple[str, float]]:
        """(ts, budget left) after the agent's settled lines, oldest first, bounded; the
        dashboard keeps the points of the current period."""
        return list(self._history.get(agent_id, ()))

    def forecast(self, agent_id: str, remaining: Decimal | None, resets_at: str | None) -> Forecast:
        """When `remaining` (None: unlimited) runs out at the agent's pace; `resets_at` is
        the period's end as the ledger writes it (None: `never`)."""
        reset = None if resets_at is None else datetime.fromisoformat(resets_at)
        return self.forecast_at(agent_id, remaining, reset)

    def outlasts(self, agent_id: str, remaining: Decimal, reset: datetime) -> bool:
        """Whether `remaining` lasts past `reset` at the agent's pace: the alerter's
        check on every settle, in floats, before any forecast is built (`project` says
        the same: at this rate it runs out at or after the reset)."""
        now = self.clock()
        pace = self._paces.get(agent_id)
        rate = 0.0 if pace is None else pace.rate_usd_per_hour(now)
        left = float(remaining)
        return left > 0 and rate * (reset - now).total_seconds() / 3600 <= left

    def forecast_at(
        self, agent_id: str, remaining: Decimal | None, reset: datetime | None
    ) -> Forecast:
        """`forecast` with the period's end as a datetime (the alerter's, per settle)."""
        now = self.clock()
        pace = self._paces.get(agent_id)
        rate = 0.0 if pace is None else pace.rate_usd_per_hour(now)
        return project(rate, remaining, now, reset)
