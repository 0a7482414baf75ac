"""Tests of evolve/output/verdict_stats.py: Student's t quantiles against the printed table, the paired
difference's t interval worked by hand, Spearman's rho and its exact and sampled permutation p."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from evolve.output.verdict_stats import (
    EXACT_MAX,
    paired_difference,
    spearman,
    spearman_p,
    t_cdf,
    t_quantile,
)

# t_{0.975, df} as printed in every statistics table (4 decimals).
T_TABLE = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 10: 2.2281, 30: 2.0423,
           120: 1.9799}


@pytest.mark.parametrize("df", sorted(T_TABLE))
def test_t_quantile_matches_the_table(df):
    assert t_quantile(0.975, df) == pytest.approx(T_TABLE[df], abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-T_TABLE[df], abs=1e-4)
    assert t_cdf(t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-10)


def test_t_cdf_closed_forms_and_bad_arguments():
    assert t_cdf(0.0, 7) == 0.5
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    assert t_cdf(1.0, 2) == pytest.approx(0.5 + 1 / (2 * math.sqrt(3)))  # 1/2 + t / (2 sqrt(2 + t^2))
    assert t_cdf(-2.0, 5) == pytest.approx(1 - t_cdf(2.0, 5))
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_cdf(1.0, 0)
    with pytest.raises(ValueError, match="p must be in"):
        t_quantile(1.0, 3)


def test_t_matches_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 6, 7, 15, 50):
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)
        assert t_cdf(-1.3, df) == pytest.approx(stats.t.cdf(-1.3, df), rel=1e-9)


def test_paired_difference_by_hand():
    # Differences 0.02, 0.05, 0.02: mean 0.03, sd sqrt(3) * 0.01, half width t_{.975,2} sd / sqrt(3).
    p = paired_difference({1: 0.30, 2: 0.35, 3: 0.32}, {1: 0.28, 2: 0.30, 3: 0.30})
    half = 4.302652729749 * 0.01
    assert (p.n, p.mean, p.low, p.high) == (3, pytest.approx(0.03), pytest.approx(0.03 - half),
                                            pytest.approx(0.03 + half))
    assert not p.above_zero
    tight = paired_difference({1: 0.40, 2: 0.41, 3: 0.42}, {1: 0.30, 2: 0.30, 3: 0.31})
    assert tight.above_zero and tight.low > 0.05
    # Only the seeds both trained with are paired; one pair has a mean but no interval.
    one = paired_difference({1: 0.5, 2: 0.6}, {2: 0.4, 3: 0.1})
    assert one.n == 1 and one.mean == pytest.approx(0.2) and math.isnan(one.low) and not one.above_zero
    none = paired_difference({1: 0.5}, {2: 0.4})
    assert none.n == 0 and math.isnan(none.mean)


def test_spearman_matches_the_definition():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Without ties: 1 - 6 sum d^2 / (n (n^2 - 1)); ranks (1,2,3,4) vs (2,1,4,3): d^2 sums to 4.
    assert spearman([0.1, 0.2, 0.3, 0.4], [0.5, 0.4, 0.9, 0.8]) == pytest.approx(1 - 6 * 4 / (4 * 15))
    assert math.isnan(spearman([1, 2], [1, 2])) and math.isnan(spearman([1, 2, 3], [5, 5, 5]))


def test_spearman_p_is_the_exact_share_of_orderings():
    # A perfect order of n is reached by one ordering of n!.
    assert spearman_p([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1 / 24)
    assert spearman_p([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]) == pytest.approx(1 / 720)
    assert spearman_p([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(1.0)  # every ordering is at least -1
    # Counted by brute force over the orderings, for one observed order.
    x, y = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.3, 0.1, 0.4, 0.2, 0.6, 0.5]
    rho = spearman(x, y)
    count = sum(spearman(x, list(order)) >= rho - 1e-12 for order in itertools.permutations(y))
    assert spearman_p(x, y) == pytest.approx(count / 720) and spearman_p(x, y) == pytest.approx(0.0875)
    assert math.isnan(spearman_p([1, 2], [1, 2]))


def test_spearman_p_is_sampled_above_the_exact_size_and_repeatable():
    n = EXACT_MAX + 2
    x = list(range(n))
    perfect = spearman_p(x, x)
    assert 0 < perfect < 1e-3  # (0 + 1) / (draws + 1): never exactly 0
    y = [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]
    p = spearman_p(x, y)
    assert p == spearman_p(x, y) and 0 < p < 0.01  # seeded: the same p every time
    rng = np.random.default_rng(1)
    noise = list(rng.random(n))
    assert 0.05 < spearman_p(x, noise) <= 1
