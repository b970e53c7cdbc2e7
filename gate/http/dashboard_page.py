"""The dashboard page's assets: its HTML, CSS and script, inline and allowed by their
hashes (`gate.http.dashboard` serves them). The bars, tier marks and period charts are
drawn by the script from /api/spend and /api/dashboard: nothing is loaded from elsewhere."""

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
.marks { display: block; width: 100%; height: 10px; overflow: visible; }
.marks line { stroke: #1f2430; stroke-width: 2px; }
.marks text { font-size: 9px; fill: #5b6270; }
.chart { display: block; margin: 4px 0 0; }
.chart .axis { stroke: #1f2430; }
.chart .budget { stroke: #5b6270; stroke-dasharray: 3 3; }
.chart .spend { fill: none; stroke: #6b3fa0; stroke-width: 2px; }
.chart .forecast { fill: none; stroke: #b0307a; stroke-width: 1.5px; stroke-dasharray: 5 3; }
.chart text { font-size: 10px; fill: #5b6270; }
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

  function agentRow(view, today, history) {
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
    row.append(head, track, marks(view), foot);
    const drawn = chart(view, history || []);
    if (drawn) row.append(drawn);
    return row;
  }

  // The SVG namespace as the HTML parser gives it: the page names no URL at all.
  const probe = document.createElement("template");
  probe.innerHTML = "<svg></svg>";
  const SVG = probe.content.firstChild.namespaceURI;
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Under the bar: where premium turns to mid and mid to economy, on the bar's own scale
  // (a tier holds while the part left is above its threshold; the last one takes the rest).
  function marks(view) {
    const box = svg("svg", { class: "marks", viewBox: "0 0 1000 10",
                             preserveAspectRatio: "none" });
    const tiers = view.tier_thresholds || [];
    tiers.slice(0, -1).forEach((tier, i) => {
      const x = (1 - tier.threshold) * 1000;
      const next = tiers[i + 1].name;
      const line = svg("line", { x1: x, x2: x, y1: 0, y2: 10,
                                 "data-fraction": 1 - tier.threshold });
      line.append(svg("title", {}, tier.name + " → " + next + " at " +
                      ((1 - tier.threshold) * 100).toFixed(0) + " % spent"));
      box.append(line);
    });
    return box;
  }

  // Spend over the current period, and the forecast line on to the reset.
  function chart(view, history) {
    const f = view.forecast || {};
    const start = Date.parse(view.period_start), end = Date.parse(f.resets_at);
    const total = view.budget_total;
    if (!(end > start) || !(total > 0)) return null;
    const W = 320, H = 56, now = Math.min(Math.max(Date.now(), start), end);
    const x = (t) => ((Math.min(Math.max(t, start), end) - start) / (end - start)) * W;
    const y = (spent) => H - Math.min(Math.max(spent / total, 0), 1) * H;
    const box = svg("svg", { class: "chart", width: W, height: H + 12,
                             viewBox: "0 0 " + W + " " + (H + 12) });
    box.append(svg("line", { class: "axis", x1: 0, x2: W, y1: H, y2: H }),
               svg("line", { class: "budget", x1: 0, x2: W, y1: 0.5, y2: 0.5 }));
    const points = [[start, 0]];
    for (const [ts, left] of history) {
      const t = Date.parse(ts);
      if (t >= start) points.push([t, total - left]);
    }
    points.push([now, view.budget_spent]);
    box.append(svg("polyline", { class: "spend",
      points: points.map(([t, s]) => x(t).toFixed(1) + "," + y(s).toFixed(1)).join(" ") }));
    const rate = f.rate_usd_per_hour || 0;
    const out = f.runs_out_at ? Date.parse(f.runs_out_at) : null;
    const until = out !== null && out < end ? out : end;
    const reached = view.budget_spent + rate * (until - now) / 3.6e6;
    box.append(svg("line", { class: "forecast", x1: x(now), y1: y(view.budget_spent),
                             x2: x(until), y2: y(reached), "data-until": until }));
    box.append(svg("text", { x: 0, y: H + 10 }, "spend this period"),
               svg("text", { x: W, y: H + 10, "text-anchor": "end" },
                   view.budget_remaining <= 0 ? "used up" :
                   f.before_reset && f.runs_out_at ? "runs out " +
                   f.runs_out_at.replace("T", " ").replace(/:\d\d\.\d+Z$/, "Z") +
                   ", before the reset" : "reset " + f.resets_at.slice(0, 10)));
    return box;
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
    const history = today.history || {};
    $("agents").replaceChildren(
      ...ids.map((id) => agentRow(spend.agents[id], today.agents[id], history[id])));
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
