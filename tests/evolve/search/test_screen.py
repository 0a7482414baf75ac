"""Tests for the screening model (evolve/search/screen.py) and the GA ideas built on it: pre-screened
breeding, the covariance step, the spread generation 0 and the archive carried through get_state."""
from __future__ import annotations

import math
import random

import numpy as np

from evolve.config.ga import GAConfig
from evolve.search.ga import GeneticAlgorithm
from evolve.search.screen import MIN_POINTS, FitnessModel, normal_scores

N = 10
TARGET = [0.3] * N


def bowl(genome) -> float:
    return math.exp(-4.0 * sum((x - t) ** 2 for x, t in zip(genome, TARGET)))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.argsort().argsort(), b.argsort().argsort())[0, 1])


def test_normal_scores_keep_order_and_share_ties():
    z = normal_scores(np.array([0.5, 0.0, 0.9, 0.0]))
    assert z[2] > z[0] > z[1]
    assert z[1] == z[3]


def test_model_ranks_unseen_genomes_of_a_bowl():
    rng = np.random.default_rng(0)
    train = rng.uniform(0, 1, (80, N))
    test = rng.uniform(0, 1, (40, N))
    model = FitnessModel(train, [bowl(g) for g in train])
    assert model.ok
    assert spearman(model.predict(test), np.array([bowl(g) for g in test])) > 0.6


def test_model_needs_a_few_distinct_fitnesses():
    assert not FitnessModel([[0.1] * N] * (MIN_POINTS - 1), [1.0] * (MIN_POINTS - 1)).ok
    flat = FitnessModel(np.random.default_rng(1).uniform(0, 1, (20, N)), [0.5] * 20)
    assert not flat.ok
    assert flat.predict([[0.2] * N]).tolist() == [0.0]


def _pool(seed: int = 0) -> list[tuple[list[float], float]]:
    rng = random.Random(seed)
    genomes = [[rng.random() for _ in range(N)] for _ in range(60)]
    return [(g, bowl(g)) for g in genomes]


def test_screened_children_are_better_than_unscreened_ones():
    means = {}
    for screen in (1, 10):
        cfg = GAConfig(population=60, screen=screen, covariance=0.0, seed=3)
        children = GeneticAlgorithm(cfg, N).next_generation(_pool(), 1)[3:]
        means[screen] = sum(bowl(c) for c in children) / len(children)
    assert means[10] > means[1] * 1.1


def test_resumed_ga_breeds_the_same_children_with_its_archive():
    cfg = GAConfig(population=20, seed=4)
    ga = GeneticAlgorithm(cfg, N)
    ga.next_generation(_pool(1)[:20], 1)
    state = ga.get_state()
    assert len(state["archive"]) == 20
    again = GeneticAlgorithm(cfg, N)
    again.set_state(state)
    assert again.next_generation(_pool(2)[:20], 2) == ga.next_generation(_pool(2)[:20], 2)
    # Without the archive the model sees fewer genomes and picks other children.
    blind = GeneticAlgorithm(cfg, N)
    blind.set_state({"random": state["random"]})
    assert blind.next_generation(_pool(2)[:20], 2) != again.next_generation(_pool(2)[:20], 2)


def test_covariance_step_follows_the_elite_direction():
    # The best genomes lie along the diagonal of genes 0 and 1; steps should too.
    pool = [([0.2 + 0.6 * t, 0.2 + 0.6 * t] + [0.5] * (N - 2), 1.0 + t) for t in np.linspace(0, 1, 12)]
    steps = []
    for seed in range(20):
        cfg = GAConfig(population=12, screen=1, covariance=1.0, drift=0.0, mutation_rate=(0.0, 0.0),
                       crossover_rate=(0.0, 0.0), elite=(0, 0), tournament=(1, 1), seed=seed)
        for child in GeneticAlgorithm(cfg, N).next_generation(pool, 1):
            steps.append(child)
    arr = np.array(steps)
    along = np.var(arr[:, 0] + arr[:, 1])
    across = np.var(arr[:, 0] - arr[:, 1])
    assert along > 20 * across


def test_spread_generation_zero_reaches_further_than_mutants():
    seed = [0.5] * N
    dist = {}
    for init in ("mutants", "spread"):
        pop = GeneticAlgorithm(GAConfig(population=50, init=init, seed=0), N).initial_population([seed])
        dist[init] = [math.dist(g, seed) for g in pop[1:]]
    assert max(dist["spread"]) > 2 * max(dist["mutants"])
    assert min(dist["spread"]) < 1.5 * min(dist["mutants"]) + 0.1
