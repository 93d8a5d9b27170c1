"""Percentiles and medians for benchmark samples (no numpy needed on this path)."""
from __future__ import annotations

import math
from typing import Iterable, Sequence


def percentile(sorted_samples: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of already sorted samples, linearly interpolated; None if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q}: expected 0..100")
    n = len(sorted_samples)
    if n == 0:
        return None
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    a, b = sorted_samples[lo], sorted_samples[hi]
    # a + (b - a) * frac is monotone in q under rounding (a weighted sum is not); clamp to [a, b].
    return float(min(max(a + (b - a) * frac, a), b))


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None if there are none."""
    vals = sorted(v for v in values if v is not None and not math.isnan(v))
    return percentile(vals, 50) if vals else None


def quantile_curve(samples: Sequence[float], points: int = 101) -> list[list[float]]:
    """[[q, value], ...] at `points` evenly spaced quantiles plus 99.9 — a compact CDF for results.json."""
    s = sorted(samples)
    if not s:
        return []
    qs = [100.0 * i / (points - 1) for i in range(points)] + [99.9]
    return [[q, round(percentile(s, q) or 0.0, 1)] for q in sorted(set(qs))]
