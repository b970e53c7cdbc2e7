"""The targets against the floor (issue 16), as ratios to the floor in the same run."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .stats import Summary

# a check against the floor: (gate ÷ floor, gate − floor), each over the repeats
FloorCheck = Callable[[Summary, Summary], bool]
FLOOR_LATENCY = {50: (1.25, 0.3), 99: (1.5, 1.0)}  # p: (gate ÷ floor, or gate − floor ms)


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """b ÷ a per repeat; NaN where a is not positive (an overhead the floor did not pay
    has no ratio)."""
    return [y / x if x > 0 else math.nan for x, y in zip(a, b, strict=False)]


def ratio_at_most(limit: float) -> FloorCheck:
    return lambda ratio, diff: ratio.median <= limit


def floor_latency(p: int) -> dict[str, Any]:
    """The target against the floor for a p50 or p99 overhead: within the ratio, or
    within the absolute margin of the floor's latency (a ratio of tiny overheads is noise)."""
    if p not in FLOOR_LATENCY:
        return {}
    ratio, margin = FLOOR_LATENCY[p]

    def check(r: Summary, d: Summary) -> bool:
        return r.median <= ratio or d.median <= margin

    return {"floor_target": f"≤ {ratio:g}× or +{margin:g}", "floor_check": check}
