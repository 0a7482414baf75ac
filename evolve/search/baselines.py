"""Search schemes that our GA is measured against, and an in-process loop that runs our GA the same way.

Each scheme takes a search space, an objective (hyp -> fitness, e.g. the surrogate trainer), a trial
budget and a seed, and returns the trials it ran, in order, as (hyp, fitness). Only trained hyps count
against the budget: like the real driver, ``ga_search`` does not retrain a genome it has seen.

- ``yolov5_classic``: one trial at a time from the base hyp; a parent is drawn from the best five so far
  with probability growing with fitness, each gene is mutated with probability 0.8 by a multiplicative
  factor ``1 + gain * sigma * N(0, 1) * U(0, 1)`` (sigma 0.2, one U(0, 1) per child, factor kept within
  [0.3, 3]), values are clipped to the bounds and redrawn until something changed. A gene at 0 stays 0.
- ``ultralytics_tuner``: also sequential; two parents are drawn from the best nine by fitness weight,
  each gene of the child is drawn uniformly from the parents' interval widened by 0.2 of its width on
  both sides (BLX-0.2), then each gene is mutated with probability 0.5 by a log-normal factor whose
  sigma decays from 0.2 to 0.1 over the run; clipped to the bounds.
- ``random_search``: uniform over the normalised space (log-uniform on log keys).

The two sequential schemes have no operator for a categorical gene (the optimizer): they keep the
first parent's choice.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence

from evolve.config.ga import GAConfig
from evolve.search.ga import GeneticAlgorithm
from evolve.search.space import SearchSpace

Objective = Callable[[dict[str, float]], float]
Trial = tuple[dict[str, float], float]

# Mutation gains of the classic scheme: 1 for every key except momentum, whose range is narrow.
YOLOV5_GAINS: Mapping[str, float] = {"momentum": 0.3}


def _clip_hyp(space: SearchSpace, hyp: Mapping[str, float]) -> dict[str, float]:
    """Keep evolved keys within their bounds, rounded like our decoder; integer keys stay integers."""
    out = dict(hyp)
    for gene in space.genes:
        out[gene.key] = gene.tidy(out[gene.key])
    return out


def _numeric(space: SearchSpace) -> list:
    return [gene for gene in space.genes if not gene.choices]


def _weighted_top(trials: Sequence[Trial], n: int, rng: random.Random, k: int) -> list[dict[str, float]]:
    """Draw ``k`` parents from the best ``n`` trials, weight = fitness - worst of them (+ a little)."""
    top = sorted(trials, key=lambda t: t[1], reverse=True)[:n]
    worst = min(f for _, f in top)
    weights = [f - worst + 1e-6 for _, f in top]
    return [dict(h) for h, _ in rng.choices(top, weights=weights, k=k)]


def yolov5_classic(space: SearchSpace, objective: Objective, budget: int, seed: int = 0,
                   sigma: float = 0.2, mutation_prob: float = 0.8, top: int = 5) -> list[Trial]:
    """The classic sequential mutate-the-best scheme (see the module docstring)."""
    rng = random.Random(seed)
    trials: list[Trial] = []
    hyp = dict(space.base)
    for _ in range(budget):
        trials.append((hyp, objective(hyp)))
        (parent,) = _weighted_top(trials, top, rng, 1)
        child = parent
        for _attempt in range(1000):
            u = rng.random()
            factors = {}
            for gene in _numeric(space):
                gain = YOLOV5_GAINS.get(gene.key, 1.0)
                step = gain * sigma * rng.gauss(0.0, 1.0) * u if rng.random() < mutation_prob else 0.0
                factors[gene.key] = min(3.0, max(0.3, 1.0 + step))
            child = _clip_hyp(space, {**parent, **{k: parent[k] * f for k, f in factors.items()}})
            if child != parent:
                break
        hyp = child
    return trials


def ultralytics_tuner(space: SearchSpace, objective: Objective, budget: int, seed: int = 0,
                      sigma: tuple[float, float] = (0.2, 0.1), mutation_prob: float = 0.5,
                      top: int = 9, blend: float = 0.2) -> list[Trial]:
    """The sequential crossover-and-mutate tuner scheme (see the module docstring)."""
    rng = random.Random(seed)
    trials: list[Trial] = []
    hyp = dict(space.base)
    for i in range(budget):
        trials.append((hyp, objective(hyp)))
        s = sigma[0] + (sigma[1] - sigma[0]) * min(1.0, (i + 1) / max(1, budget - 1))
        a, b = _weighted_top(trials, top, rng, 2)
        child = a
        for _attempt in range(1000):
            mixed = {}
            for gene in _numeric(space):
                lo, hi = sorted((a[gene.key], b[gene.key]))
                width = hi - lo
                mixed[gene.key] = rng.uniform(lo - blend * width, hi + blend * width)
                if rng.random() < mutation_prob:
                    mixed[gene.key] *= math.exp(s * rng.gauss(0.0, 1.0))
            child = _clip_hyp(space, {**a, **mixed})
            if child != a and child != b:
                break
        hyp = child
    return trials


def random_search(space: SearchSpace, objective: Objective, budget: int, seed: int = 0) -> list[Trial]:
    """Uniform random genomes, decoded: the floor any search should clear."""
    rng = random.Random(seed)
    trials: list[Trial] = []
    for _ in range(budget):
        hyp = space.decode(space.random_genome(rng))
        trials.append((hyp, objective(hyp)))
    return trials


def ga_search(space: SearchSpace, objective: Objective, budget: int, seed: int = 0,
              cfg: GAConfig | None = None, seeds: Sequence[Mapping[str, float]] = ()) -> list[Trial]:
    """Our GA run generation by generation in this process, as the driver runs it without Ray.

    With no ``cfg`` it is what a user with this budget would run: the default GA with
    ``generations = budget // population``. The base hyp is the first seed; a genome already trained
    (an elite carried over, a duplicate child) reuses its fitness and costs nothing.
    """
    if cfg is None:
        defaults = GAConfig()
        cfg = GAConfig(generations=max(1, budget // defaults.population), seed=seed)
    ga = GeneticAlgorithm(cfg, len(space), space.levels)
    cache: dict[tuple, float] = {}
    trials: list[Trial] = []
    pop = ga.initial_population([space.encode(space.base)] + [space.encode(h) for h in seeds])
    for generation in range(cfg.generations):
        evaluated = []
        for genome in pop:
            key = space.genome_key(genome)
            if key not in cache:
                if len(trials) >= budget:
                    return trials
                hyp = space.decode(genome)
                cache[key] = objective(hyp)
                trials.append((hyp, cache[key]))
            evaluated.append((genome, cache[key]))
        if generation + 1 < cfg.generations:
            pop = ga.next_generation(evaluated, generation + 1)
    return trials
