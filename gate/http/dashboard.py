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
    agent_ids = request.config_dict[GATE].ledger.agent_ids()
    return web.json_response(today.view(agent_ids), dumps=dumps)


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


# Colours the screenshot test knows: the spent part of a bar by how full it is (below
# 80 %, from 80 %, all of it), what requests in flight hold, the empty rest.
STYLE = """
:root { font: 14px/1.4 system-ui, sans-serif; color: #1f2430; background: #ffffff; }
body { margin: 0 24px 24px; }
header { display: flex; align-items: baseline; gap: 16px; }
h1 { font-size: 20px; margin: 16px 0 8px; }
h2 { font-size: 15px; margin: 16px 0 6px; }
[hidden] { display: none !important; }
#status { color: #5b6270; }
#status.error { color: #a31515; font-weight: 600; }
.note { color: #5b6270; margin: 0 0 8px; }
.agent { margin: 0 0 14px; }
.head, .foot { display: flex; gap: 12px; align-items: baseline; }
.name { font-weight: 600; min-width: 120px; }
.tier { padding: 0 6px; border: 1px solid #8a93a3; border-radius: 3px; }
.nums { margin-left: auto; font-variant-numeric: tabular-nums; }
.foot { color: #5b6270; font-size: 12px; }
.track { display: flex; height: 18px; background: #e4e7ec; margin: 4px 0 2px; }
.spent { background: #2f6fd6; }
.agent.low .spent { background: #d98e04; }
.agent.out .spent { background: #c93c3c; }
.held { background: #9bb8e8; }
#alerts { list-style: none; padding: 0; margin: 0; }
#alerts li { display: grid; grid-template-columns: 11em 13em 1fr auto; gap: 12px;
             padding: 3px 0; border-bottom: 1px solid #c4c9d2; }
#alerts li.none { display: block; color: #5b6270; }
#alerts .when { color: #5b6270; font-variant-numeric: tabular-nums; white-space: nowrap; }
#alerts .kind { font-weight: 600; }
#alerts .failed { color: #a31515; }
#login { display: flex; gap: 8px; align-items: center; margin: 8px 0; }
"""

SCRIPT = r"""
"use strict";
(() => {
  const KEY = "execwall-gate-admin-token";
  const REFRESH_MS = 3000;
  const $ = (id) => document.getElementById(id);
  class NeedToken extends Error {}

  const fragment = /^#token=(.+)$/.exec(location.hash);
  if (fragment) {
    sessionStorage.setItem(KEY, decodeURIComponent(fragment[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }

  async function get(path) {
    const token = sessionStorage.getItem(KEY);
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const resp = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    if (resp.status === 401) throw new NeedToken();
    if (!resp.ok) throw new Error(path + " answered HTTP " + resp.status);
    return resp.json();
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function count(n, noun) {
    return n + " " + noun + (n === 1 ? "" : "s");
  }

  function usd(n) {
    return "$" + (n === 0 || Math.abs(n) >= 0.01 ? n.toFixed(2) : n.toPrecision(2));
  }

  function agentRow(view, today) {
    const total = view.budget_total, spent = view.budget_spent, held = view.budget_held;
    const spentFraction = total > 0 ? Math.min(spent / total, 1) : (spent > 0 ? 1 : 0);
    const heldFraction = total > 0 ? Math.min(held / total, 1 - spentFraction) : 0;
    const row = el("div", "agent");
    if (spentFraction >= 1 || view.tier === null) row.classList.add("out");
    else if (spentFraction >= 0.8) row.classList.add("low");
    row.dataset.agent = view.agent_id;
    row.dataset.tier = view.tier === null ? "" : view.tier;
    row.dataset.spentFraction = String(spentFraction);
    row.dataset.heldFraction = String(heldFraction);

    const head = el("div", "head");
    head.append(el("span", "name", view.agent_id),
                el("span", "tier", view.tier === null ? "no tier" : "tier " + view.tier),
                el("span", "nums", usd(spent) + " of " + usd(total) + " spent (" +
                   (spentFraction * 100).toFixed(1) + " %), " + usd(view.budget_remaining) +
                   " left"));
    const track = el("div", "track");
    track.title = view.agent_id + ": " + (spentFraction * 100).toFixed(1) + " % spent";
    const spentBar = el("div", "spent"), heldBar = el("div", "held");
    spentBar.style.width = spentFraction * 100 + "%";
    heldBar.style.width = heldFraction * 100 + "%";
    track.append(spentBar, heldBar);
    const foot = el("div", "foot");
    const day = today || {};
    foot.append(el("span", "today", "today " + usd(day.spent_today || 0) + " in " +
                   count(day.requests_today || 0, "request")),
                el("span", "refused", (day.refused_today || 0) + " refused (" +
                   (day.refused_by_budget_today || 0) + " by budget)"),
                el("span", "", usd(held) + " held"),
                el("span", "", view.period + (view.hard_cap ? ", hard cap" : ", soft cap")));
    row.append(head, track, foot);
    return row;
  }

  function alertRow(alert) {
    const li = el("li");
    li.dataset.alertId = String(alert.id);
    li.append(el("span", "when", alert.ts.replace("T", " ").replace(/\.\d+Z$/, "Z")),
              el("span", "kind", alert.kind),
              el("span", "message", alert.message),
              el("span", alert.delivery === "failed" ? "failed" : "delivery", alert.delivery));
    return li;
  }

  function render(spend, today, alerts) {
    const ids = Object.keys(spend.agents).sort();
    $("agents").replaceChildren(...ids.map((id) => agentRow(spend.agents[id], today.agents[id])));
    const since = today.whole_day ? "" : " (counted since the gate started, " + today.since + ")";
    const unknown = today.unknown_agents.refused_today;
    $("today-note").textContent = "Today is " + today.day + " UTC" + since + "." +
      (unknown ? " Refused from agents not in the config: " + count(unknown, "request") + "." : "");
    const recent = alerts.alerts.slice(0, 10);
    const items = recent.length ? recent.map(alertRow) : [el("li", "none", "none yet")];
    $("alerts").replaceChildren(...items);
  }

  function status(text, error) {
    $("status").textContent = text;
    $("status").classList.toggle("error", error);
  }

  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    timer = null;
    try {
      const [spend, today, alerts] = await Promise.all(
        [get("api/spend"), get("api/dashboard"), get("api/alerts")]);
      render(spend, today, alerts);
      $("login").hidden = true;
      status("updated " + new Date().toLocaleTimeString(), false);
    } catch (err) {
      if (err instanceof NeedToken) {
        sessionStorage.removeItem(KEY);
        $("login").hidden = false;
        $("token").focus();
        status("this gate needs its admin token", true);
        return;  // until one is given
      }
      status("cannot read the gate: " + err.message, true);
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("token").value);
    $("token").value = "";
    refresh();
  });
  refresh();
})();
"""

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>Execwall OR Gate</title>
<style>{style}</style>
</head>
<body>
<header><h1>Execwall OR Gate</h1><span id="status" role="status">loading</span></header>
<form id="login" hidden>
<label for="token">Admin token</label>
<input id="token" type="password" autocomplete="off" required>
<button type="submit">Show</button>
</form>
<main>
<section><h2>Budgets</h2><p id="today-note" class="note"></p><div id="agents"></div></section>
<section><h2>Recent alerts</h2><ol id="alerts"></ol></section>
</main>
<script>{script}</script>
</body>
</html>
"""
