"""The generational GA: a barrier per generation, the classic YOLOv5-style evolution.

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

from evolve.contract import Metrics, sanitised, selection_value
from evolve.errors import RunStopped
from evolve.execution.jobs import WAIT, TrialJob
from evolve.loops.base import Evolution, Genome, progress_totals
from evolve.loops.failures import FailureStreak
from evolve.loops.plan import Plan
from evolve.output.progress import Progress
from evolve.output.records import TrialRecord

LOGGER = logging.getLogger(__name__)


class GenerationSource:
    """The runner's job source for a whole generational run, one generation after another.

    ``advance()`` is called at the start and at every generation barrier (all results in, nothing
    running): it closes the generation that ended and returns the jobs of the next one, or None when the
    run is over. Between barriers the source hands out the generation's jobs, then answers ``WAIT``.
    """

    def __init__(self, advance: Callable[[], Sequence[TrialJob] | None],
                 on_result: Callable[[TrialJob, Metrics, float], None],
                 on_start: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_tick: Callable[[], None] | None = None) -> None:
        self._advance = advance
        self._on_result = on_result
        self._on_start = on_start
        self._on_tick = on_tick
        self._clock = clock
        self._queue: deque[TrialJob] = deque()
        self._started: dict[str, float] = {}  # trial id -> start time, while running
        self._over = False
        self.results: dict[str, Metrics] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles its search algorithm, and with it this source, into its experiment folder. The
        # callbacks reach into the driver (open files, the terminal) and mean nothing in another process;
        # the evolution never restores from Tune's copy, so only plain data goes.
        return {"_queue": deque(self._queue), "_started": dict(self._started), "_over": self._over,
                "results": dict(self.results), "_advance": None, "_on_result": None, "_on_start": None,
                "_on_tick": None,
                "_clock": time.monotonic}

    def has_jobs(self) -> bool:
        """Pass barriers until a generation has a job to run; False when the run is over."""
        while not self._queue and not self._started and not self._over:
            jobs = self._advance()
            if jobs is None:
                self._over = True
            else:
                self._queue.extend(jobs)
        return bool(self._queue)

    def next_job(self) -> Any:
        if not self._queue:
            if self._started:
                return WAIT  # the generation barrier: its last results are not in yet
            if not self.has_jobs():
                return None
        job = self._queue.popleft()
        self._started[job.trial_id] = self._clock()
        if self._on_start is not None:
            self._on_start(job.trial_id)
        return job

    def on_tick(self) -> None:
        if self._on_tick is not None:
            self._on_tick()

    def on_result(self, job: TrialJob, metrics: Metrics) -> None:
        if job.trial_id in self.results or job.trial_id not in self._started:
            LOGGER.warning("trial %s reported twice or was never started; result ignored", job.trial_id)
            return
        seconds = self._clock() - self._started.pop(job.trial_id)
        self.results[job.trial_id] = metrics
        self._on_result(job, metrics, seconds)


class GenerationalEvolution(Evolution):
    """One run of the generational GA in a locked run folder."""

    def __init__(self, plan: Plan, run_dir: Path) -> None:
        super().__init__(plan, run_dir)
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
        progress = self.progress
        assert progress is not None
        source = GenerationSource(self._advance, self._record, on_start=progress.started,
                                  on_tick=progress.tick)
        if source.has_jobs():
            self.run_trials(source)
        self.finish()

    def _start(self) -> tuple[int, list[Genome]]:
        """Generation index and population to run first: from the checkpoint, or a fresh generation 0."""
        rows = self.records.rows()
        self.progress = Progress(self.cfg.ga.generations, **progress_totals(rows))
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

    def _record(self, job: TrialJob, metrics: Metrics, seconds: float) -> None:
        metrics = sanitised(metrics)
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
        LOGGER.info("generation %d done: best %.5f, median %.5f of its population", self.generation,
                    ranked[-1], ranked[len(ranked) // 2])
