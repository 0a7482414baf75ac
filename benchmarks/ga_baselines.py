"""Optimisers a practitioner would pick instead of our GA, run at the GA benchmark's budget.

Benchmark-only: they need the ``[bench]`` extra (``pip install -e ".[bench]"``: optuna, cmaes); the
project itself does not. Each scheme has the signature of ``evolve.search.baselines``'s schemes
(space, objective, budget, seed) -> trials in order, and works in the same normalised genome space as
our GA (log keys log-uniform), starting where we start: the base hyp.

- ``tpe``: Optuna's multivariate TPE, one trial at a time (ask, train, tell); the base hyp is the
  first trial (enqueued), as a user who knows the defaults would do. A categorical gene (the optimizer,
  when evolved) is a ``CategoricalDistribution`` of its choices; the others sample positions.
- ``tpe_batched``: the same in batches of the population size: ask 50 trials, train them all, tell
  all; ``constant_liar`` makes the 50 differ (the way Optuna runs parallel workers).
- ``cma``: CMA-ES (``cmaes.CMA``) with its default population (4 + 3 ln n, 13 for 25 genes), mean at
  the base hyp, step ``sigma`` in normalised units, bounds [0, 1]; a categorical gene is a position
  whose bin decodes to the choice (CMA-ES has no categorical variables of its own).
- ``cma_batched``: the same with population = our population (50).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

from evolve.config.ga import GAConfig
from evolve.search.baselines import Objective, Trial
from evolve.search.space import SearchSpace

CMA_SIGMA = 0.15  # chosen from 0.1, 0.15, 0.2, 0.3 on the tuning seeds (docs/benchmarks-ga.md)


def _params(space: SearchSpace, genome: list[float]) -> dict[str, float | int]:
    """TPE's parameters of a genome: a position per numeric gene, a choice index per categorical one."""
    return {f"g{i}": min(k - 1, int(x * k)) if k else float(x)
            for i, (x, k) in enumerate(zip(genome, space.levels))}


def _genome(space: SearchSpace, params: dict[str, float | int]) -> list[float]:
    """The genome of TPE's parameters: a categorical choice sits at the centre of its bin."""
    return [(params[f"g{i}"] + 0.5) / k if k else float(params[f"g{i}"]) for i, k in enumerate(space.levels)]


def _tpe(space: SearchSpace, objective: Objective, budget: int, seed: int, batch: int) -> list[Trial]:
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    sampler = optuna.samplers.TPESampler(multivariate=True, seed=seed, constant_liar=batch > 1)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(_params(space, space.encode(space.base)))
    # TPE models a categorical gene natively (one weight per choice), as a user would declare it.
    dists = {f"g{i}": optuna.distributions.CategoricalDistribution(list(range(k))) if k
             else optuna.distributions.FloatDistribution(0.0, 1.0) for i, k in enumerate(space.levels)}
    trials: list[Trial] = []
    while len(trials) < budget:
        asked = [study.ask(dists) for _ in range(min(batch, budget - len(trials)))]
        for trial in asked:
            hyp = space.decode(_genome(space, trial.params))
            fit = objective(hyp)
            trials.append((hyp, fit))
            study.tell(trial, fit if math.isfinite(fit) else 0.0)
    return trials


def tpe(space: SearchSpace, objective: Objective, budget: int, seed: int = 0) -> list[Trial]:
    return _tpe(space, objective, budget, seed, 1)


def tpe_batched(space: SearchSpace, objective: Objective, budget: int, seed: int = 0) -> list[Trial]:
    return _tpe(space, objective, budget, seed, GAConfig().population)


def _cma(space: SearchSpace, objective: Objective, budget: int, seed: int, population: int | None,
         sigma: float) -> list[Trial]:
    from cmaes import CMA

    n = len(space)
    bounds = np.array([[0.0, 1.0]] * n)
    opt = CMA(mean=np.array(space.encode(space.base)), sigma=sigma, bounds=bounds, seed=seed,
              population_size=population)
    trials: list[Trial] = []
    while len(trials) < budget:
        told = []
        for _ in range(opt.population_size):
            x = opt.ask()
            if len(trials) < budget:
                hyp = space.decode(x.tolist())
                fit = objective(hyp)
                trials.append((hyp, fit))
            else:
                fit = 0.0  # past the budget: the generation is never used again
            told.append((x, -fit if math.isfinite(fit) else 0.0))  # cmaes minimises
        opt.tell(told)
    return trials


def cma(space: SearchSpace, objective: Objective, budget: int, seed: int = 0,
        sigma: float = CMA_SIGMA) -> list[Trial]:
    return _cma(space, objective, budget, seed, None, sigma)


def cma_batched(space: SearchSpace, objective: Objective, budget: int, seed: int = 0,
                sigma: float = CMA_SIGMA) -> list[Trial]:
    return _cma(space, objective, budget, seed, GAConfig().population, sigma)


def cma_with(sigma: float, batched: bool) -> Callable[..., list[Trial]]:
    """CMA-ES with another initial step (to choose ``CMA_SIGMA``)."""

    def scheme(space: SearchSpace, objective: Objective, budget: int, seed: int = 0) -> list[Trial]:
        return _cma(space, objective, budget, seed, GAConfig().population if batched else None, sigma)

    return scheme
