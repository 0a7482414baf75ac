"""The async (steady-state) evolution: a child is bred the moment a trial slot frees, with no barrier.

The loop, written as DEAP writes its algorithms (budget = generations x population children)::

    queue = ga.initial_population(seeds); members = []; bred = len(queue)
    while bred < budget or queue or running:
        if a trial slot is free and (queue or bred < budget):
            child = queue.pop() if queue else ga.breed_one(members, bred / budget)   # never a duplicate
            save_checkpoint(); start a trial of child      # one Ray Tune trial (evolve.execution)
        when a trial ends with metrics:
            append a row to evolve.csv
            members = best `population` of members + [child] by selection_value (ageing: recent ones only)
            save_checkpoint()

Ray Tune asks for the next trial, so the runner pulls ``next_job()`` (the first branch) and hands each
result to ``_record`` (the second); nothing else drives the loop.

At the start the initial population (generation 0, seeded as in generational mode) is queued. Whenever
the runner has a free slot it asks for a job: a queued child if there is one, else ONE child bred at
once by ``GeneticAlgorithm.breed_one`` from the current population, at progress ``bred / budget`` (budget
= generations x population), so the GA's schedules run over trials instead of generations. Every result
joins the current population, which is the ``population`` best individuals evaluated so far (ranked by
``selection_value``, earlier child first on ties), except that with ageing (``GAConfig.age`` > 0, by
default 1) a result loses its seat once age x population children have been bred after it, unless it is
one of the elite schedule's best: a trial that drew lucky noise stops being a parent after about a
generation, as in generational mode. See docs/evolve-async.md for why.

Child ``b`` (counted from 0 over the run) is recorded as generation ``b // population``, individual
``b % population``, trial ``g{generation:03d}i{individual:03d}``. A bred child whose rounded genome was
already evaluated, or is running or queued, is bred again (a bounded number of times, then replaced by a
random genome), so every child of the budget trains exactly once.

The checkpoint is saved after every breed and every result: GA random state, the bred count, the current
population (exact genomes and selection values), the results that may still take a seat (``reserve``,
with ageing only) and the children bred but not finished. A resumed run launches those children again
first, except those whose row reached ``evolve.csv`` before the driver died: they count as finished with
the recorded metrics. No child is trained or recorded twice.

``--max-failed-generations N`` stops the run once N x population results in a row failed with one reason
(``evolve.loops.failures``); those children stay recorded (failed, at the bottom of the population) and a
resumed run goes on breeding.
"""
from __future__ import annotations

import logging
import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.contract import Metrics, selection_value
from evolve.errors import RunStopped
from evolve.execution.jobs import WAIT, JobSource, TrialJob
from evolve.loops.base import Evolution, Genome, progress_options, progress_totals
from evolve.loops.failures import FailureStreak
from evolve.loops.plan import Plan
from evolve.output.progress import Progress
from evolve.output.records import TrialRecord
from evolve.search.ga import GeneticAlgorithm
from evolve.search.space import SearchSpace

LOGGER = logging.getLogger(__name__)

REBREED_LIMIT = 50  # breeds tried for a child that is not a duplicate before a random genome is used


@dataclass
class Child:
    """A bred genome and the trial that evaluates it."""

    index: int  # position in the run's breeding order, from 0
    trial_id: str
    genome: Genome


@dataclass
class Member:
    """An evaluated individual of the current population."""

    index: int
    genome: Genome
    value: float  # selection_value of its metrics: what the GA ranks it by
    fitness: float  # its recorded fitness

    def saved(self) -> tuple[int, list[float], float, float]:
        """The checkpoint's form: (index, genome, selection value, fitness)."""
        return self.index, list(self.genome), self.value, self.fitness

    @staticmethod
    def load(saved: list) -> list[Member]:
        """Members from their checkpoint form, exact (not re-read from evolve.csv)."""
        return [Member(int(i), [float(x) for x in g], float(v), float(f)) for i, g, v, f in saved]


def child_name(index: int, population: int) -> tuple[int, int, str]:
    """(nominal generation, individual, trial id) of the child bred ``index``-th."""
    generation, individual = divmod(index, population)
    return generation, individual, f"g{generation:03d}i{individual:03d}"


class SteadyState:
    """The bookkeeping of a steady-state GA, without Ray or files: who is evaluated, who runs, what is next.

    ``known`` holds the rounded genome keys of every child evaluated, running or queued, so a duplicate is
    never trained.
    """

    def __init__(self, ga: GeneticAlgorithm, space: SearchSpace, population: int, budget: int,
                 age: int = 0) -> None:
        self.ga = ga
        self.space = space
        self.size = population
        self.budget = budget
        self.age = age  # births after which a member loses its seat unless elite; 0: never
        self.bred = 0
        self.members: list[Member] = []
        self.reserve: list[Member] = []  # results young enough to take a seat freed by ageing, best first
        self.queue: deque[Child] = deque()
        self.running: dict[str, Child] = {}
        self.known: set[tuple] = set()

    def _child(self, genome: Genome) -> Child:
        index = self.bred
        self.bred += 1
        self.known.add(self.space.genome_key(genome))
        return Child(index, child_name(index, self.size)[2], [float(x) for x in genome])

    def _fallback(self) -> Genome:
        # Drawn from a generator of its own, seeded by the child's index, so a resumed run draws the same.
        rng = random.Random(f"{self.ga.cfg.seed}:{self.bred}")
        while True:
            genome = self.space.random_genome(rng)
            if self.space.genome_key(genome) not in self.known:
                return genome

    def seed(self, genomes: list[Genome]) -> None:
        """Queue the initial population (generation 0); a rounded duplicate is replaced by a random genome."""
        for genome in genomes:
            if self.space.genome_key(genome) in self.known:
                genome = self._fallback()
            self.queue.append(self._child(genome))

    def fraction_bred(self) -> float:
        """How far the run is through its budget of children, 0 to 1: what the GA's schedules read."""
        return min(1.0, self.bred / self.budget)

    def breed(self) -> Child:
        """One new child of the current population, at progress bred / budget of the run."""
        self.reseat()  # members may have aged out since the last result
        evaluated = [(m.genome, m.value) for m in self.members]
        progress = self.fraction_bred()
        for _ in range(REBREED_LIMIT):
            genome = self.ga.breed_one(evaluated, progress)
            if self.space.genome_key(genome) not in self.known:
                return self._child(genome)
        LOGGER.warning("child %d: %d breeds in a row gave genomes already evaluated; using a random genome",
                       self.bred, REBREED_LIMIT)
        return self._child(self._fallback())

    def next_child(self) -> Child | None | Any:
        """The next child to run: queued, else freshly bred; ``WAIT``, or None when the run is over."""
        if self.queue:
            child = self.queue.popleft()
        elif self.bred < self.budget and self.members:
            child = self.breed()
        elif self.running:
            return WAIT  # the budget is bred (or nothing is evaluated yet); results are still to come
        elif self.bred < self.budget:
            raise RuntimeError("nothing to breed from: no evaluated individual and no trial running")
        else:
            return None
        self.running[child.trial_id] = child
        return child

    def finish(self, trial_id: str, metrics: Metrics) -> Child | None:
        """A running child's result: it joins the population (best ``population`` kept). None if unknown."""
        child = self.running.pop(trial_id, None)
        if child is not None:
            self.admit(child, metrics)
        return child

    def admit(self, child: Child, metrics: Metrics) -> None:
        self.known.add(self.space.genome_key(child.genome))
        member = Member(child.index, child.genome, selection_value(metrics), float(metrics.fitness))
        self.ga.observe(child.genome, member.value)  # the screening model learns from poor results too
        self.members.append(member)
        self.reseat()

    def reseat(self) -> None:
        """Give the ``population`` seats to the best results that may hold one.

        Without ageing that is the best results ever. With it, only results among the last ``age``
        children bred, plus the elite schedule's best few whatever their age (at least one, so the best
        found stays a parent): under noisy fitness the best-ever list fills with lucky draws that would
        otherwise breed for the rest of the run. A result that lost its seat never gets it back.
        """
        ranked = sorted([*self.members, *self.reserve], key=lambda m: (-m.value, m.index))
        if self.age > 0:
            elite = max(1, self.ga.schedule(self.fraction_bred()).elite)
            oldest = self.bred - self.age
            ranked = ranked[:elite] + [m for m in ranked[elite:] if m.index >= oldest]
        self.members, self.reserve = ranked[:self.size], (ranked[self.size:] if self.age > 0 else [])

    def pending(self) -> list[Child]:
        """Children bred but not finished, in breeding order."""
        return sorted([*self.running.values(), *self.queue], key=lambda c: c.index)

    def state(self) -> dict[str, Any]:
        """The picklable part of the checkpoint."""
        return {"bred": self.bred, "generation": max(0, self.bred - 1) // self.size,
                "population": [m.saved() for m in self.members],
                "reserve": [m.saved() for m in self.reserve],
                "pending": [(c.index, c.trial_id, list(c.genome)) for c in self.pending()],
                "ga_state": self.ga.get_state()}


class _SteadyProgress(Progress):
    """Progress over a trial budget: the generation shown is the nominal one of the results so far."""

    def __init__(self, budget: int, population: int, generations: int, **kwargs: Any) -> None:
        super().__init__(generations, **kwargs)
        self.budget = budget
        self.size = population
        self.generation = min(generations - 1, self.done // population)

    def finished(self, trial_id: str, metrics: Metrics, seconds: float) -> None:
        self.generation = min(self.generations - 1, self.done // self.size)  # this result's generation
        super().finished(trial_id, metrics, seconds)

    def remaining_trials(self) -> int:
        return max(0, self.budget - self.done)


class SteadyEvolution(Evolution, JobSource):
    """One async evolution in a locked run folder; it is the runner's job source."""

    def __init__(self, plan: Plan, run_dir: Path) -> None:
        Evolution.__init__(self, plan, run_dir)
        JobSource.__init__(self)
        self.size = self.cfg.ga.population
        self.state = SteadyState(self.ga, self.space, self.size, self.cfg.ga.generations * self.size,
                                 self.cfg.ga.age_births())
        self.progress: _SteadyProgress | None = None
        self._population_at = -1  # number of records when evolve_population.yaml was last written
        self._streak = FailureStreak(self.cfg.max_failed_generations)

    def run(self) -> None:
        self._start()
        cfg = self.cfg
        LOGGER.info("evolving %d hyperparameters asynchronously: %d trials (%d generations of %d) in %s "
                    "(trainer %s)", len(self.space), self.state.budget, cfg.ga.generations, self.size,
                    self.run_dir, cfg.trainer)
        if self.state.queue or self.state.bred < self.state.budget:
            self.run_trials(self)
        assert self.progress is not None
        self.progress.end_generation()
        self._write_population()
        self.plotter.request()
        self.finish()

    def _start(self) -> None:
        rows = self.records.rows()
        self.progress = _SteadyProgress(self.state.budget, self.size, self.cfg.ga.generations,
                                        **progress_totals(rows),
                                        **progress_options(self.cfg, self.state.budget, exact=True),
                                        clock=self.now)
        state, ckpt = self.state, self.plan.checkpoint
        for row in rows:
            state.known.add(self.space.genome_key(self.space.encode(row.hyp)))
        if ckpt is None:
            state.seed(self.first_population())
        else:
            self.ga.set_state(ckpt["ga_state"])
            state.bred = ckpt["bred"]
            state.members = Member.load(ckpt["population"])
            state.reserve = Member.load(ckpt.get("reserve", []))  # absent before ageing existed
            recorded = {r.trial_id: r for r in rows}
            relaunched = 0
            for index, trial_id, genome in ckpt["pending"]:
                child = Child(int(index), str(trial_id), [float(x) for x in genome])
                row = recorded.get(child.trial_id)
                if row is not None:  # its row was written just before the driver died
                    state.admit(child, row.metrics)
                else:
                    state.known.add(self.space.genome_key(child.genome))
                    state.queue.append(child)
                    relaunched += 1
            LOGGER.info("resuming %s: %d of %d trials on record, %d bred trials to run again first",
                        self.run_dir, len(rows), state.budget, relaunched)
        self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        self.save_checkpoint(**self.state.state())

    # JobSource ----------------------------------------------------------------------------------------
    def _next(self) -> Any:
        bred = self.state.bred
        child = self.state.next_child()
        if child is None or child is WAIT:
            return child
        if self.state.bred != bred:
            self._save_checkpoint()  # before the child starts, so a resumed run trains it exactly once
        generation, individual, trial_id = child_name(child.index, self.size)
        return TrialJob(trial_id=trial_id, generation=generation, individual=individual,
                        hyp=self.space.decode(child.genome))

    def _record(self, job: TrialJob, metrics: Metrics, seconds: float) -> None:
        self.records.append(TrialRecord(job.generation, job.individual, job.trial_id, job.hyp, metrics))
        self.state.finish(job.trial_id, metrics)
        self._save_checkpoint()
        assert self.progress is not None
        self.progress.finished(job.trial_id, metrics, seconds)
        if len(self.records) % self.size == 0:
            self._write_population()
            self.plotter.request()
        reason = self._streak.trial(metrics, self.size)
        if reason is not None:
            raise RunStopped(f"the last {self._streak.count} trials all failed: {reason}; fix the cause, "
                             f"then resume with: python orchestrate.py --resume {self.run_dir}")

    def _write_population(self) -> None:
        if not self.state.members or self._population_at == len(self.records):
            return
        self._population_at = len(self.records)
        generation = max(0, len(self.records) // self.size - 1)
        self.records.write_population(generation, [self.space.decode(m.genome) for m in self.state.members])
        ranked = sorted(m.fitness for m in self.state.members)
        # The members are ranked by selection value: the first is the best finished one, if any finished.
        LOGGER.info("%d of %d trials done: best %.5f, median %.5f of the current population",
                    len(self.records), self.state.budget, self.state.members[0].fitness,
                    ranked[len(ranked) // 2])


__all__ = ["Child", "Member", "SteadyEvolution", "SteadyState", "child_name"]
