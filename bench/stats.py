"""Small summary statistics for repeated timings (median, p95) without numpy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile with linear interpolation between ranks (numpy's default method)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, p95, min, max and the raw values (kept so a reader can recompute anything)."""
    return {
        "n": len(values),
        "median": percentile(values, 50),
        "p95": percentile(values, 95),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
        "values": list(values),
    }


def fmt_s(seconds: float) -> str:
    """A duration for the console table: ms below 10 s, seconds above."""
    if math.isnan(seconds):
        return "n/a"
    if seconds < 10:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.1f} s"
