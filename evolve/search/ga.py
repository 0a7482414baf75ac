"""The genetic algorithm on normalised genomes: DEAP selection, crossover, mutation, adaptive schedules.

The GA knows nothing about hyps, Ray or files: it turns (genome, fitness) pairs into the next genomes to
train. Genomes are lists of floats in [0, 1] (see ``evolve.search.space``). Selection uses exactly the fitness
given. Everything random runs on the GA's own ``random`` state, swapped in around every DEAP call (DEAP's
tools draw from the global ``random`` module), so a run is reproducible for a seed and resumable exactly.

Besides the classic operators every bred child is shifted by the population's drift: ``drift`` times the
difference between the mean genome of the best quarter and the mean of the whole generation. That is the
direction in which the good genomes lie, estimated from the generation itself (the mean update of an
evolution strategy), so no state is kept for it and a resumed run breeds exactly the same children.

With ``covariance`` > 0 each child also takes a step drawn from the covariance of the best quarter's
genomes (the shape of the good region, as CMA-ES adapts it). With ``screen`` > 1 every child slot is
bred ``screen`` times and only the candidate that a cheap model of fitness (``evolve.search.screen``),
fitted on every genome evaluated so far, rates highest is trained. The GA therefore keeps an archive
of the (genome, fitness) pairs it has been shown; it is part of ``get_state`` so resume is exact.

Categorical genes (``levels``: a gene with k > 0 choices sits at the centre of one of k bins) have no
order, so no operator moves them by a step: mutation redraws another choice with the mutation rate,
crossover hands each child one parent's choice (a swap with probability 0.5, whatever the operator),
drift and the covariance step leave them alone, generation 0's mutants redraw them with probability
``INIT_REDRAW``, and the screening model sees them one-hot. Without categorical genes every random draw
is the same as before they existed.
"""
from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from deap import tools

from evolve.config.ga import GAConfig
from evolve.errors import ConfigError
from evolve.search.screen import FitnessModel

LOGGER = logging.getLogger(__name__)

UNIFORM_SWAP_PROB = 0.5  # per-gene swap probability of uniform crossover
BLEND_ALPHA = 0.3  # how far blend crossover may reach beyond the parents (BLX-alpha)
POLYNOMIAL_ETA = 15.0  # crowding degree of polynomial mutation: larger keeps children closer to parents
# The tournament stays near its start size for most of the run (10 - 8 p^3 with the defaults): in a short
# run strong selection pays in every generation but the last ones (see docs/evolve-ga.md for the figures).
TOURNAMENT_POWER = 3.0
SPREAD_RATIO = 4.0  # init "spread": the widest cloud of generation 0 over the narrowest
DRIFT_TOP = 0.25  # fraction of a generation, by fitness, whose mean sets the drift direction
INIT_REDRAW = 0.5  # probability that a generation-0 mutant redraws a categorical gene (uniformly)
ONE_HOT = 1.0 / math.sqrt(2.0)  # one-hot scale: two different choices lie 1 apart, a numeric gene's width


@dataclass
class Schedule:
    """The operator settings for one generation (or one steady-state child)."""

    elite: int
    tournament: int
    crossover_rate: float
    mutation_rate: float


class _Scored(list):
    """A genome with the ``fitness`` attribute DEAP's selection reads."""

    fitness: float


def _ramp(pair: tuple[float, float], progress: float, power: float = 1.0) -> float:
    """Move from pair[0] to pair[1] as progress goes 0 -> 1; power > 1 holds the start value longer."""
    t = progress**power
    return (1.0 - t) * pair[0] + t * pair[1]  # this form gives the end values exactly at 0 and 1


def _reflect(x: float) -> float:
    """Fold a value back into [0, 1] (a step past a bound comes back in, keeping its size)."""
    x = math.fmod(abs(x), 2.0)
    return 2.0 - x if x > 1.0 else x


class GeneticAlgorithm:
    """Breeds genomes from evaluated genomes; deterministic for ``cfg.seed`` given the same fitnesses."""

    def __init__(self, cfg: GAConfig, n_genes: int, levels: Sequence[int] = ()) -> None:
        if n_genes < 1:
            raise ConfigError("the search space has no evolved key")
        self.cfg = cfg
        self.n_genes = n_genes
        self.levels = list(levels) or [0] * n_genes  # choices per gene, 0 for a numeric gene
        if len(self.levels) != n_genes:
            raise ValueError(f"{len(self.levels)} gene levels for {n_genes} genes")
        self._cat = [i for i, k in enumerate(self.levels) if k > 0]
        self._movable = [i for i, k in enumerate(self.levels) if k != 1]
        self._state = random.Random(cfg.seed).getstate()
        self._archive: dict[tuple[float, ...], float] = {}  # every genome shown, first fitness kept

    # --- randomness -----------------------------------------------------------------------------------
    @contextmanager
    def _rng(self) -> Iterator[None]:
        """Run the body (DEAP calls included) on the GA's own random state, leaving the global one alone."""
        saved = random.getstate()
        random.setstate(self._state)
        try:
            yield
        finally:
            self._state = random.getstate()
            random.setstate(saved)

    def get_state(self) -> Any:
        """A picklable snapshot of the GA's random state (the config is the caller's to keep)."""
        return {"random": self._state, "archive": list(self._archive.items())}

    def set_state(self, state: Any) -> None:
        self._state = state["random"]
        self._archive = dict((tuple(k), float(v)) for k, v in state.get("archive", []))

    def observe(self, genome: Sequence[float], fitness: float) -> None:
        """Remember an evaluated genome for the screening model (``next_generation`` and ``breed_one``
        remember what they are given; the steady-state loop also reports results that never join the
        population)."""
        key = tuple(float(x) for x in genome)
        if key not in self._archive:
            self._archive[key] = float(fitness) if math.isfinite(fitness) else -math.inf

    # --- schedules ------------------------------------------------------------------------------------
    def progress(self, generation: int) -> float:
        """Position of ``generation`` in the planned run: 0 at generation 0, 1 at the last one."""
        if self.cfg.generations <= 1:
            return 1.0
        return min(1.0, max(0.0, generation / (self.cfg.generations - 1)))

    def schedule(self, progress: float) -> Schedule:
        """Operator settings at ``progress`` in [0, 1]; the ends are exactly the configured pairs."""
        p = min(1.0, max(0.0, float(progress)))
        return Schedule(
            # At least one slot is always bred, even if the population was changed after the config was made.
            elite=min(self.cfg.population - 1, round(_ramp(self.cfg.elite_schedule, p))),
            tournament=max(1, round(_ramp(self.cfg.tournament, p, TOURNAMENT_POWER))),
            crossover_rate=_ramp(self.cfg.crossover_rate, p),
            mutation_rate=_ramp(self.cfg.mutation_rate, p),
        )

    # --- categorical genes ----------------------------------------------------------------------------
    def _centre(self, i: int, level: int) -> float:
        return (level + 0.5) / self.levels[i]

    def _snap(self, genome: list[float]) -> list[float]:
        """Categorical genes moved to the centre of the bin they are in."""
        for i in self._cat:
            genome[i] = self._centre(i, min(self.levels[i] - 1, int(genome[i] * self.levels[i])))
        return genome

    def _redraw(self, genome: list[float], i: int) -> None:
        """Gene ``i`` (categorical, 2+ choices) takes another of its choices, uniformly."""
        current = min(self.levels[i] - 1, int(genome[i] * self.levels[i]))
        other = random.randrange(self.levels[i] - 1)
        genome[i] = self._centre(i, other + (other >= current))

    def _features(self, genomes: Sequence[Sequence[float]]) -> list[list[float]]:
        """What the screening model sees: numeric genes as they are, categorical ones one-hot."""
        if not self._cat:
            return [list(g) for g in genomes]
        out = []
        for genome in genomes:
            row: list[float] = []
            for x, k in zip(genome, self.levels):
                row += [ONE_HOT * (j == min(k - 1, int(x * k))) for j in range(k)] if k else [x]
            out.append(row)
        return out

    # --- operators (call inside self._rng()) --------------------------------------------------------
    def _bound(self, x: float) -> float:
        # Clipping puts real probability on the bound itself, where many best values sit (mixup 0,
        # mosaic 1); a gene on a bound still moves: half of its steps point inwards.
        return min(1.0, max(0.0, x)) if self.cfg.bounds == "clip" else _reflect(x)

    def _drift(self, pool: list[_Scored]) -> list[float] | None:
        """``drift`` x (mean of the best quarter - mean of all finite genomes), or None when off."""
        scored = [ind for ind in pool if math.isfinite(ind.fitness)]
        if self.cfg.drift <= 0 or len(scored) < 4:
            return None  # too few genomes to tell a direction from noise
        ranked = sorted(scored, key=lambda ind: ind.fitness, reverse=True)
        top = ranked[: max(2, round(len(ranked) * DRIFT_TOP))]
        return [0.0 if self.levels[j] else
                self.cfg.drift * (sum(ind[j] for ind in top) / len(top)
                                  - sum(ind[j] for ind in scored) / len(scored))
                for j in range(self.n_genes)]

    def _elite_spread(self, pool: list[_Scored]) -> np.ndarray | None:
        """Deviations of the best quarter's genomes from their mean (rows), or None when off/too few."""
        scored = [ind for ind in pool if math.isfinite(ind.fitness)]
        if self.cfg.covariance <= 0 or len(scored) < 8:
            return None
        ranked = sorted(scored, key=lambda ind: ind.fitness, reverse=True)
        top = np.array(ranked[: max(4, round(len(ranked) * DRIFT_TOP))], dtype=float)
        spread = (top - top.mean(axis=0)) / math.sqrt(len(top) - 1)
        spread[:, self._cat] = 0.0  # a categorical gene takes no step
        return spread

    def _mutate(self, genome: list[float], rate: float, sigma: float) -> list[float]:
        """Mutate each gene with probability ``rate``; at least one gene moves when ``rate`` > 0."""
        if rate <= 0:
            return genome
        before = list(genome)
        if self.cfg.mutation == "polynomial":
            tools.mutPolynomialBounded(genome, eta=POLYNOMIAL_ETA, low=0.0, up=1.0, indpb=rate)
        else:
            tools.mutGaussian(genome, mu=0.0, sigma=sigma, indpb=rate)
            genome[:] = [self._bound(x) for x in genome]
        for i in self._cat:
            genome[i] = before[i]
            if self.levels[i] > 1 and random.random() < rate:
                self._redraw(genome, i)
        # A child that equals its parent costs a trial (or a cache slot) and teaches nothing.
        while genome == before and self._movable:
            i = random.choice(self._movable) if self._cat else random.randrange(len(genome))
            if self.levels[i]:
                self._redraw(genome, i)
            elif self.cfg.mutation == "polynomial":
                moved = list(genome)
                tools.mutPolynomialBounded(moved, eta=POLYNOMIAL_ETA, low=0.0, up=1.0, indpb=1.0)
                genome[i] = moved[i]
            else:
                genome[i] = self._bound(genome[i] + random.gauss(0.0, sigma))
        return genome

    def _crossover(self, a: list[float], b: list[float]) -> None:
        if self.n_genes < 2 and self.cfg.crossover != "blend":
            return
        if self.cfg.crossover == "one_point":
            tools.cxOnePoint(a, b)
        elif self.cfg.crossover == "uniform":
            tools.cxUniform(a, b, indpb=UNIFORM_SWAP_PROB)
        else:
            before = list(a), list(b)
            tools.cxBlend(a, b, alpha=BLEND_ALPHA)
            a[:] = [min(1.0, max(0.0, x)) for x in a]
            b[:] = [min(1.0, max(0.0, x)) for x in b]
            for i in self._cat:  # a blend of two choices means nothing: each child gets one parent's
                swap = random.random() < UNIFORM_SWAP_PROB
                a[i], b[i] = before[swap][i], before[not swap][i]

    def _child(self, pool: list[_Scored], sched: Schedule, drift: list[float] | None,
               spread: np.ndarray | None = None) -> list[float]:
        """One child: tournament parent, crossover with a second winner at the rate, drift, mutation."""
        (p1,) = tools.selTournament(pool, 1, sched.tournament)
        child = list(p1)
        parents = [list(p1)]
        if random.random() < sched.crossover_rate:
            (p2,) = tools.selTournament(pool, 1, sched.tournament)
            other = list(p2)
            parents.append(list(p2))
            self._crossover(child, other)
        if drift is not None:
            child[:] = [self._bound(x + d) for x, d in zip(child, drift)]
        if spread is not None:
            # A sample of N(0, C) for the elite's covariance C: a random mix of its deviations.
            step = self.cfg.covariance * (np.array([random.gauss(0.0, 1.0) for _ in spread]) @ spread)
            child[:] = [self._bound(x + float(d)) for x, d in zip(child, step)]
        self._mutate(child, sched.mutation_rate, self.cfg.mutation_sigma)
        if sched.mutation_rate > 0:
            for parent in parents:
                while child == parent:
                    self._mutate(child, 1.0 / self.n_genes, self.cfg.mutation_sigma)
        return child

    # --- public -------------------------------------------------------------------------------------
    def initial_population(self, seeds: list[list[float]]) -> list[list[float]]:
        """Generation 0: the seeds (deduplicated, clipped, truncated to the population) then bred genomes.

        With ``init="mutants"`` the rest are mutants of the seeds taken round-robin: every gene moves by
        a Gaussian step of std ``init_sigma`` (reflected at the bounds), a cloud around each seed. With
        ``init="random"``, or no seeds at all, they are uniform random.
        """
        pop: list[list[float]] = []
        seen: set[tuple[float, ...]] = set()  # a list's `in` made --population 100000 take ten minutes
        for seed in seeds:
            if len(seed) != self.n_genes:
                raise ValueError(f"seed genome has {len(seed)} genes, expected {self.n_genes}")
            genome = self._snap([min(1.0, max(0.0, float(x))) for x in seed])
            if tuple(genome) not in seen:
                seen.add(tuple(genome))
                pop.append(genome)
        if len(pop) > self.cfg.population:
            LOGGER.info("%d seed genomes, keeping the first %d (the population)",
                        len(pop), self.cfg.population)
            pop = pop[: self.cfg.population]
            seen = {tuple(g) for g in pop}
        parents = list(pop)
        with self._rng():
            i = 0
            while len(pop) < self.cfg.population:
                if self.cfg.init == "random" or not parents:
                    genome = self._snap([random.random() for _ in range(self.n_genes)])
                else:
                    genome = list(parents[i % len(parents)])
                    sigma = self.cfg.init_sigma
                    if self.cfg.init == "spread":
                        # Radii from init_sigma to SPREAD_RATIO times it: near seeds refine good defaults,
                        # far ones find an optimum the defaults are far from; screening sorts them later.
                        sigma *= SPREAD_RATIO ** (i / max(1, self.cfg.population - len(parents) - 1))
                    parent = genome
                    genome = [_reflect(x + random.gauss(0.0, sigma)) for x in genome]
                    for j in self._cat:
                        genome[j] = parent[j]
                        if random.random() < INIT_REDRAW:
                            genome[j] = self._centre(j, random.randrange(self.levels[j]))
                    i += 1
                if tuple(genome) not in seen:
                    seen.add(tuple(genome))
                    pop.append(genome)
        return pop

    def _pool(self, evaluated: Sequence[tuple[Sequence[float], float]]) -> list[_Scored]:
        """Scored genomes, duplicates merged (first fitness kept); non-finite fitness sorts last."""
        pool: list[_Scored] = []
        seen: set[tuple[float, ...]] = set()
        for genome, fit in evaluated:
            key = tuple(float(x) for x in genome)
            if key in seen:
                continue
            seen.add(key)
            ind = _Scored(key)
            ind.fitness = float(fit) if math.isfinite(fit) else -math.inf
            pool.append(ind)
        if not pool:
            raise ValueError("cannot breed from an empty set of evaluated genomes")
        return pool

    def _remember(self, pool: list[_Scored]) -> None:
        for ind in pool:
            self.observe(ind, ind.fitness)

    def _model(self) -> FitnessModel | None:
        if self.cfg.screen <= 1:
            return None
        genomes = list(self._archive)
        model = FitnessModel(self._features(genomes), [self._archive[g] for g in genomes])
        return model if model.ok else None

    def _breed(self, pool: list[_Scored], sched: Schedule, count: int, taken: list[list[float]],
               model: FitnessModel | None) -> list[list[float]]:
        """``count`` children not in ``taken``; with a model, each the best rated of ``screen`` bred."""
        drift, spread = self._drift(pool), self._elite_spread(pool)
        out: list[list[float]] = []
        attempts = 0
        per_slot = self.cfg.screen if model is not None else 1
        while len(out) < count:
            group = []
            for _ in range(per_slot):
                child = self._child(pool, sched, drift, spread)
                attempts += 1
                # Without mutation a small pool can only give copies; accept them rather than loop forever.
                if (child not in taken and child not in out and tuple(child) not in self._archive) \
                        or attempts > 20 * self.cfg.population * per_slot:
                    group.append(child)
            if not group:
                continue
            if model is not None and len(group) > 1:
                group = [group[int(np.argmax(model.predict(self._features(group))))]]
            out.append(group[0])
        return out

    def next_generation(self, evaluated: list[tuple[list[float], float]],
                        generation: int) -> list[list[float]]:
        """Breed generation ``generation`` (1..generations-1): elites first, unchanged, then children."""
        pool = self._pool(evaluated)
        self._remember(pool)
        sched = self.schedule(self.progress(generation))
        ranked = sorted(pool, key=lambda ind: ind.fitness, reverse=True)  # stable: ties keep input order
        out = [list(ind) for ind in ranked[: min(sched.elite, len(ranked))]]
        model = self._model()
        with self._rng():
            out += self._breed(pool, sched, self.cfg.population - len(out), out, model)
        LOGGER.debug("generation %d: %s, best fitness in %.4f", generation, sched, ranked[0].fitness)
        return out

    def breed_one(self, evaluated: list[tuple[list[float], float]], progress: float) -> list[float]:
        """Steady state: one child of the evaluated genomes at ``progress`` through the planned run."""
        pool = self._pool(evaluated)
        self._remember(pool)
        model = self._model()
        with self._rng():
            return self._breed(pool, self.schedule(progress), 1, [], model)[0]
