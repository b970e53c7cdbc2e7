"""The table: one row per metric — direct, floor, gate, overhead, noise floor, gate ÷
floor, target, verdict, floor target, verdict.

Every cell is the median over the repeats with (min–max). "overhead" compares the gate
with the direct run of the same repeat (gate − direct; for throughput gate / direct);
"noise" compares the repeat's second direct run with its first in the same way, so an
overhead inside the noise floor is no overhead at all. "floor" is the thinnest aiohttp
proxy (bench/floor.py) measured in the same repeats; "gate ÷ floor" divides the gate's
overhead over direct by the floor's (throughput, CPU and RSS: the gate's figure by the
floor's), then, for latencies, gives gate − floor in ms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .floor_targets import FloorCheck, floor_latency, ratio_at_most, ratios
from .stats import Summary, paired

Series = Mapping[str, Sequence[float]]


@dataclass(frozen=True, slots=True)
class Row:
    section: str
    metric: str
    direct: str = ""
    gate: str = ""
    overhead: str = ""
    noise: str = ""
    target: str = ""
    ok: bool | None = None  # None: no target
    floor: str = ""
    ratio: str = ""  # gate ÷ floor
    floor_target: str = ""
    floor_ok: bool | None = None

    @property
    def verdict(self) -> str:
        return _verdict(self.ok)

    @property
    def floor_verdict(self) -> str:
        return _verdict(self.floor_ok)

    def cells(self) -> list[str]:
        return [
            self.section,
            self.metric,
            self.direct,
            self.floor,
            self.gate,
            self.overhead,
            self.noise,
            self.ratio,
            self.target,
            self.verdict,
            self.floor_target,
            self.floor_verdict,
        ]


HEADER = [
    "",
    "metric",
    "direct",
    "floor",
    "gate",
    "overhead",
    "noise floor",
    "gate ÷ floor",
    "target",
    "",
    "floor target",
    "",
]


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "MISS")


def ratio_cell(ratio: Summary, diff: Summary | None = None) -> str:
    text = cell(ratio, 2, suffix="×")
    if diff is not None and diff.values:
        text += f", {diff.median:+.2f}"
    return text


def cell(summary: Summary, digits: int, signed: bool = False, suffix: str = "") -> str:
    if math.isnan(summary.median):
        return "n/a"
    sign = "+" if signed else ""

    def f(v: float) -> str:
        return f"{v:{sign}.{digits}f}"

    if len(summary.values) < 2:
        return f(summary.median) + suffix
    return f"{f(summary.median)}{suffix} ({f(summary.low)}–{f(summary.high)})"


class Builder:
    def __init__(self, series: Series) -> None:
        self.series = series
        self.rows: list[Row] = []

    def get(self, key: str) -> Sequence[float]:
        return self.series.get(key, ())

    def summary(self, key: str) -> Summary:
        return Summary.of(self.get(key))

    def compared(
        self,
        section: str,
        metric: str,
        prefix: str,
        suffix: str,
        digits: int,
        how: str = "diff",
        target: str = "",
        check: Callable[[Summary, Summary], bool] | None = None,
        roles: tuple[str, str, str | None] = ("direct", "gate", "direct2"),
        floor_target: str = "",
        floor_check: FloorCheck | None = None,
    ) -> None:
        """A metric measured on direct, floor, gate and direct2: `{prefix}.{role}.{suffix}`.
        Other roles stand in for them with `roles`; no third role: no noise floor; no
        floor series: no floor cells."""
        direct = self.get(f"{prefix}.{roles[0]}.{suffix}")
        gate = self.get(f"{prefix}.{roles[1]}.{suffix}")
        floor = self.get(f"{prefix}.floor.{suffix}")
        again = self.get(f"{prefix}.{roles[2]}.{suffix}") if roles[2] else ()
        n = min(len(direct), len(gate))
        over = Summary.of(paired(direct[:n], gate[:n], how))
        m = min(n, len(again))
        noise = Summary.of(paired(direct[:m], again[:m], how))
        gate_s = Summary.of(gate)
        if how == "diff":
            o, z = cell(over, digits, True), cell(noise, digits, True)
        else:
            o, z = cell(over, 0, suffix=" %"), cell(noise, 0, suffix=" %")
        if roles[2] is None:
            z = ""
        f_cell, r_cell, f_ok = "", "", None
        k = min(n, len(floor))
        if k:
            f_cell = cell(Summary.of(floor), digits)
            if how == "diff":
                floor_over = paired(direct[:k], floor[:k], how)
                ratio = Summary.of(ratios(floor_over, paired(direct[:k], gate[:k], how)))
                diff = Summary.of(paired(floor[:k], gate[:k], how))
                r_cell = ratio_cell(ratio, diff)
            else:
                ratio = Summary.of(ratios(floor[:k], gate[:k]))
                diff = Summary.of(paired(floor[:k], gate[:k], "diff"))
                r_cell = ratio_cell(ratio)
            f_ok = None if floor_check is None else floor_check(ratio, diff)
        self.rows.append(
            Row(
                section,
                metric,
                cell(Summary.of(direct), digits),
                cell(gate_s, digits),
                o,
                z,
                target,
                None if check is None else check(gate_s, over),
                f_cell,
                r_cell,
                floor_target if k else "",
                f_ok,
            )
        )

    def single(
        self,
        section: str,
        metric: str,
        key: str,
        digits: int,
        target: str = "",
        check: Callable[[Summary], bool] | None = None,
        overhead: str = "",
        direct: str = "—",
        floor_key: str = "",
        floor_target: str = "",
        floor_check: FloorCheck | None = None,
    ) -> None:
        """One series of the gate's; with `floor_key`, the floor's beside it and the
        ratio gate ÷ floor, repeat by repeat."""
        s = self.summary(key)
        floor = self.get(floor_key) if floor_key else ()
        f_cell, r_cell, f_ok = "", "", None
        if floor:
            k = min(len(floor), len(s.values))
            ratio = Summary.of(ratios(floor[:k], s.values[:k]))
            diff = Summary.of(paired(floor[:k], s.values[:k], "diff"))
            f_cell, r_cell = cell(Summary.of(floor), digits), ratio_cell(ratio)
            f_ok = None if floor_check is None or not k else floor_check(ratio, diff)
        self.rows.append(
            Row(
                section,
                metric,
                direct,
                cell(s, digits),
                overhead,
                "",
                target,
                None if check is None or not s.values else check(s),
                f_cell,
                r_cell,
                floor_target if floor else "",
                f_ok,
            )
        )


def build_rows(
    series: Series,
    rates: Sequence[int],
    held: Sequence[int],
    log_sizes: Sequence[int],
    streams: str,
    books: Row,
    chunks: Row,
    fsync: bool,
    connections: int,
    restart_tail: int,
    extra: Sequence[Row] = (),
) -> list[Row]:
    b = Builder(series)
    b.compared(
        "a",
        f"throughput, {connections} conns (req/s)",
        "a",
        "rps",
        0,
        how="ratio",
        target="≥ 1500, ≥ 25 %",
        check=lambda g, o: g.median >= 1500 and o.median >= 25,
        floor_target="≥ 0.67×",
        floor_check=lambda r, d: r.median >= 0.67,
    )
    b.single(
        "a",
        "gate CPU per request (ms)",
        "a.gate.cpu_ms",
        3,
        "≤ 0.6",
        _at_most(0.6),
        floor_key="a.floor.cpu_ms",
        floor_target="≤ 1.5×",
        floor_check=ratio_at_most(1.5),
    )
    b.single(
        "a",
        "gate CPU use (% of a core)",
        "a.gate.gate_cpu_pct",
        0,
        floor_key="a.floor.gate_cpu_pct",
    )
    for name, key, digits in (
        ("mock CPU per request (ms)", "mock_cpu_ms", 3),
        ("mock CPU use (% of a core)", "mock_cpu_pct", 0),
        ("load generator CPU (% of a core)", "client_cpu_pct", 0),
    ):
        direct, gate = b.summary(f"a.direct.{key}"), b.summary(f"a.gate.{key}")
        floor = b.summary(f"a.floor.{key}")
        f_cell = cell(floor, digits) if floor.values else ""
        b.rows.append(Row("a", name, cell(direct, digits), cell(gate, digits), floor=f_cell))
    p99_targets = {20: 1.5, 200: 3.0}
    for rate in rates:
        for p in (50, 90, 99):
            limit = p99_targets.get(rate) if p == 99 else None
            b.compared(
                "b",
                f"p{p} latency at {rate} req/s (ms)",
                f"b.{rate}",
                f"p{p}",
                2,
                target="" if limit is None else f"overhead ≤ {limit:g}",
                check=None if limit is None else _overhead_at_most(limit),
                **floor_latency(p),
            )
    for name, key, limit in (
        ("first chunk p50", "first_p50", 1.0),
        ("first chunk p99", "first_p99", 5.0),
        ("total p50", "total_p50", 2.0),
        ("total p99", "total_p99", None),
    ):
        b.compared(
            "c",
            f"{streams} streams: {name} (ms)",
            "c",
            key,
            2,
            target="" if limit is None else f"overhead ≤ {limit:g}",
            check=None if limit is None else _overhead_at_most(limit),
            **floor_latency(int(key[-2:])),
        )
    b.single(
        "c",
        f"{streams} streams: CPU per stream (ms)",
        "c.gate.cpu_ms",
        3,
        floor_key="c.floor.cpu_ms",
        floor_target="≤ 1.5×",
        floor_check=ratio_at_most(1.5),
    )
    b.rows.append(chunks)
    rss_targets = {500: 80, 2000: 150}
    rss_floor_targets = {500: 1.3}
    idle = [v for count in held for v in b.get(f"d.{count}.idle_mib")]
    floor_idle = Summary.of([v for count in held for v in b.get(f"d.{count}.floor.idle_mib")])
    if held:
        b.rows.append(
            Row(
                "d",
                "RSS, fresh idle gate (MiB)",
                "—",
                cell(Summary.of(idle), 1),
                floor=cell(floor_idle, 1) if floor_idle.values else "",
            )
        )
    for count in held:
        per = b.summary(f"d.{count}.per_stream_kib")
        floor_per = b.summary(f"d.{count}.floor.per_stream_kib")
        limit = rss_targets.get(count)
        ratio_limit = rss_floor_targets.get(count)
        overhead = f"{cell(per, 1)} KiB/stream"
        if floor_per.values:
            overhead += f" (floor {cell(floor_per, 1)})"
        b.single(
            "d",
            f"peak RSS, {count} streams open (MiB)",
            f"d.{count}.peak_mib",
            1,
            "" if limit is None else f"≤ {limit}",
            None if limit is None else _at_most(limit),
            overhead=overhead,
            floor_key=f"d.{count}.floor.peak_mib",
            floor_target="" if ratio_limit is None else f"≤ {ratio_limit:g}×",
            floor_check=None if ratio_limit is None else ratio_at_most(ratio_limit),
        )
    mode = "fsync on" if fsync else "fsync off"
    b.single("e", f"spend log: burst, {mode} (lines/s)", "e.burst", 0)
    b.single("e", f"spend log: hold+req, {mode} (lines/s)", "e.path", 0)
    if not fsync:
        b.single("e", "spend log: hold+req, fsync on (lines/s)", "e.path_fsync", 0)
    base_first = b.summary(f"f.{log_sizes[0]}.first") if log_sizes else Summary.of([])
    base_label = ("empty" if log_sizes[0] == 0 else _count(log_sizes[0])) if log_sizes else ""
    phases = (("first", "first start"), ("restart", f"restart (+{_count(restart_tail)})"))
    for phase, name in phases:
        for index, size in enumerate(log_sizes):
            if size == 0 and phase == "restart":
                continue  # an empty log has nothing to snapshot: same as its first start
            s = b.summary(f"f.{size}.{phase}")
            label = "empty log" if size == 0 else f"{_count(size)} lines"
            target = ""
            check: Callable[[Summary], bool] | None = None
            if phase == "restart" and index == len(log_sizes) - 1 and len(log_sizes) > 1:
                base_size = log_sizes[-2]
                base = b.summary(f"f.{base_size}.{phase}")
                target = f"flat: ≤ 1.5 × {_count(base_size)}"
                check = _at_most(1.5 * base.median)
            delta = ""
            if index and not math.isnan(base_first.median) and not math.isnan(s.median):
                delta = f"{s.median - base_first.median:+.2f} s vs {base_label}"
            b.single("f", f"{name}, {label} (s)", f"f.{size}.{phase}", 2, target, check, delta)
    b.rows.extend(extra)
    b.rows.append(books)
    return b.rows


def redis_rows(series: Series, info: Mapping[str, Any], connections: int) -> list[Row]:
    """(r): the "direct" column is one gate on the JSONL store, the "gate" column the
    Redis store (one gate, or two sharing it); overhead is Redis against JSONL."""
    if "skipped" in info:
        return [Row("r", str(info["skipped"]).removeprefix("(r) "), target="", ok=None)]
    b = Builder(series)
    roles: tuple[str, str, None] = ("jsonl", "redis", None)
    both: tuple[str, str, None] = ("jsonl", "redis2", None)
    half = max(1, connections // 2)
    b.compared(
        "r",
        f"1 gate, jsonl | redis: {connections} conns (req/s)",
        "r",
        "rps",
        0,
        how="ratio",
        roles=roles,
    )
    b.compared("r", "1 gate: gate CPU per request (ms)", "r", "cpu_ms", 3, roles=roles)
    b.compared("r", "1 gate: gate CPU use (% of a core)", "r", "gate_cpu_pct", 0, roles=roles)
    b.single("r", "1 gate: redis-server CPU per request (ms)", "r.redis.redis_cpu_ms", 3)
    b.compared(
        "r",
        f"2 gates sharing Redis, 2×{half} conns (req/s)",
        "r",
        "rps",
        0,
        how="ratio",
        roles=both,
    )
    one, two = b.get("r.redis.rps"), b.get("r.redis2.rps")
    n = min(len(one), len(two))
    scale = Summary.of(paired(one[:n], two[:n], "ratio"))
    b.rows.append(
        Row("r", "2 gates ÷ 1 gate, both on Redis (req/s)", "—", cell(scale, 0, suffix=" %"))
    )
    b.compared("r", "2 gates: CPU per request, both gates (ms)", "r", "cpu_ms", 3, roles=both)
    b.single("r", "2 gates: redis-server CPU per request (ms)", "r.redis2.redis_cpu_ms", 3)
    b.single("r", "2 gates: redis-server CPU use (% of a core)", "r.redis2.redis_cpu_pct", 0)
    edge = list(info.get("edge", ()))
    if edge:
        admitted, refused = b.summary("r.edge.admitted"), b.summary("r.edge.refused")
        requests = info.get("edge_requests", "")
        b.rows.append(
            Row(
                "r",
                f"budget edge, 2 gates, {requests} at once: admitted / refused",
                "—",
                f"{cell(admitted, 0)} / {cell(refused, 0)}",
            )
        )
        worst = max(edge, key=lambda run: Decimal(run["overshoot"]))
        largest = max(Decimal(run["largest_hold"]) for run in edge)
        within = all(run["within_one_hold"] for run in edge)
        b.rows.append(
            Row(
                "r",
                f"budget edge: spent − budget of {info.get('edge_budget')} (USD)",
                "—",
                f"{Decimal(worst['overshoot']):+f}" + (" (worst)" if len(edge) > 1 else ""),
                f"largest hold {largest:f}",
                target="≤ 0, ≤ 1 hold",
                ok=within,
            )
        )
        peak = max(edge, key=lambda run: Decimal(run["peak_committed"]))
        budget = Decimal(str(info.get("edge_budget")))
        b.rows.append(
            Row(
                "r",
                "budget edge: peak spent + held, both gates (USD)",
                "—",
                f"{Decimal(peak['peak_committed']):f}" + (" (worst)" if len(edge) > 1 else ""),
                f"{100 * Decimal(peak['peak_committed']) / budget:.0f} % of budget",
                target="≤ budget + 1 hold",
                ok=all(
                    Decimal(run["peak_committed"]) <= budget + Decimal(run["largest_hold"])
                    for run in edge
                ),
            )
        )
    books = list(info.get("books", ()))
    if books:
        ok = all(entry["ok"] for entry in books)
        requests = sum(int(entry["requests"]) for entry in books)
        logs = sum(1 for entry in books if not str(entry["run"]).endswith(": redis"))
        b.rows.append(
            Row(
                "r",
                "books: Σ logs == mock == Redis spent",
                "",
                "exact" if ok else "DIFFER",
                f"{logs} runs, {requests} req",
                target="exact",
                ok=ok,
            )
        )
    return b.rows


def _at_most(limit: float) -> Callable[[Summary], bool]:
    return lambda s: s.median <= limit


def _overhead_at_most(limit: float) -> Callable[[Summary, Summary], bool]:
    return lambda gate, overhead: overhead.median <= limit


def _count(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def render(rows: Sequence[Row]) -> str:
    table = [HEADER, *(r.cells() for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(HEADER), "  ".join("-" * w for w in widths)]
    section = rows[0].section if rows else ""
    for row in rows:
        if row.section != section:
            out.append("")
            section = row.section
        out.append(line(row.cells()))
    return "\n".join(out)
