"""The table: one row per metric — direct, gate, overhead, noise floor, target, verdict.

Every cell is the median over the repeats with (min–max). "overhead" compares the gate
with the direct run of the same repeat (gate − direct; for throughput gate / direct);
"noise" compares the repeat's second direct run with its first in the same way, so an
overhead inside the noise floor is no overhead at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("ok" if self.ok else "MISS")

    def cells(self) -> list[str]:
        return [
            self.section,
            self.metric,
            self.direct,
            self.gate,
            self.overhead,
            self.noise,
            self.target,
            self.verdict,
        ]


HEADER = ["", "metric", "direct", "gate", "overhead", "noise floor", "target", ""]


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
    ) -> None:
        """A metric measured on direct, gate and direct2: `{prefix}.{role}.{suffix}`."""
        direct = self.get(f"{prefix}.direct.{suffix}")
        gate = self.get(f"{prefix}.gate.{suffix}")
        again = self.get(f"{prefix}.direct2.{suffix}")
        n = min(len(direct), len(gate), len(again))
        over = Summary.of(paired(direct[:n], gate[:n], how))
        noise = Summary.of(paired(direct[:n], again[:n], how))
        gate_s = Summary.of(gate)
        if how == "diff":
            o, z = cell(over, digits, True), cell(noise, digits, True)
        else:
            o, z = cell(over, 0, suffix=" %"), cell(noise, 0, suffix=" %")
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
    ) -> None:
        s = self.summary(key)
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
    )
    b.single("a", "gate CPU per request (ms)", "a.gate.cpu_ms", 3, "≤ 0.6", _at_most(0.6))
    b.single("a", "gate CPU use (% of a core)", "a.gate.gate_cpu_pct", 0)
    for name, key, digits in (
        ("mock CPU per request (ms)", "mock_cpu_ms", 3),
        ("mock CPU use (% of a core)", "mock_cpu_pct", 0),
        ("load generator CPU (% of a core)", "client_cpu_pct", 0),
    ):
        direct, gate = b.summary(f"a.direct.{key}"), b.summary(f"a.gate.{key}")
        b.rows.append(Row("a", name, cell(direct, digits), cell(gate, digits)))
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
        )
    b.rows.append(chunks)
    rss_targets = {500: 80, 2000: 150}
    idle = [v for count in held for v in b.get(f"d.{count}.idle_mib")]
    if held:
        b.rows.append(Row("d", "RSS, fresh idle gate (MiB)", "—", cell(Summary.of(idle), 1)))
    for count in held:
        per = b.summary(f"d.{count}.per_stream_kib")
        limit = rss_targets.get(count)
        b.single(
            "d",
            f"peak RSS, {count} streams open (MiB)",
            f"d.{count}.peak_mib",
            1,
            "" if limit is None else f"≤ {limit}",
            None if limit is None else _at_most(limit),
            overhead=f"{cell(per, 1)} KiB/stream",
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
    b.rows.append(books)
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
