"""The dashboard: `GET /`, one static page, and `GET /api/dashboard`, what it adds to
`/api/spend` and `/api/alerts` (each agent's spend and refusals today).

The page holds no data, so it is served to anyone; its script asks the admin API for
everything, with the admin token the user gives it once (kept in sessionStorage, or read
once from a `#token=` fragment and then wiped from the address bar). Its CSS and script
are inline and allowed by their hashes: the Content-Security-Policy lets nothing else
run, load or connect anywhere but this origin.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

from aiohttp import web

from gate.context import GATE
from gate.core.clock import Clock, iso
from gate.core.cost import ZERO
from gate.core.jsonfmt import dumps
from gate.http.dashboard_page import HTML, SCRIPT, STYLE
from gate.ops.metrics import UNKNOWN

REFRESH_SECONDS = 3


@dataclass(slots=True)
class DayCounts:
    spent: Decimal = ZERO
    requests: int = 0  # sent upstream (settled)
    refused: int = 0  # turned away before upstream (402, 4xx, 503)
    refused_by_budget: int = 0  # of those, 402 budget_exhausted

    def view(self) -> dict[str, Any]:
        return {
            "spent_today": self.spent,
            "requests_today": self.requests,
            "refused_today": self.refused,
            "refused_by_budget_today": self.refused_by_budget,
        }


class Today:
    """Per agent, what the current UTC day brought, counted as the ledger writes each
    request line: O(1) a line, nothing read back from the log. It starts empty with the
    process, so `since` says from when it counts (midnight UTC, or the start if later).
    Agents not in the config share one bucket (`label`), so ids never grow the table."""

    def __init__(self, clock: Clock, label: Callable[[str | None], str]) -> None:
        self._clock = clock
        self._label = label
        self.since = clock().astimezone(UTC)
        self.counts: dict[str, DayCounts] = {}

    def request_line(self, line: Mapping[str, Any], refused: bool) -> None:
        """A `Ledger.line_observers` hook."""
        self._turn()
        agent_id = line.get("agent_id")
        key = self._label(agent_id if isinstance(agent_id, str) else None)
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = DayCounts()
        if refused:
            counts.refused += 1
            if line.get("status") == 402:
                counts.refused_by_budget += 1
            return
        counts.requests += 1
        cost = line.get("cost")
        if isinstance(cost, Decimal):
            counts.spent += cost

    def _turn(self) -> None:
        today = self._clock().astimezone(UTC).date()
        if today != self.since.date():
            self.since = datetime.combine(today, time(), UTC)
            self.counts.clear()

    def view(self, agent_ids: list[str]) -> dict[str, Any]:
        self._turn()
        since = self.since
        return {
            "day": since.date().isoformat(),
            "since": iso(since),
            "whole_day": since.time() == time(),
            "refresh_seconds": REFRESH_SECONDS,
            "agents": {a: self.counts.get(a, DayCounts()).view() for a in agent_ids},
            "unknown_agents": self.counts.get(UNKNOWN, DayCounts()).view(),
        }


TODAY = web.AppKey("dashboard_today", Today)


async def summary(request: web.Request) -> web.Response:
    """`GET /api/dashboard` (admin GET rules, from the admin app's middleware)."""
    today = request.config_dict[TODAY]
    gate = request.config_dict[GATE]
    agent_ids = gate.ledger.agent_ids()
    body = today.view(agent_ids)
    body["history"] = {a: gate.paces.history(a) for a in agent_ids}  # the period charts
    return web.json_response(body, dumps=dumps)


async def page(request: web.Request) -> web.Response:
    """`GET /`: the page, the same for everyone; it carries no data."""
    body, headers = _page()
    return web.Response(body=body, headers=headers, content_type="text/html", charset="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@functools.cache
def _page() -> tuple[bytes, dict[str, str]]:
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_sha256(SCRIPT)}",
            f"style-src {_sha256(STYLE)}",
            "connect-src 'self'",
            "img-src data:",  # the empty favicon
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    headers = {
        "Content-Security-Policy": csp,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }
    html = HTML.replace("{style}", STYLE).replace("{script}", SCRIPT)
    return html.encode(), headers


def add_dashboard(app: web.Application, admin: web.Application, clock: Clock) -> None:
    """`GET /` on the gate, `GET /dashboard` on the admin app (mounted at /api), and the
    day's counters hooked to the ledger once the gate's resources are open."""

    async def count_today(app: web.Application) -> AsyncIterator[None]:
        gate = app[GATE]  # set by the resources context, which runs before this one
        app[TODAY] = today = Today(clock, gate.metrics.agent)
        gate.ledger.line_observers.append(today.request_line)
        yield

    app.cleanup_ctx.append(count_today)
    app.router.add_get("/", page)
    admin.router.add_get("/dashboard", summary)
