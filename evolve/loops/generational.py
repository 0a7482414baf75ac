"""The generational GA: a barrier per generation, the classic YOLOv5-style evolution.

The loop, written as DEAP writes ``eaSimple``::

    population = ga.initial_population(seeds)             # the base hyp, --population-dir, their mutants
    for g in range(generations):
        save_checkpoint(g, population, ga.get_state())
        jobs = [TrialJob(p) for p in population if key(p) not in cache]   # a carried elite is not retrained
        for job in jobs:                                   # as many at once as Ray Tune has slots for
            metrics = train(job)                           # one Ray Tune trial (evolve.execution)
            cache[key(job)] = metrics; append a row to evolve.csv
        write evolve_population.yaml; draw the plots       # the barrier: every result is in
        values = [selection_value(cache[key(p)]) for p in population]
        population = ga.next_generation(zip(population, values), g + 1)   # elites, tournament, crossover,
                                                                            # mutation at g's schedule
Ray Tune turns this inside out (it asks its searcher for the next trial): the runner pulls
``next_job()``, which at a barrier calls ``_advance()`` (the loop body from the barrier to the next
generation's jobs), and hands each result to ``_record``. A stop raised at a barrier (``RunStopped``) ends
the running trials and surfaces from ``TrialRunner.run``.

Generation ``g``: the checkpoint is saved (population and GA state, before any trial of ``g`` runs), every
individual whose rounded genome has no result yet becomes one trial, each finished trial is appended to
``evolve.csv`` at once, then the population file is written, the plots are drawn (in the background) and
``g + 1`` is bred. A resumed run rebuilds its cache of evaluated genomes from ``evolve.csv``, so a trial
that has a row never runs again, and a driver killed at any moment continues exactly where it was.

A generation whose trials all failed for one reason may stop the run (``evolve.loops.failures``): the
checkpoint of that generation is saved again marked ``halted``, and a resumed run trains the failed
trials of that generation again (once the cause is fixed they have a chance; their first rows stay in
evolve.csv, followed by the new ones).
"""
from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from evolve.contract import Metrics, selection_value, standing
from evolve.errors import RunStopped
from evolve.execution.jobs import WAIT, JobSource, TrialJob
from evolve.loops.base import Evolution, Genome, progress_options, progress_totals
from evolve.loops.failures import FailureStreak
from evolve.loops.plan import Plan
from evolve.output.progress import Progress
from evolve.output.records import TrialRecord

LOGGER = logging.getLogger(__name__)


class GenerationSource(JobSource):
    """The job source of a whole generational run, one generation after another.

    ``_advance()`` is called at the start and at every generation barrier (all results in, nothing
    running): it closes the generation that ended and returns the jobs of the next one, or None when the
    run is over. Between barriers the source hands out the generation's jobs, then answers ``WAIT``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._queue: deque[TrialJob] = deque()
        self._over = False

    def has_jobs(self) -> bool:
        """Pass barriers until a generation has a job to run; False when the run is over."""
        while not self._queue and not self.running() and not self._over:
            jobs = self._advance()
            if jobs is None:
                self._over = True
            else:
                self._queue.extend(jobs)
        return bool(self._queue)

    def _next(self) -> Any:
        if not self._queue:
            if self.running():
                return WAIT  # the generation barrier: its last results are not in yet
            if not self.has_jobs():
                return None
        return self._queue.popleft()

    def _advance(self) -> Sequence[TrialJob] | None:
        raise NotImplementedError


class GenerationalEvolution(Evolution, GenerationSource):
    """One run of the generational GA in a locked run folder; it is the runner's job source."""

    def __init__(self, plan: Plan, run_dir: Path) -> None:
        Evolution.__init__(self, plan, run_dir)
        GenerationSource.__init__(self)
        self.cache: dict[tuple, Metrics] = {}
        self.generation = 0
        self.population: list[Genome] = []
        self._first: tuple[int, list[Genome]] | None = None
        self._results: list[Metrics] = []  # of the trials run in this generation
        self._streak = FailureStreak(self.cfg.max_failed_generations)
        self._halted: str | None = None  # why the saved generation stopped the run, while it runs again

    def run(self) -> None:
        self._first = self._start()
        cfg = self.cfg
        LOGGER.info("evolving %d hyperparameters: %d generations of %d in %s (trainer %s)",
                    len(self.space), cfg.ga.generations, cfg.ga.population, self.run_dir, cfg.trainer)
        if self.has_jobs():
            self.run_trials(self)
        self.finish()

    def _start(self) -> tuple[int, list[Genome]]:
        """Generation index and population to run first: from the checkpoint, or a fresh generation 0."""
        rows = self.records.rows()
        self.progress = Progress(self.cfg.ga.generations, **progress_totals(rows),
                                 **progress_options(self.cfg, self.cfg.ga.generations * self.cfg.ga.population,
                                                    exact=False), clock=self.now)
        for row in rows:
            self.cache.setdefault(self.space.genome_key(self.space.encode(row.hyp)), row.metrics)
        state = self.plan.checkpoint
        if state is None:
            return 0, self.first_population()
        self.ga.set_state(state["ga_state"])
        generation = state["generation"]
        population = [list(map(float, g)) for g in state["population"]]
        # Rows of the interrupted generation map to its genomes exactly through (generation, individual);
        # the last row of an individual is its result.
        self._halted = state.get("halted")
        for row in rows:
            if row.generation == generation and 0 <= row.individual < len(population):
                key = self.space.genome_key(population[row.individual])
                if self._halted and row.metrics.status == "failed":
                    self.cache.pop(key, None)  # the failures that stopped the run: tried again
                else:
                    self.cache[key] = row.metrics
        if self._halted:
            LOGGER.info("generation %d stopped the run (%s); its failed trials run again", generation,
                        self._halted)
        LOGGER.info("resuming %s at generation %d (%d of %d) with %d finished trials on record",
                    self.run_dir, generation, generation + 1, self.cfg.ga.generations, len(rows))
        return generation, population

    def _advance(self) -> list[TrialJob] | None:
        """At a barrier: close the generation that ended, breed and checkpoint the next; its jobs."""
        if self._first is not None:
            (self.generation, self.population), self._first = self._first, None
        else:
            self._finish_generation()
            reason = self._streak.generation(self._results)
            if reason is not None:
                self._halted = reason
                self._save_checkpoint()
                raise RunStopped(f"every trial of generation {self.generation} failed: {reason}; fix the "
                                 f"cause, then resume with: python orchestrate.py --resume {self.run_dir}")
            self._halted = None
            if self.generation + 1 >= self.cfg.ga.generations:
                return None
            values = [selection_value(self._metrics(g)) for g in self.population]
            self.population = self.ga.next_generation(list(zip(self.population, values)), self.generation + 1)
            self.generation += 1
        self._save_checkpoint()
        self._results = []
        jobs = self._jobs(self.generation, self.population)
        LOGGER.info("generation %d (%d of %d): %d trials to run, %d individuals already evaluated",
                    self.generation, self.generation + 1, self.cfg.ga.generations, len(jobs),
                    len(self.population) - len(jobs))
        assert self.progress is not None
        self.progress.start_generation(self.generation, len(jobs))
        return jobs

    def _metrics(self, genome: Genome) -> Metrics:
        # Every genome of a generation has a result at its barrier; a missing one counts as failed.
        return self.cache.get(self.space.genome_key(genome)) or Metrics(status="failed")

    def _save_checkpoint(self) -> None:
        halted = {"halted": self._halted} if self._halted else {}
        self.save_checkpoint(generation=self.generation, population=self.population,
                             ga_state=self.ga.get_state(), **halted)

    def _jobs(self, generation: int, population: list[Genome]) -> list[TrialJob]:
        """One trial per genome not evaluated yet; a genome repeated in the generation trains once."""
        jobs, queued = [], set()
        for i, genome in enumerate(population):
            key = self.space.genome_key(genome)
            if key in self.cache or key in queued:
                continue
            queued.add(key)
            jobs.append(TrialJob(trial_id=f"g{generation:03d}i{i:03d}", generation=generation, individual=i,
                                 hyp=self.space.decode(genome)))
        return jobs

    # JobSource ----------------------------------------------------------------------------------------
    def _record(self, job: TrialJob, metrics: Metrics, seconds: float) -> None:
        self.records.append(TrialRecord(job.generation, job.individual, job.trial_id, job.hyp, metrics))
        self.cache[self.space.genome_key(self.population[job.individual])] = metrics
        self._results.append(metrics)
        assert self.progress is not None
        self.progress.finished(job.trial_id, metrics, seconds)

    def _finish_generation(self) -> None:
        assert self.progress is not None
        self.progress.end_generation()
        self.records.write_population(self.generation, [self.space.decode(g) for g in self.population])
        self.plotter.request()
        ranked = sorted(self._metrics(g).fitness for g in self.population)
        best = max((self._metrics(g) for g in self.population), key=standing)  # finished before stopped
        LOGGER.info("generation %d done: best %.5f, median %.5f of its population", self.generation,
                    best.fitness, ranked[len(ranked) // 2])
