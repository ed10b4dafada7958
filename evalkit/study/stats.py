"""Statistics of the toy-world study: a condition's mean with a bootstrap interval over seeds and
prompts, the paired difference of two conditions (same seeds, same prompts) with its interval and a
sign-flip permutation p-value over seeds, and the difference a design can detect.

Outcomes are arrays ``[seeds, prompts]`` (one row per training seed, one column per prompt; 0/1 for a
rate, any number for a score; a per-model number such as a probe AUROC is one column). The bootstrap
resamples seeds and, independently, prompts, or prompt *groups* when prompts share a phrasing frame
(``groups``: one label per column; every resample draws whole groups), so that the interval holds the
spread over training runs and over the prompts one could have asked. Resampling uses
``infra.intervals.bootstrap_interval`` with fixed seeds: the same outcomes always give the same interval.

Few seeds: a percentile bootstrap over S seeds understates the spread (its variance is (S-1)/S of the
sample variance, and it uses normal rather than t quantiles), so with 5 seeds an interval that should
hold 95% excludes a true zero difference about 10% of the time (tests/study/test_stats.py measures it).
``small_sample=True`` (the default) therefore widens the interval's two half-widths around the estimate
by ``t[S-1] / z * sqrt(S / (S-1))`` (1.58 for 5 seeds, 1.44 for 6, 1.29 for 8), which brings that rate
to 5% or below, and clips it to the range of the data.

The permutation test flips the sign of each seed's mean paired difference (under "no difference"
each seed's two models are exchangeable); with S seeds it enumerates all 2**S flips, so the smallest
two-sided p it can give is 2 / 2**S (0.0625 with 5 seeds, 0.031 with 6, 0.0078 with 8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from infra.intervals import bootstrap_interval

EXACT_MAX_SEEDS = 16  # up to 2**16 sign vectors are enumerated; beyond, a Monte Carlo sample


def _matrix(values, what: str = "values") -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] == 0:
        raise ValueError(f"{what}: need a non-empty [seeds, prompts] array, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{what}: {int((~np.isfinite(v)).sum())} non-finite entries (nan/inf)")
    return v


def _group_columns(groups: Sequence | None, n_prompts: int) -> list[np.ndarray]:
    if groups is None:
        return [np.array([j]) for j in range(n_prompts)]
    if len(groups) != n_prompts:
        raise ValueError(f"groups: {len(groups)} labels for {n_prompts} prompt columns")
    order: dict = {}
    for j, g in enumerate(groups):
        order.setdefault(g, []).append(j)
    return [np.asarray(ix) for ix in order.values()]


def small_sample_factor(n_seeds: int, level: float = 0.95) -> float:
    """How much ``small_sample`` widens a bootstrap interval over ``n_seeds`` seeds (1 for one seed)."""
    from scipy.stats import norm, t

    if n_seeds < 2:
        return 1.0
    q = (1 + level) / 2
    return float(t.ppf(q, n_seeds - 1) / norm.ppf(q) * math.sqrt(n_seeds / (n_seeds - 1)))


def _bootstrap_mean(
    v: np.ndarray, cols: list[np.ndarray], resamples: int, seed: int, level: float, small_sample: bool
) -> tuple[float, float]:
    """Interval of the grand mean when seeds (rows) and prompt groups are resampled."""
    prompt_rng = np.random.default_rng([seed, 1])
    n_groups = len(cols)
    singletons = all(len(c) == 1 for c in cols)
    flat = np.concatenate(cols)

    def stat(seed_idx: np.ndarray) -> float:
        g = prompt_rng.integers(0, n_groups, n_groups)
        picked = flat[g] if singletons else np.concatenate([cols[i] for i in g])
        return float(v[np.ix_(seed_idx, picked)].mean())

    lo, hi = bootstrap_interval(stat, v.shape[0], resamples=resamples, seed=seed, level=level)
    if small_sample:
        m, k = float(v.mean()), small_sample_factor(v.shape[0], level)
        lo, hi = m - k * (m - lo), m + k * (hi - m)
    return max(lo, float(v.min())), min(hi, float(v.max()))


def mean_interval(
    values,
    groups: Sequence | None = None,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    small_sample: bool = True,
) -> dict:
    """Mean of ``values [seeds, prompts]`` with its bootstrap interval over seeds and prompts (groups).

    Returns ``{"mean", "ci": [lo, hi], "level", "n_seeds", "n_prompts", "n_groups", "seed_sd"}``;
    ``seed_sd`` is the sample standard deviation of the per-seed means (0 for one seed). With one seed
    the interval is over prompts only; with one column, over seeds only; with one value there is
    nothing to resample and ``ci`` is None."""
    v = _matrix(values)
    cols = _group_columns(groups, v.shape[1])
    if v.shape[0] == 1 and len(cols) == 1:
        lo = hi = None
    else:
        lo, hi = _bootstrap_mean(v, cols, resamples, seed, level, small_sample)
    per_seed = v.mean(axis=1)
    return {
        "mean": float(v.mean()),
        "ci": None if lo is None else [lo, hi],
        "level": level,
        "n_seeds": int(v.shape[0]),
        "n_prompts": int(v.shape[1]),
        "n_groups": len(cols),
        "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
    }


def sign_flip_p(per_seed_diffs, resamples: int = 20000, seed: int = 0) -> float:
    """Two-sided permutation p-value of ``mean(per_seed_diffs) != 0``: the share of sign flips of the
    per-seed differences whose |mean| is at least the observed one (every flip for up to
    ``EXACT_MAX_SEEDS`` seeds, else ``resamples`` random flips, counted with the observed one)."""
    x = np.asarray(per_seed_diffs, dtype=float).ravel()
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"sign_flip_p: need finite per-seed differences, got {x.tolist()}")
    observed = abs(x.mean())
    tol = 1e-12 * max(1.0, float(np.abs(x).max()))
    if x.size <= EXACT_MAX_SEEDS:
        codes = np.arange(2**x.size)[:, None]
        signs = 1 - 2 * ((codes >> np.arange(x.size)) & 1)
        return float(np.mean(np.abs(signs @ x) / x.size >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(resamples, x.size))
    hits = int(np.sum(np.abs(signs @ x) / x.size >= observed - tol))
    return (hits + 1) / (resamples + 1)


def min_p(n_seeds: int) -> float:
    """The smallest two-sided p the exact sign-flip test can give with ``n_seeds`` seeds."""
    return min(1.0, 2.0 / 2**n_seeds)


def paired_difference(
    a,
    b,
    groups: Sequence | None = None,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    small_sample: bool = True,
) -> dict:
    """``mean(a - b)`` for outcomes of two conditions on the same seeds (rows) and prompts (columns).

    Returns ``{"diff", "ci", "level", "p", "min_p", "resolved", "n_seeds", "n_prompts", "n_groups",
    "seed_sd"}``: ``ci`` is the bootstrap interval over seeds and prompts of the paired difference,
    ``p`` the sign-flip permutation p-value over seeds, ``resolved`` whether the interval excludes 0
    (never with one seed: its interval holds the prompts' spread only, not the training runs'),
    ``seed_sd`` the sample standard deviation of the per-seed mean differences."""
    av, bv = _matrix(a, "a"), _matrix(b, "b")
    if av.shape != bv.shape:
        raise ValueError(
            f"paired_difference: a has shape {av.shape}, b {bv.shape}: pairs need the same seeds and prompts"
        )
    d = av - bv
    m = mean_interval(d, groups, resamples=resamples, seed=seed, level=level, small_sample=small_sample)
    lo, hi = m["ci"] or (None, None)
    return {
        "diff": m["mean"],
        "ci": m["ci"],
        "level": level,
        "p": sign_flip_p(d.mean(axis=1), seed=seed),
        "min_p": min_p(d.shape[0]),
        "resolved": bool(d.shape[0] >= 2 and lo is not None and (lo > 0 or hi < 0)),
        "n_seeds": m["n_seeds"],
        "n_prompts": m["n_prompts"],
        "n_groups": m["n_groups"],
        "seed_sd": m["seed_sd"],
    }


def detectable_difference(seed_sd: float, n_seeds: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The paired difference a design with ``n_seeds`` seeds detects with probability ``power`` at
    two-sided level ``alpha``, when the per-seed paired differences have standard deviation
    ``seed_sd``: ``(t[1-alpha/2] + t[power]) * seed_sd / sqrt(n_seeds)`` with ``n_seeds - 1`` degrees of
    freedom (the paired t-test's normal-shift approximation)."""
    from scipy.stats import t

    if n_seeds < 2:
        raise ValueError(f"detectable_difference: needs >= 2 seeds, got {n_seeds}")
    if seed_sd < 0 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"detectable_difference: bad arguments seed_sd={seed_sd}, alpha={alpha}, power={power}")
    df = n_seeds - 1
    return float((t.ppf(1 - alpha / 2, df) + t.ppf(power, df)) * seed_sd / math.sqrt(n_seeds))
