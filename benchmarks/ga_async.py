"""Our steady-state (``--mode async``) loop driven in process, with simulated trial durations.

``evolve.loops.steady.SteadyState`` is the async driver's bookkeeping without Ray or files; here ``slots``
trials run at once and each takes a random time (uniform 0.5-1.5 units, seeded), so results come back out
of breeding order exactly as on a cluster whose trials differ in length. The scheme has the signature of
the benchmark's other schemes.
"""
from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

from evolve.config.ga import GAConfig
from evolve.contract import Metrics
from evolve.execution.jobs import WAIT
from evolve.loops.steady import SteadyState
from evolve.search.baselines import Objective, Trial
from evolve.search.ga import GeneticAlgorithm
from evolve.search.space import SearchSpace


def async_search(space: SearchSpace, objective: Objective, budget: int, seed: int = 0,
                 slots: int = 4, overrides: dict[str, Any] | None = None) -> list[Trial]:
    """Run ``budget`` trials of the steady-state GA with ``slots`` in flight, GAConfig defaults but for the
    fields in ``overrides``; trials in finishing order."""
    population = GAConfig().population
    cfg = GAConfig(**{"generations": max(1, budget // population), "seed": seed, **(overrides or {})})
    ga = GeneticAlgorithm(cfg, len(space), space.levels)
    state = SteadyState(ga, space, cfg.population, budget, cfg.age_births())
    state.seed(ga.initial_population([space.encode(space.base)]))
    clock, rng = 0.0, random.Random(seed)
    running: list[tuple[float, int, str, dict[str, float], float]] = []
    trials: list[Trial] = []
    while True:
        while len(running) < slots:
            child = state.next_child()
            if child is None or child is WAIT:
                break
            hyp = space.decode(child.genome)
            fit = objective(hyp)
            heapq.heappush(running, (clock + rng.uniform(0.5, 1.5), child.index, child.trial_id, hyp, fit))
        if not running:
            return trials
        clock, _, trial_id, hyp, fit = heapq.heappop(running)
        state.finish(trial_id, Metrics(fitness=fit, status="ok"))
        trials.append((hyp, fit))


def async_scheme(slots: int, overrides: dict[str, Any] | None = None) -> Callable[..., list[Trial]]:
    """The loop with ``slots`` in flight and GAConfig defaults, but for the fields in ``overrides``."""

    def scheme(space: SearchSpace, objective: Objective, budget: int, seed: int = 0) -> list[Trial]:
        return async_search(space, objective, budget, seed, slots, overrides)

    return scheme
