"""Tests of benchmarks/ga_efficiency.py: a landscape of the surrogate trainer is built and searched, with a
budget of a few trials (the full tables are the benchmark, not a test)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ga_efficiency  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))

from evolve.search import surrogate  # noqa: E402
from evolve.search.baselines import random_search  # noqa: E402


def test_a_surrogate_landscape_is_searched_with_a_small_budget():
    results = ga_efficiency.run({"random": random_search}, ["rugged"], [3], budget=6, verbose=False)
    best, opt = results[("rugged", "random")]["best"], results[("rugged", "random")]["opt"]
    space = ga_efficiency.space_for(None)
    assert opt == [surrogate.optimum("rugged", space, 3)[1]]
    assert len(best) == 1 and 0 < best[0] <= opt[0]


def test_the_observed_fitness_is_the_named_landscape_instance():
    space = ga_efficiency.space_for(None)
    observe, score, _ = ga_efficiency.problem(space, "rugged", 3)
    hyp = space.decode([0.3] * len(space))
    assert observe(hyp) == score(hyp) == surrogate.true_fitness(hyp, "rugged", 3)
    assert observe(hyp) != surrogate.true_fitness(hyp, "rugged", 4)  # the seed picks the instance
