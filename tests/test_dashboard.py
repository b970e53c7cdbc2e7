"""The dashboard (`GET /`) in a real browser: Debian's Chromium, headless, started here
against a running gate. The rendered DOM must show exactly what /api/spend says, and the
screenshot's bars must be as long as the agents' spent fractions."""

from __future__ import annotations

import asyncio
import os
import re
import struct
import subprocess
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from gate.http.dashboard import Today
from gate.ops.metrics import UNKNOWN

from .support import agent, chat, load_prices, make_config

CHROMIUM = Path("/usr/bin/chromium")
CHAT = "/v1/chat/completions"
TOKEN = "dashboard-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
# Spent fractions, one per agent; delta has nothing left, so its requests are refused.
FRACTIONS = {"alpha": 0.15, "bravo": 0.55, "charlie": 0.90, "delta": 1.0}
# The page's colours (gate/dashboard.py STYLE): the spent part by how full the bar is.
SPENT_COLOURS = {"ok": (0x2F, 0x6F, 0xD6), "low": (0xD9, 0x8E, 0x04), "out": (0xC9, 0x3C, 0x3C)}
HELD = (0x9B, 0xB8, 0xE8)
TRACK = (0xE4, 0xE7, 0xEC)
EXPECTED_COLOUR = {"alpha": "ok", "bravo": "ok", "charlie": "low", "delta": "out"}


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium; CI installs it, a developer's machine without it skips."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") != "true":
            pytest.skip(
                "!!! DASHBOARD NOT TESTED IN A BROWSER: /usr/bin/chromium is missing. "
                "Install it (apt-get install -y chromium); CI (CI=true) installs it itself."
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "chromium"]
        if subprocess.run(install, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(install, env=env, check=True)
    return CHROMIUM


async def browse(chromium: Path, profile: Path, url: str, *extra: str) -> str:
    """Load `url` headless for 5 s of virtual time; Chromium's stdout."""
    args = [
        str(chromium),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        "--window-size=1200,800",
        "--virtual-time-budget=5000",
        *extra,
        url,
    ]
    # Not subprocess.run: the gate serves Chromium from this very event loop.
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


TEXTS = {"tier", "refused", "today"}  # an agent row's spans whose text the test reads


class Dom(HTMLParser):
    """The rendered page's agent rows and the bits of them the test checks."""

    def __init__(self) -> None:
        super().__init__()
        self.agents: dict[str, dict[str, Any]] = {}
        self.login_hidden = False
        self.alert_ids: list[int] = []
        self.scripts_from: list[str] = []
        self._row: dict[str, Any] | None = None
        self._text_into: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if "src" in a or (tag == "link" and "href" in a):
            self.scripts_from.append(a.get("src") or a["href"])
        if a.get("id") == "login":
            self.login_hidden = "hidden" in a
        if "data-alert-id" in a:
            self.alert_ids.append(int(a["data-alert-id"]))
        if "data-agent" in a:
            self._row = self.agents[a["data-agent"]] = {"attrs": a, "classes": classes}
        elif self._row is not None and tag == "div" and classes in (["spent"], ["held"]):
            self._row[classes[0] + "_style"] = a.get("style", "")
        elif self._row is not None and tag == "span" and set(classes) & TEXTS:
            self._text_into = classes[0]

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._text_into is not None:
            self._row[self._text_into] = data
            self._text_into = None


def width_percent(style: str) -> float:
    # Chromium serialises what the script set: "width: 55.00000000000001%;"
    value = style.split("width:", 1)[1].split(";", 1)[0].strip()
    assert value.endswith("%"), style
    return float(value[:-1])


# --- a tiny PNG reader (8-bit RGB or RGBA, not interlaced: what Chromium writes) ------


def png_rows(data: bytes) -> Iterator[list[tuple[int, int, int]]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = depth = colour = interlace = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                near = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + near) & 0xFF
        prev = line
        yield [(line[i], line[i + 1], line[i + 2]) for i in range(0, stride, bpp)]


def is_colour(pixel: tuple[int, int, int], colour: tuple[int, int, int]) -> bool:
    return all(abs(p - c) <= 3 for p, c in zip(pixel, colour, strict=True))


def bars(png: bytes) -> list[tuple[str | None, int, int]]:
    """Each bar, top to bottom: (the spent colour's name, spent pixels, bar pixels),
    read on the middle row of the rows the bar covers."""
    palette = [TRACK, HELD, *SPENT_COLOURS.values()]
    found: list[list[tuple[str | None, int, int]]] = []
    in_bar = False
    for row in png_rows(png):
        run = best = best_start = start = 0
        for x, pixel in enumerate(row):
            if any(is_colour(pixel, c) for c in palette):
                if run == 0:
                    start = x
                run += 1
                if run > best:
                    best, best_start = run, start
            else:
                run = 0
        if best < 100:  # no bar on this row
            in_bar = False
            continue
        segment = row[best_start : best_start + best]
        named = [n for n, c in SPENT_COLOURS.items() if any(is_colour(p, c) for p in segment)]
        spent = sum(1 for p in segment if any(is_colour(p, c) for c in SPENT_COLOURS.values()))
        if not in_bar:
            found.append([])
            in_bar = True
        found[-1].append((named[0] if len(named) == 1 else None, spent, best))
    return [rows[len(rows) // 2] for rows in found]


# --- the test ----------------------------------------------------------------------


@pytest.mark.timeout(600)  # CI's first run may install Chromium first
async def test_dashboard_in_chromium(
    start_gate: Any, mock: Any, tmp_path: Path, chromium: Path
) -> None:
    cfg = make_config(
        tmp_path, mock.base_url, agents={a: agent(100) for a in FRACTIONS}, admin_token=TOKEN
    )
    client = await start_gate(cfg)
    await load_prices(client)
    paid = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "alpha"})
    assert paid.status == 200
    cost = Decimal(str((await paid.json())["_execwall"]["cost"]))
    for agent_id, fraction in FRACTIONS.items():
        body = {"budget_spent": fraction * 100}
        resp = await client.post(f"/api/budget/{agent_id}", json=body, headers=ADMIN)
        assert resp.status == 200
    refused = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "delta"})
    assert refused.status == 402
    stranger = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "x"})
    assert stranger.status == 403

    # The page itself is public and empty of data; the data needs the token.
    page = await client.get("/")
    html = await page.text()
    assert page.status == 200 and page.content_type == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["Cache-Control"] == "no-store"
    for secret_or_data in (TOKEN, "alpha", "charlie", "20.0"):
        assert secret_or_data not in html
    assert "http:" not in html and "https:" not in html and "//" not in html.split("<script")[0]
    assert (await client.get("/api/dashboard")).status == 401

    day = await (await client.get("/api/dashboard", headers=ADMIN)).json()
    assert Decimal(str(day["agents"]["alpha"]["spent_today"])) == cost > 0
    assert day["agents"]["alpha"]["requests_today"] == 1
    assert day["agents"]["delta"]["refused_today"] == 1
    assert day["agents"]["delta"]["refused_by_budget_today"] == 1
    assert day["unknown_agents"]["refused_today"] == 1  # "x" is no label of its own
    assert set(day["agents"]) == set(FRACTIONS)

    base = str(client.make_url("/"))
    # Without a token the browser gets the form and no data.
    locked = Dom()
    locked.feed(await browse(chromium, tmp_path / "p0", base, "--dump-dom"))
    assert not locked.login_hidden and locked.agents == {}

    # With it (given once in the fragment), the DOM says exactly what /api/spend says.
    url = f"{base}#token={TOKEN}"
    dom = Dom()
    dumped = await browse(chromium, tmp_path / "p1", url, "--dump-dom")
    dom.feed(dumped)
    png_path = tmp_path / "dashboard.png"
    await browse(chromium, tmp_path / "p2", url, f"--screenshot={png_path}")
    print(f"\ndashboard screenshot: {png_path}")

    spend = (await (await client.get("/api/spend", headers=ADMIN)).json())["agents"]
    alerts = (await (await client.get("/api/alerts", headers=ADMIN)).json())["alerts"]
    assert dom.login_hidden
    assert dom.scripts_from == ["data:,"]  # the favicon; nothing else loaded
    assert list(dom.agents) == sorted(FRACTIONS)
    for agent_id, row in dom.agents.items():
        view = spend[agent_id]
        fraction = view["budget_spent"] / view["budget_total"]
        assert fraction == pytest.approx(FRACTIONS[agent_id])
        assert float(row["attrs"]["data-spent-fraction"]) == pytest.approx(fraction, abs=1e-12)
        assert width_percent(row["spent_style"]) == pytest.approx(fraction * 100, abs=1e-6)
        assert width_percent(row["held_style"]) == 0
        assert row["attrs"]["data-tier"] == (view["tier"] or "")
        assert row["tier"] == (f"tier {view['tier']}" if view["tier"] else "no tier")
        assert set(row["classes"]) == {"agent"} | ({EXPECTED_COLOUR[agent_id]} - {"ok"})
    assert [spend[a]["tier"] for a in sorted(FRACTIONS)] == ["premium", "mid", "economy", None]
    assert dom.agents["delta"]["refused"] == "1 refused (1 by budget)"
    assert dom.agents["alpha"]["today"].endswith("in 1 request")
    assert dom.alert_ids == [a["id"] for a in alerts[:10]] and alerts

    # Under each bar the tier marks, where premium turns to mid (20 % spent) and mid to
    # economy (70 %); beside it the period's spend with the forecast line on to the reset.
    rows = re.split(r'<div class="agent[^"]*" data-agent="', dumped)[1:]
    assert [r.split('"', 1)[0] for r in rows] == sorted(FRACTIONS)
    for agent_id, row_html in zip(sorted(FRACTIONS), rows, strict=True):
        marks = [
            float(m) for m in re.findall(r'<line x1="[^"]*"[^>]*data-fraction="([^"]+)"', row_html)
        ]
        assert marks == pytest.approx([0.2, 0.7]), (agent_id, marks)
        assert '<svg class="chart"' in row_html and 'class="spend"' in row_html
        [until] = re.findall(r'class="forecast"[^>]*data-until="(\d+)"', row_html)
        resets_at = datetime.fromisoformat(spend[agent_id]["forecast"]["resets_at"])
        if agent_id == "delta":
            assert "used up" in row_html
        else:  # cents a month at this pace: the line runs on to the reset
            assert int(until) == int(resets_at.timestamp() * 1000), agent_id

    # The screenshot: one bar per agent, in order, each as long as its fraction.
    measured = bars(png_path.read_bytes())
    assert len(measured) == len(FRACTIONS), measured
    for agent_id, (colour, spent_px, bar_px) in zip(sorted(FRACTIONS), measured, strict=True):
        assert colour == EXPECTED_COLOUR[agent_id] or (colour is None and spent_px == 0)
        assert bar_px > 800  # the window is 1200 wide
        assert abs(spent_px - FRACTIONS[agent_id] * bar_px) <= 2, (agent_id, spent_px, bar_px)
    lengths = [spent_px for _, spent_px, _ in measured]
    assert lengths == sorted(lengths) and len(set(lengths)) == len(lengths)


# --- the day's counters, on a clock of the test's own ----------------------------------


def test_today_counts_one_utc_day_and_buckets_strangers() -> None:
    now = [datetime(2026, 11, 2, 9, 30, tzinfo=UTC)]
    known = {"a1", "a2"}
    today = Today(lambda: now[0], lambda a: a if a in known else UNKNOWN)
    today.request_line({"agent_id": "a1", "cost": Decimal("0.25"), "status": 200}, False)
    today.request_line({"agent_id": "a1", "cost": Decimal("0"), "status": 402}, True)
    today.request_line({"agent_id": "a1", "cost": Decimal("0"), "status": 400}, True)
    for n in range(50):
        today.request_line({"agent_id": f"stranger-{n}", "status": 403}, True)
    view = today.view(["a1", "a2"])
    assert view["since"] == "2026-11-02T09:30:00.000Z" and view["whole_day"] is False
    assert view["agents"]["a1"] == {
        "spent_today": Decimal("0.25"),
        "requests_today": 1,
        "refused_today": 2,
        "refused_by_budget_today": 1,
    }
    assert view["agents"]["a2"]["requests_today"] == 0
    assert view["unknown_agents"]["refused_today"] == 50
    assert set(today.counts) == {"a1", UNKNOWN}

    now[0] += timedelta(hours=15)  # past midnight UTC: a new day, counted whole
    view = today.view(["a1", "a2"])
    assert view["day"] == "2026-11-03" and view["whole_day"] is True
    assert view["since"] == "2026-11-03T00:00:00.000Z"
    assert view["agents"]["a1"]["spent_today"] == 0 and today.counts == {}
