"""The evolution driver: ``run(cfg)`` validates all input, then runs the whole evolution in one Ray Tune run.

Modes: ``generational`` (here, a barrier per generation) and ``async`` (``evolve.steady``, a child bred the
moment a trial ends). Every trial of a run goes through one ``TrialRunner.run`` call, so Ray Tune and its
workers start once per run, not once per generation.

Generation ``g``: the checkpoint is saved (population and GA state, before any trial of ``g`` runs), every
individual whose rounded genome has no result yet becomes one trial, each finished trial is appended to
``evolve.csv`` at once, then the population file is written, the plots are drawn (in the background) and
``g + 1`` is bred. A resumed run rebuilds its cache of evaluated genomes from ``evolve.csv``, so a trial
that has a row never runs again, and a driver killed at any moment continues exactly where it was.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import math
import os
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from detector.results import Metrics
from evolve.config import CHECKPOINT_VERSION, EvolveConfig, check_checkpoint, fingerprint, resumed_from
from evolve.errors import ConfigError
from evolve.ga import GeneticAlgorithm
from evolve.plots import plot_evolve, plot_fitness
from evolve.progress import FAILED_STATUSES, Progress
from evolve.records import RunRecords, TrialRecord, read_hyp_dir, read_population
from evolve.rundir import RunLock, load_checkpoint, make_run_dir, save_checkpoint
from evolve.runner import WAIT, TrialJob, TrialRunner
from evolve.space import SearchSpace
from evolve.trainers import resolve_trainer

LOGGER = logging.getLogger(__name__)

Genome = list[float]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C ended the run; ``run_dir`` holds everything needed to ``--resume`` it."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def selection_value(metrics: Metrics) -> float:
    """The number the GA selects on: ``3 + fitness`` finished (ok), ``1 + fitness`` stopped, 0 failed.

    Fitness lies in [0, 1], so the tiers [3, 4], [1, 2] and 0 never meet: a trial stopped early by ASHA
    never competes as a finished trial of the fitness it had reached, and still beats a trial that failed
    or diverged (a stopped trial at fitness 0 included).
    """
    fit = float(metrics.fitness)
    fit = min(1.0, max(0.0, fit)) if math.isfinite(fit) else 0.0
    if metrics.status == "ok":
        return 3.0 + fit
    if metrics.status == "stopped":
        return 1.0 + fit
    return 0.0


def sanitised(metrics: Metrics) -> Metrics:
    """Failure is data: whatever a trainer claims, a failed or diverged trial is worth exactly 0."""
    if metrics.status in FAILED_STATUSES or not math.isfinite(metrics.fitness):
        metrics = copy.copy(metrics)
        metrics.fitness = 0.0
    return metrics


@dataclass
class Plan:
    """A validated evolution, ready to start: nothing has been written anywhere yet."""

    cfg: EvolveConfig
    space: SearchSpace
    fingerprint: str
    run_dir: Path | None = None  # the folder of a run being resumed
    checkpoint: dict[str, Any] | None = None
    seeds: list[dict[str, float]] = field(default_factory=list)


def _absolute(cfg: EvolveConfig) -> EvolveConfig:
    # Ray Tune runs trials in their own working folders and a resumed run may start elsewhere.
    cfg = copy.deepcopy(cfg)
    for name in ("hyp", "meta", "population_dir", "resume"):
        if getattr(cfg, name):
            setattr(cfg, name, str(Path(getattr(cfg, name)).expanduser().absolute()))
    if cfg.train.data:
        cfg.train.data = str(Path(cfg.train.data).expanduser().absolute())
    return cfg


def prepare(cfg: EvolveConfig) -> Plan:
    """Validate every input (flags, meta, hyp, seeds, resume target, trainer, data) without writing anything.

    Raises ``ConfigError`` with one line naming the file, key or flag.
    """
    cfg = _absolute(cfg)
    cfg.validate()
    checkpoint = run_dir = None
    resume_hyps: list[dict[str, float]] = []
    if cfg.resume:
        target = Path(cfg.resume)
        if not target.exists():
            raise ConfigError(f"--resume {target}: no such file or run folder")
        if target.is_dir():
            run_dir = target
            checkpoint = load_checkpoint(run_dir)
            cfg = resumed_from(cfg, checkpoint, run_dir)
        else:
            resume_hyps = read_population(target)
    if cfg.ray.early_stop != "none":
        cfg.train.val_every = 1  # early stopping acts on per-epoch fitness: validate every epoch
    _check_trainer(cfg.trainer)
    space = SearchSpace.load(cfg.meta, cfg.hyp)
    digest = fingerprint(cfg, space)
    if checkpoint is not None and run_dir is not None:
        check_checkpoint(checkpoint, run_dir, space, digest, cfg.mode)
    if cfg.train.data and not Path(cfg.train.data).is_file():
        raise ConfigError(f"--data {cfg.train.data}: data YAML not found")
    seeds = [dict(space.base)]
    if cfg.population_dir and checkpoint is None:
        seeds += read_hyp_dir(cfg.population_dir)
    seeds += resume_hyps
    if run_dir is None:
        existing = Path(cfg.project) / cfg.name
        if cfg.exist_ok and (existing / "evolve.csv").exists():
            raise ConfigError(f"{existing}: already holds an evolution (evolve.csv); continue it with "
                              f"--resume {existing}, or choose another --name")
    return Plan(cfg, space, digest, run_dir, checkpoint, seeds)


def _check_trainer(spec: str) -> None:
    # The detector is only located, not imported: torch is slow to load and only trial workers need it.
    if spec == "detector":
        if importlib.util.find_spec("detector.train") is None:
            raise ConfigError("--trainer detector: module 'detector.train' is not installed")
        return
    resolve_trainer(spec)


def checkpoint_state(plan: Plan, generation: int, population: list[Genome], ga_state: Any) -> dict[str, Any]:
    """What the checkpoint holds at the start of ``generation``: enough to breed on exactly from there."""
    return {"version": CHECKPOINT_VERSION, "mode": plan.cfg.mode, "generation": generation,
            "population": population, "ga_state": ga_state, "config": plan.cfg.to_dict(),
            "fingerprint": plan.fingerprint, "seed": plan.cfg.seed}


def run(cfg: EvolveConfig) -> Path:
    """Run (or resume) an evolution; returns its run folder. Raises ``Interrupted`` on Ctrl-C."""
    plan = prepare(cfg)
    run_dir = plan.run_dir or make_run_dir(plan.cfg.project, plan.cfg.name, plan.cfg.exist_ok)
    with RunLock(run_dir):
        try:
            if plan.cfg.mode == "async":
                from evolve.steady import SteadyEvolution

                SteadyEvolution(plan, run_dir).run()
            else:
                _Evolution(plan, run_dir).run()
        except KeyboardInterrupt as exc:
            LOGGER.warning("interrupted; resume with: python orchestrate.py --resume %s", run_dir)
            raise Interrupted(run_dir) from exc
    return run_dir


class Plotter:
    """Draws ``evolve.png`` and ``fitness.png`` in a background thread from a snapshot of ``evolve.csv``.

    Thirty panels take seconds to draw. In the driver's thread that would hold up Ray Tune's event loop
    (no trial started, no result recorded meanwhile); the snapshot is taken in the driver's thread, so the
    drawing never sees a row being written. Requests made while a drawing runs merge into one more.
    """

    def __init__(self, run_dir: Path, csv_path: Path) -> None:
        self.run_dir = run_dir
        self.csv_path = csv_path
        self._lock = threading.Lock()
        self._pending: bytes | None = None
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        """Draw the plots of the records as they are now, soon."""
        if not self.csv_path.is_file():
            return
        data = self.csv_path.read_bytes()
        with self._lock:
            self._pending = data
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="evolve-plots", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Wait until every requested drawing is done."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def _work(self) -> None:
        while True:
            with self._lock:
                data, self._pending = self._pending, None
                if data is None:
                    self._thread = None
                    return
            self._draw(data)

    def _draw(self, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix="evolve-plot-", suffix=".csv")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            for plot, name in ((plot_evolve, "evolve.png"), (plot_fitness, "fitness.png")):
                try:
                    plot(tmp, self.run_dir / name)
                except Exception as exc:  # a plot is a convenience; it must never end a run of GPU-days
                    LOGGER.warning("could not draw %s: %s: %s", name, type(exc).__name__, exc)
        finally:
            os.unlink(tmp)


def report_best(records: RunRecords, cfg: EvolveConfig) -> None:
    """Log the best trial of the run and the command that trains with its hyps."""
    best = records.best()
    if best is None:
        LOGGER.warning("no trial finished well; %s has no best hyps", records.best_path)
        return
    data = f" --data {cfg.train.data}" if cfg.train.data else ""
    LOGGER.info("best fitness %.5f (trial %s, generation %d); hyps in %s", best.metrics.fitness,
                best.trial_id, best.generation, records.best_path)
    LOGGER.info("train with them: python -m detector train%s --hyp %s", data, records.best_path)


class GenerationSource:
    """The runner's job source for a whole generational run, one generation after another.

    ``advance()`` is called at the start and at every generation barrier (all results in, nothing
    running): it closes the generation that ended and returns the jobs of the next one, or None when the
    run is over. Between barriers the source hands out the generation's jobs, then answers ``WAIT``.
    """

    def __init__(self, advance: Callable[[], Sequence[TrialJob] | None],
                 on_result: Callable[[TrialJob, Metrics, float], None],
                 on_start: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._advance = advance
        self._on_result = on_result
        self._on_start = on_start
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
            self._on_start()
        return job

    def on_result(self, job: TrialJob, metrics: Metrics) -> None:
        if job.trial_id in self.results or job.trial_id not in self._started:
            LOGGER.warning("trial %s reported twice or was never started; result ignored", job.trial_id)
            return
        seconds = self._clock() - self._started.pop(job.trial_id)
        self.results[job.trial_id] = metrics
        self._on_result(job, metrics, seconds)


class _Evolution:
    """One run of the generational GA in a locked run folder."""

    def __init__(self, plan: Plan, run_dir: Path) -> None:
        self.cfg = plan.cfg
        self.space = plan.space
        self.plan = plan
        self.run_dir = run_dir
        self.records = RunRecords(run_dir)
        self.ga = GeneticAlgorithm(self.cfg.ga, len(self.space))
        self.cache: dict[tuple, Metrics] = {}
        self.progress: Progress | None = None
        self.plotter = Plotter(run_dir, self.records.csv_path)
        self.generation = 0
        self.population: list[Genome] = []
        self._first: tuple[int, list[Genome]] | None = None

    def run(self) -> None:
        self._first = self._start()
        cfg = self.cfg
        LOGGER.info("evolving %d hyperparameters: %d generations of %d in %s (trainer %s)",
                    len(self.space), cfg.ga.generations, cfg.ga.population, self.run_dir, cfg.trainer)
        progress = self.progress
        assert progress is not None
        source = GenerationSource(self._advance, self._record, on_start=progress.started)
        if source.has_jobs():
            with TrialRunner(cfg.ray, cfg.trainer, cfg.train, self.run_dir) as runner:
                runner.run(source)
        self.plotter.close()
        report_best(self.records, cfg)

    def _start(self) -> tuple[int, list[Genome]]:
        """Generation index and population to run first: from the checkpoint, or a fresh generation 0."""
        rows = self.records.rows()
        best = max((r.metrics.fitness for r in rows if r.metrics.status not in FAILED_STATUSES), default=None)
        self.progress = Progress(self.cfg.ga.generations, done_before=len(rows),
                                 failed_before=sum(r.metrics.status in FAILED_STATUSES for r in rows),
                                 best_before=best)
        for row in rows:
            self.cache.setdefault(self.space.genome_key(self.space.encode(row.hyp)), row.metrics)
        state = self.plan.checkpoint
        if state is None:
            seeds = [self.space.encode(h) for h in self.plan.seeds]
            return 0, [list(g) for g in self.ga.initial_population(seeds)]
        self.ga.set_state(state["ga_state"])
        generation = state["generation"]
        population = [list(map(float, g)) for g in state["population"]]
        # Rows of the interrupted generation map to its genomes exactly through (generation, individual).
        for row in rows:
            if row.generation == generation and 0 <= row.individual < len(population):
                self.cache[self.space.genome_key(population[row.individual])] = row.metrics
        LOGGER.info("resuming %s at generation %d (%d of %d) with %d finished trials on record",
                    self.run_dir, generation, generation + 1, self.cfg.ga.generations, len(rows))
        return generation, population

    def _advance(self) -> list[TrialJob] | None:
        """At a barrier: close the generation that ended, breed and checkpoint the next; its jobs."""
        if self._first is not None:
            (self.generation, self.population), self._first = self._first, None
        else:
            self._finish_generation()
            if self.generation + 1 >= self.cfg.ga.generations:
                return None
            values = [selection_value(self._metrics(g)) for g in self.population]
            self.population = self.ga.next_generation(list(zip(self.population, values)), self.generation + 1)
            self.generation += 1
        self._save_checkpoint()
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
        state = checkpoint_state(self.plan, self.generation, self.population, self.ga.get_state())
        save_checkpoint(self.run_dir, state)

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


__all__ = ["GenerationSource", "Interrupted", "Plan", "Plotter", "checkpoint_state", "fingerprint", "prepare",
           "report_best", "run", "sanitised", "selection_value"]
