"""Percentiles and repeat summaries (median with min–max)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), linear between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Summary:
    """One metric over the repeats: the median decides, min–max shows the spread."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        kept = tuple(v for v in values if not math.isnan(v))
        if not kept:
            return cls(math.nan, math.nan, math.nan, ())
        return cls(statistics.median(kept), min(kept), max(kept), kept)

    def as_json(self) -> dict[str, object]:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else round(v, 6)

        return {
            "median": clean(self.median),
            "min": clean(self.low),
            "max": clean(self.high),
            "values": [round(v, 6) for v in self.values],
        }


def paired(a: Sequence[float], b: Sequence[float], how: str) -> list[float]:
    """Per-repeat comparison of b against a: "diff" (b − a) or "ratio" (b / a, in %)."""
    out = []
    for x, y in zip(a, b, strict=True):
        if how == "diff":
            out.append(y - x)
        else:
            out.append(100 * y / x if x else math.nan)
    return out
