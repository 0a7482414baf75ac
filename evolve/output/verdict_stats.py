"""The statistics of a validation's verdict, in plain numpy (no scipy in the project's dependencies).

- ``paired_difference``: the mean of (candidate - base) over the seeds both trained with, and its t
  interval; the verdict hands a candidate over only when the interval's lower bound is above 0.
- ``spearman`` and ``spearman_p``: the transfer coefficient (how well trial fitness ranks validated
  fitness) and its one-sided permutation p (exact up to ``EXACT_MAX`` hyps, Monte Carlo above).
- ``t_quantile``: Student's t quantile for whole degrees of freedom, from the closed-form CDF.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVEL = 0.95  # the verdict's confidence level
EXACT_MAX = 8  # up to 8! = 40320 orderings the permutation p is exact; above, sampled
SAMPLED = 20000  # permutations drawn above EXACT_MAX (the p's standard error is then below 0.004)
PERMUTATION_SEED = 0  # a sampled p is the same every time the same figures are summarised


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` whole degrees of freedom (the finite series for integer df)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        # odd df: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), to cos^(df-2)
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= (2 * k) / (2 * k + 1) * c2
            total += term
        inside = 2 / math.pi * (theta + s * math.cos(theta) * total)
    else:
        # even df: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...), to cos^(df-2)
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        inside = s * total
    return 0.5 + math.copysign(inside, t) / 2


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` whole degrees of freedom (bisection on ``t_cdf``)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


@dataclass(frozen=True)
class Paired:
    """(candidate - base) over the seeds both trained with: mean, the t interval at ``LEVEL``, pairs."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def above_zero(self) -> bool:
        """Whether the whole interval is above 0: the candidate beats the base at ``LEVEL``."""
        return math.isfinite(self.low) and self.low > 0


def paired_difference(candidate: Mapping[int, float], base: Mapping[int, float],
                      level: float = LEVEL) -> Paired:
    """The paired difference of two {seed: fitness} maps over their common seeds; the interval is nan
    below two pairs (a mean of one difference has no spread to measure)."""
    seeds = sorted(set(candidate) & set(base))
    diffs = np.array([candidate[s] - base[s] for s in seeds], dtype=float)
    if len(diffs) == 0:
        return Paired(math.nan, math.nan, math.nan, 0)
    mean = float(diffs.mean())
    if len(diffs) < 2:
        return Paired(mean, math.nan, math.nan, len(diffs))
    half = t_quantile(0.5 + level / 2, len(diffs) - 1) * float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    return Paired(mean, mean - half, mean + half, len(diffs))


def _ranks(values: Sequence[float]) -> np.ndarray:
    return pd.Series(list(values), dtype=float).rank().to_numpy()


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan below 3 points or for a constant side."""
    if len(x) < 3 or len(x) != len(y):
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_p(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided permutation p of Spearman's rho: the share of orderings of ``y`` whose rho is at least the
    observed one (the chance that trials with no ranking power would look this good). Exact up to
    ``EXACT_MAX`` points; above, ``SAMPLED`` seeded permutations, counted with the observed one. nan where
    ``spearman`` is."""
    rho = spearman(x, y)
    if not math.isfinite(rho):
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    scale = math.sqrt(float((rx ** 2).sum() * (ry ** 2).sum()))
    observed = float(rx @ ry) - 1e-9 * scale  # a tie with the observed ordering counts as reaching it
    n = len(rx)
    if n <= EXACT_MAX:
        orders = np.array(list(itertools.permutations(range(n))))
        return float(np.mean(ry[orders] @ rx >= observed))
    rng = np.random.default_rng(PERMUTATION_SEED)
    orders = np.argsort(rng.random((SAMPLED, n)), axis=1)
    return float((np.sum(ry[orders] @ rx >= observed) + 1) / (SAMPLED + 1))
