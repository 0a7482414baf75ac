"""Tests for evolve.ga: config errors, schedules, seeding, elitism, operators, determinism and resume."""
from __future__ import annotations

import pickle
import random
import subprocess
import sys

import pytest

from evolve.search.baselines import ga_search, random_search
from evolve.errors import ConfigError
from evolve.config import GAConfig
from evolve.search.ga import GeneticAlgorithm, Schedule
from evolve.search.space import SearchSpace
from evolve.search.surrogate import true_fitness

N = 8


def _fit(genome) -> float:
    # A simple bowl with its peak at 0.3 on every gene: enough to tell good from bad genomes.
    return 1.0 - sum((g - 0.3) ** 2 for g in genome)


def _evaluate(pop):
    return [(g, _fit(g)) for g in pop]


def _run(ga: GeneticAlgorithm, generations: int, seeds=None):
    pop = ga.initial_population(seeds if seeds is not None else [[0.5] * N])
    history = [pop]
    for gen in range(1, generations):
        pop = ga.next_generation(_evaluate(pop), gen)
        history.append(pop)
    return history


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"population": 1}, "--population"),
        ({"generations": 0}, "--generations"),
        ({"crossover": "two_point"}, "--crossover"),
        ({"mutation": "uniform"}, "--mutation"),
        ({"init": "zeros"}, "--init"),
        ({"mutation_sigma": 0.0}, "--mutation-sigma"),
        ({"init_sigma": -1.0}, "--init-sigma"),
        ({"drift": -0.5}, "--drift"),
        ({"drift": float("nan")}, "--drift"),
        ({"bounds": "wrap"}, "--bounds"),
        ({"elite": (-1, 2)}, "--elite"),
        ({"elite": (1.5, 2)}, "--elite"),
        ({"elite": (2, 6), "population": 6}, "--elite must stay below --population"),
        ({"tournament": (0, 2)}, "--tournament"),
        ({"crossover_rate": (1.2, 0.5)}, "--crossover-rate"),
        ({"mutation_rate": (0.5, -0.1)}, "--mutation-rate"),
        ({"mutation_rate": (0.5, 0.1, 0.0)}, "--mutation-rate"),
    ],
)
def test_config_errors_name_the_flag(kwargs, flag) -> None:
    with pytest.raises(ConfigError, match=flag):
        GAConfig(**kwargs)


def test_config_defaults_and_single_values() -> None:
    cfg = GAConfig()
    assert cfg.population == 50 and cfg.elite is None and cfg.elite_schedule == (2, 5)
    assert cfg.tournament == (10, 2)
    assert cfg.crossover_rate == (1.0, 0.5) and cfg.mutation_rate == (0.5, 0.01)
    assert cfg.crossover == "blend" and cfg.drift == 1.5 and cfg.bounds == "clip"
    assert GAConfig(elite=3).elite == (3, 3)
    assert GAConfig(mutation_rate=[0.2, 0.1]).mutation_rate == (0.2, 0.1)
    # The default schedule is fitted to a tiny population; a population changed after the config was
    # made still leaves one bred slot.
    assert GeneticAlgorithm(GAConfig(population=3), N).schedule(1.0).elite == 1
    shrunk = GAConfig(elite=(2, 5))
    shrunk.population = 3
    assert GeneticAlgorithm(shrunk, N).schedule(1.0).elite == 2


def test_schedule_endpoints_and_middle() -> None:
    ga = GeneticAlgorithm(GAConfig(generations=11), N)
    assert ga.schedule(0.0) == Schedule(elite=2, tournament=10, crossover_rate=1.0, mutation_rate=0.5)
    assert ga.schedule(1.0) == Schedule(elite=5, tournament=2, crossover_rate=0.5, mutation_rate=0.01)
    mid = ga.schedule(0.5)
    assert 2 <= mid.elite <= 5 and 2 <= mid.tournament <= 10
    assert 0.5 < mid.crossover_rate < 1.0 and 0.01 < mid.mutation_rate < 0.5
    steps = [ga.schedule(ga.progress(g)) for g in range(11)]
    assert [s.elite for s in steps] == sorted(s.elite for s in steps)
    assert [s.tournament for s in steps] == sorted((s.tournament for s in steps), reverse=True)
    assert [s.mutation_rate for s in steps] == sorted((s.mutation_rate for s in steps), reverse=True)
    assert ga.progress(0) == 0.0 and ga.progress(10) == 1.0 and ga.progress(5) == 0.5
    custom = GeneticAlgorithm(GAConfig(elite=(1, 1), tournament=(4, 4), mutation_rate=(0.2, 0.2)), N)
    assert custom.schedule(0.7) == Schedule(elite=1, tournament=4, crossover_rate=pytest.approx(0.65),
                                            mutation_rate=pytest.approx(0.2))


def test_initial_population_seeds_first_then_mutants() -> None:
    seeds = [[0.5] * N, [0.5] * N, [0.2] * N, [1.5] + [0.1] * (N - 1)]
    pop = GeneticAlgorithm(GAConfig(population=20, init_sigma=0.05), N).initial_population(seeds)
    assert len(pop) == 20
    assert pop[:3] == [[0.5] * N, [0.2] * N, [1.0] + [0.1] * (N - 1)]  # deduplicated and clipped
    assert len({tuple(g) for g in pop}) == 20
    assert all(0.0 <= x <= 1.0 for g in pop for x in g)
    # Mutants stay near their seed: mean gene distance to the nearest seed is about init_sigma.
    for g in pop[3:]:
        nearest = min(sum(abs(a - b) for a, b in zip(g, s)) / N for s in pop[:3])
        assert nearest < 0.15
    three = [[0.1] * N, [0.2] * N, [0.3] * N]
    truncated = GeneticAlgorithm(GAConfig(population=2), N).initial_population(three)
    assert truncated == [[0.1] * N, [0.2] * N]


def test_initial_population_random() -> None:
    pop = GeneticAlgorithm(GAConfig(population=30, init="random"), N).initial_population([[0.5] * N])
    assert pop[0] == [0.5] * N
    spread = [x for g in pop[1:] for x in g]
    assert min(spread) < 0.1 and max(spread) > 0.9
    # With no seed at all the population is random too (mutants need something to mutate).
    assert len(GeneticAlgorithm(GAConfig(population=5), N).initial_population([])) == 5
    with pytest.raises(ValueError, match="3 genes"):
        GeneticAlgorithm(GAConfig(), N).initial_population([[0.5] * 3])


def test_elites_first_unchanged_and_children_differ() -> None:
    ga = GeneticAlgorithm(GAConfig(population=20, generations=6), N)
    pop = ga.initial_population([[0.5] * N])
    evaluated = _evaluate(pop)
    nxt = ga.next_generation(evaluated, 1)
    elite = ga.schedule(ga.progress(1)).elite
    ranked = sorted(evaluated, key=lambda e: e[1], reverse=True)
    assert nxt[:elite] == [g for g, _ in ranked[:elite]]
    assert len(nxt) == 20
    parents = {tuple(g) for g in pop}
    for child in nxt[elite:]:
        assert tuple(child) not in parents
    # The last generation's schedule has the lowest mutation rate and still no clones.
    last = ga.next_generation(evaluated, 5)
    assert all(tuple(c) not in parents for c in last[5:])


def test_bounds_kept_and_zero_gene_moves() -> None:
    for crossover, bounds in (("one_point", "clip"), ("uniform", "reflect"), ("blend", "clip"),
                              ("blend", "reflect")):
        for mutation in ("gaussian", "polynomial"):
            cfg = GAConfig(population=30, crossover=crossover, mutation=mutation, mutation_sigma=0.8, seed=2,
                           bounds=bounds, drift=3.0)
            ga = GeneticAlgorithm(cfg, N)
            zeros = [[0.0] * N, [1.0] * N, [0.0] * (N // 2) + [1.0] * (N // 2)]
            pop = ga.initial_population(zeros)
            for gen in range(1, 4):
                pop = ga.next_generation(_evaluate(pop), gen)
                assert all(0.0 <= x <= 1.0 for g in pop for x in g), (crossover, mutation)
    ga = GeneticAlgorithm(GAConfig(population=10, mutation_rate=(0.01, 0.01)), N)
    children = ga.next_generation([([0.0] * N, 1.0)], 1)
    assert children[0] == [0.0] * N
    assert all(any(x > 0 for x in c) for c in children[1:])


def test_clip_lands_on_the_bound_reflect_never_does() -> None:
    pool = [([0.0] * N, 1.0)]
    on_bound = {}
    for bounds in ("clip", "reflect"):
        cfg = GAConfig(population=41, mutation_rate=(1.0, 1.0), crossover_rate=(0.0, 0.0), bounds=bounds)
        children = GeneticAlgorithm(cfg, N).next_generation(pool, 1)[1:]
        genes = [x for c in children for x in c]
        assert all(0.0 <= x <= 1.0 for x in genes) and len(genes) == 40 * N
        on_bound[bounds] = sum(x == 0.0 for x in genes) / len(genes)
    # Every gene draws a step; clipping keeps the half that points outwards on the bound.
    assert 0.35 < on_bound["clip"] < 0.65
    assert on_bound["reflect"] == 0.0


def test_drift_moves_children_towards_the_best_quarter() -> None:
    # Fitness grows with the genes: the best quarter's mean is 0.85, the generation's 0.475.
    pool = [([i / 20] * N, float(i)) for i in range(20)]
    means = {}
    for drift in (0.0, 1.0):
        cfg = GAConfig(population=60, drift=drift, mutation_rate=(0.05, 0.05), tournament=(2, 2), seed=5,
                           screen=1, covariance=0.0)  # the drift alone
        children = GeneticAlgorithm(cfg, N).next_generation(pool, 1)[2:]
        means[drift] = sum(x for c in children for x in c) / (len(children) * N)
    # The drift adds 1.0 x (0.85 - 0.475) = 0.375 per gene, less what clipping at 1 takes off.
    assert 0.2 < means[1.0] - means[0.0] < 0.4
    # With fewer than four scored genomes there is no direction to follow: drift on or off is the same.
    few = [([0.2] * N, 1.0), ([0.4] * N, 2.0), ([0.6] * N, float("nan"))]
    on = GeneticAlgorithm(GAConfig(population=8, seed=1), N).next_generation(few, 1)
    off = GeneticAlgorithm(GAConfig(population=8, seed=1, drift=0.0), N).next_generation(few, 1)
    assert on == off


def test_selection_uses_given_fitness_only() -> None:
    # Same genomes, fitness reversed: the elites must follow the numbers given, not the genomes.
    ga = GeneticAlgorithm(GAConfig(population=6, elite=(2, 2)), N)
    genomes = [[i / 10] * N for i in range(6)]
    up = ga.next_generation([(g, float(i)) for i, g in enumerate(genomes)], 1)
    down = ga.next_generation([(g, float(-i)) for i, g in enumerate(genomes)], 1)
    assert up[:2] == [genomes[5], genomes[4]] and down[:2] == [genomes[0], genomes[1]]
    nan = ga.next_generation([(genomes[0], float("nan")), (genomes[1], 0.1)], 1)
    assert nan[0] == genomes[1]


def test_deterministic_for_seed_and_global_random_untouched() -> None:
    random.seed(123)
    expected = random.random()
    random.seed(123)
    a = _run(GeneticAlgorithm(GAConfig(population=12, generations=4, seed=7), N), 4)
    assert random.random() == expected  # the GA never consumed the global stream
    random.seed(999)
    b = _run(GeneticAlgorithm(GAConfig(population=12, generations=4, seed=7), N), 4)
    assert a == b
    c = _run(GeneticAlgorithm(GAConfig(population=12, generations=4, seed=8), N), 4)
    assert a[1] != c[1]


def test_get_set_state_continues_exactly() -> None:
    cfg = GAConfig(population=12, generations=5, seed=3)
    ga = GeneticAlgorithm(cfg, N)
    pop = ga.initial_population([[0.5] * N])
    pop = ga.next_generation(_evaluate(pop), 1)
    state = pickle.loads(pickle.dumps(ga.get_state()))
    straight = [ga.next_generation(_evaluate(pop), 2)]
    straight.append(ga.next_generation(_evaluate(straight[-1]), 3))
    resumed_ga = GeneticAlgorithm(cfg, N)
    resumed_ga.set_state(state)
    resumed = [resumed_ga.next_generation(_evaluate(pop), 2)]
    resumed.append(resumed_ga.next_generation(_evaluate(resumed[-1]), 3))
    assert resumed == straight


def test_breed_one_steady_state() -> None:
    ga = GeneticAlgorithm(GAConfig(seed=4), N)
    pool = _evaluate(ga.initial_population([[0.5] * N])[:10])
    children = [ga.breed_one(pool, p / 10) for p in range(11)]
    genomes = {tuple(g) for g, _ in pool}
    assert all(tuple(c) not in genomes and len(c) == N for c in children)
    assert all(0.0 <= x <= 1.0 for c in children for x in c)
    again = GeneticAlgorithm(GAConfig(seed=4), N)
    again.initial_population([[0.5] * N])
    assert [again.breed_one(pool, p / 10) for p in range(11)] == children
    with pytest.raises(ValueError, match="empty"):
        ga.breed_one([], 0.5)


def test_selection_improves_fitness() -> None:
    history = _run(GeneticAlgorithm(GAConfig(population=20, generations=8, seed=1), N), 8)
    first = max(_fit(g) for g in history[0])
    last = max(_fit(g) for g in history[-1])
    assert last > first + 0.1


def test_no_creator_classes_at_import() -> None:
    code = (
        "import deap.creator as c; before = set(vars(c)); "
        "import evolve.search.ga, evolve.search.space, evolve.search.surrogate, evolve.search.baselines; "
        "print(sorted(set(vars(c)) - before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ga_beats_random_search_on_surrogate() -> None:
    space = SearchSpace.load()

    def objective(hyp):
        return true_fitness(hyp, "smooth", 3)

    ours = ga_search(space, objective, 150, seed=0)
    rand = random_search(space, objective, 150, seed=0)
    assert len(ours) <= 150 and len(rand) == 150
    best_ours = max(f for _, f in ours)
    best_rand = max(f for _, f in rand)
    assert best_ours > best_rand + 0.1
    assert best_ours > objective(space.base)  # better than where it started
