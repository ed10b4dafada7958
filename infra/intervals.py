"""Confidence intervals shared by the packages: every rate the project reports travels with one."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of k/n (95% for z=1.96), inside [0, 1], with the bound exact at the ends:
    the lower bound is 0 when k == 0 and the upper bound 1 when k == n. (nan, nan) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if k == 0 else min(p, max(0.0, centre - half))
    hi = 1.0 if k == n else max(p, min(1.0, centre + half))
    return lo, hi


def bootstrap_interval(
    stat: Callable[[np.ndarray], float], n: int, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(indices)`` over ``resamples`` resamples of ``range(n)``
    (a fixed seed, so the same data always gives the same interval). (nan, nan) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.asarray([stat(rng.integers(0, n, n)) for _ in range(resamples)], dtype=float)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def rate(k: int, n: int) -> dict:
    """``{"rate", "k", "n", "ci95"}`` for k of n (rate null when n == 0)."""
    lo, hi = wilson_interval(k, n)
    return {"rate": (k / n) if n else None, "k": int(k), "n": int(n), "ci95": None if n == 0 else [lo, hi]}
