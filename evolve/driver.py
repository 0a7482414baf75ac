"""The evolution driver: ``run(cfg)`` validates all input, then breeds and trains generation after generation.

Order of events for one generation ``g``: the checkpoint is saved (population and GA state, before any
trial of ``g`` runs), every individual whose rounded genome has no result yet becomes one Ray Tune trial,
each finished trial is appended to ``evolve.csv`` at once, then the population file and the plots are
written and generation ``g + 1`` is bred. ``evolve.csv`` is the source of truth for results: a resumed
run rebuilds its cache of evaluated genomes from it, so a trial that has a row never runs again, and a
driver killed at any moment continues exactly as if it had not been.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from detector.results import Metrics
from evolve.config import EvolveConfig, resumed_config
from evolve.errors import ConfigError
from evolve.ga import GeneticAlgorithm
from evolve.plots import plot_evolve, plot_fitness
from evolve.progress import FAILED_STATUSES, Progress
from evolve.records import RunRecords, TrialRecord, read_hyp_dir, read_population
from evolve.rundir import (
    RunLock,
    checkpoint_path,
    load_checkpoint,
    make_run_dir,
    save_checkpoint,
)
from evolve.runner import TrialJob, TrialRunner
from evolve.space import SearchSpace
from evolve.trainers import resolve_trainer

LOGGER = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
Genome = list[float]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C ended the run; ``run_dir`` holds everything needed to ``--resume`` it."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


@dataclass
class Plan:
    """A validated evolution, ready to start: nothing has been written anywhere yet."""

    cfg: EvolveConfig
    space: SearchSpace
    fingerprint: str
    run_dir: Path | None = None  # the folder of a run being resumed
    checkpoint: dict[str, Any] | None = None
    seeds: list[dict[str, float]] = field(default_factory=list)


def fingerprint(cfg: EvolveConfig, space: SearchSpace) -> str:
    """A digest of everything that decides results, except the generation count (a run may be extended)."""
    settings = cfg.result_settings()
    settings["ga"].pop("generations")
    blob = {"settings": settings, "base": space.base, "genes": [asdict(g) for g in space.genes]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
            cfg = _resumed(cfg, checkpoint, run_dir)
        else:
            resume_hyps = read_population(target)
    _check_trainer(cfg.trainer)
    space = SearchSpace.load(cfg.meta, cfg.hyp)
    digest = fingerprint(cfg, space)
    if checkpoint is not None and run_dir is not None:
        _check_checkpoint(checkpoint, run_dir, space, digest)
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


def _resumed(cfg: EvolveConfig, checkpoint: dict[str, Any], run_dir: Path) -> EvolveConfig:
    """The saved configuration with this command's --generations and execution settings."""
    source = str(checkpoint_path(run_dir))
    if checkpoint.get("version") != CHECKPOINT_VERSION or "config" not in checkpoint:
        raise ConfigError(f"{source}: not a checkpoint of this version "
                          f"(version {checkpoint.get('version')!r})")
    saved = EvolveConfig.from_dict(checkpoint["config"], source=source)
    merged, notes = resumed_config(saved, cfg)
    for note in notes:
        LOGGER.warning("%s", note)
    merged.validate()
    generation = checkpoint.get("generation")
    if isinstance(generation, int) and merged.ga.generations <= generation:
        raise ConfigError(f"--generations {merged.ga.generations}: the run in {run_dir} is already at "
                          f"generation {generation} (counted from 0); ask for at least {generation + 1} "
                          "generations")
    return merged


def _check_checkpoint(state: dict[str, Any], run_dir: Path, space: SearchSpace, digest: str) -> None:
    source = checkpoint_path(run_dir)
    generation, population = state.get("generation"), state.get("population")
    if not isinstance(generation, int) or generation < 0 or "ga_state" not in state:
        raise ConfigError(f"{source}: checkpoint lacks a valid generation index or GA state")
    if not isinstance(population, list) or not population or not all(
            isinstance(g, (list, tuple)) and len(g) == len(space) for g in population):
        raise ConfigError(f"{source}: checkpoint population does not fit the search space "
                          f"({len(space)} genes)")
    if state.get("fingerprint") != digest:
        raise ConfigError(f"{source}: the search space or settings changed since the run started "
                          f"(the meta or hyp file was edited?); restore them or start a new run")


def checkpoint_state(plan: Plan, generation: int, population: list[Genome], ga_state: Any) -> dict[str, Any]:
    """What the checkpoint holds at the start of ``generation``: enough to breed on exactly from there."""
    return {"version": CHECKPOINT_VERSION, "generation": generation, "population": population,
            "ga_state": ga_state, "config": plan.cfg.to_dict(), "fingerprint": plan.fingerprint,
            "seed": plan.cfg.seed}


def run(cfg: EvolveConfig) -> Path:
    """Run (or resume) an evolution; returns its run folder. Raises ``Interrupted`` on Ctrl-C."""
    plan = prepare(cfg)
    run_dir = plan.run_dir or make_run_dir(plan.cfg.project, plan.cfg.name, plan.cfg.exist_ok)
    with RunLock(run_dir):
        try:
            _Evolution(plan, run_dir).run()
        except KeyboardInterrupt as exc:
            LOGGER.warning("interrupted; resume with: python orchestrate.py --resume %s", run_dir)
            raise Interrupted(run_dir) from exc
    return run_dir


class GenerationSource:
    """The runner's job source for one generation: its trials in order, then ``None`` (no more)."""

    def __init__(self, jobs: Sequence[TrialJob], on_result: Callable[[TrialJob, Metrics, float], None],
                 on_start: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._queue = deque(jobs)
        self._on_result = on_result
        self._on_start = on_start
        self._clock = clock
        self._started: dict[str, float] = {}
        self.results: dict[str, Metrics] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles its search algorithm, and with it this source, into its experiment folder.
        # The callbacks reach into the driver (open files, the terminal) and mean nothing in another
        # process; the evolution never restores from Tune's copy, so only the plain data goes.
        return {"_queue": deque(self._queue), "_on_result": None, "_on_start": None, "_clock": time.monotonic,
                "_started": dict(self._started), "results": dict(self.results)}

    def next_job(self) -> TrialJob | None:
        if not self._queue:
            return None
        job = self._queue.popleft()
        self._started[job.trial_id] = self._clock()
        if self._on_start is not None:
            self._on_start()
        return job

    def on_result(self, job: TrialJob, metrics: Metrics) -> None:
        if job.trial_id in self.results:  # a second result for one trial must not make a second row
            LOGGER.warning("trial %s reported twice; keeping the first result", job.trial_id)
            return
        now = self._clock()
        seconds = now - self._started.pop(job.trial_id, now)
        self.results[job.trial_id] = metrics
        self._on_result(job, metrics, seconds)


def _sanitised(metrics: Metrics) -> Metrics:
    # Failure is data: whatever a trainer claims, a failed or diverged trial is worth exactly 0.
    if metrics.status in FAILED_STATUSES or not math.isfinite(metrics.fitness):
        metrics = copy.copy(metrics)
        metrics.fitness = 0.0
    return metrics


class _Evolution:
    """One run of the generational loop in a locked run folder."""

    def __init__(self, plan: Plan, run_dir: Path) -> None:
        self.cfg = plan.cfg
        self.space = plan.space
        self.plan = plan
        self.run_dir = run_dir
        self.records = RunRecords(run_dir)
        self.ga = GeneticAlgorithm(self.cfg.ga, len(self.space))
        self.cache: dict[tuple, Metrics] = {}
        self.progress: Progress | None = None

    def run(self) -> None:
        generation, population = self._start()
        cfg = self.cfg
        LOGGER.info("evolving %d hyperparameters: %d generations of %d in %s (trainer %s)",
                    len(self.space), cfg.ga.generations, cfg.ga.population, self.run_dir, cfg.trainer)
        with TrialRunner(cfg.ray, cfg.trainer, cfg.train, self.run_dir) as runner:
            while True:
                self._save_checkpoint(generation, population)
                self._run_generation(runner, generation, population)
                fitnesses = [self.cache[self.space.genome_key(g)].fitness for g in population]
                self._finish_generation(generation, population, fitnesses)
                if generation + 1 >= cfg.ga.generations:
                    break
                population = self.ga.next_generation(list(zip(population, fitnesses)), generation + 1)
                generation += 1
        self._report_best()

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

    def _save_checkpoint(self, generation: int, population: list[Genome]) -> None:
        state = checkpoint_state(self.plan, generation, population, self.ga.get_state())
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

    def _run_generation(self, runner: TrialRunner, generation: int, population: list[Genome]) -> None:
        jobs = self._jobs(generation, population)
        progress = self.progress
        assert progress is not None
        LOGGER.info("generation %d (%d of %d): %d trials to run, %d individuals already evaluated",
                    generation, generation + 1, self.cfg.ga.generations, len(jobs),
                    len(population) - len(jobs))
        progress.start_generation(generation, len(jobs))

        def record(job: TrialJob, metrics: Metrics, seconds: float) -> None:
            metrics = _sanitised(metrics)
            self.records.append(TrialRecord(job.generation, job.individual, job.trial_id, job.hyp, metrics))
            self.cache[self.space.genome_key(population[job.individual])] = metrics
            progress.finished(job.trial_id, metrics, seconds)

        if jobs:
            source = GenerationSource(jobs, record, on_start=progress.started)
            runner.run(source)
            for job in jobs:
                if job.trial_id not in source.results:
                    # Never happens with a conforming runner; the individual counts as failed, unrecorded.
                    LOGGER.warning("trial %s ended without a result; counted as failed", job.trial_id)
                    self.cache[self.space.genome_key(population[job.individual])] = Metrics(status="failed")
        progress.end_generation()

    def _finish_generation(self, generation: int, population: list[Genome], fitnesses: list[float]) -> None:
        self.records.write_population(generation, [self.space.decode(g) for g in population])
        csv_path = self.records.csv_path
        for plot, name in ((plot_evolve, "evolve.png"), (plot_fitness, "fitness.png")):
            try:
                plot(csv_path, self.run_dir / name)
            except Exception as exc:  # a plot is a convenience; it must never end a run of GPU-days
                LOGGER.warning("could not draw %s: %s: %s", name, type(exc).__name__, exc)
        ranked = sorted(fitnesses)
        LOGGER.info("generation %d done: best %.5f, median %.5f of its population", generation, ranked[-1],
                    ranked[len(ranked) // 2])

    def _report_best(self) -> None:
        best = self.records.best()
        if best is None:
            LOGGER.warning("no trial finished well; %s has no best hyps", self.records.best_path)
            return
        data = f" --data {self.cfg.train.data}" if self.cfg.train.data else ""
        LOGGER.info("best fitness %.5f (trial %s, generation %d); hyps in %s", best.metrics.fitness,
                    best.trial_id, best.generation, self.records.best_path)
        LOGGER.info("train with them: python -m detector train%s --hyp %s", data, self.records.best_path)


__all__ = ["GenerationSource", "Interrupted", "Plan", "checkpoint_state", "fingerprint", "prepare", "run"]
