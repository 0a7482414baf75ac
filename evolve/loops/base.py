"""What the generational and the steady-state loops share: the run's records, GA, plots and progress,
the trial runner they hand their jobs to, and the report of the best trial at the end.

A loop subclasses ``Evolution`` and ``evolve.execution.jobs.JobSource`` (it is its own source of jobs) and
calls ``run_trials(self)`` once: every trial of a run goes through one runner, so Ray Tune and its workers
start once per run.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evolve.config.fidelity import rungs, trial_configs, trial_epochs, validation_epochs, warmup_warning
from evolve.config.run import EvolveConfig
from evolve.config.trial import MODEL_SIZES, data_names
from evolve.contract import FAILED_STATUSES, Metrics, standing
from evolve.execution.jobs import JobSource, TrialJob
from evolve.execution.runner import TrialRunner
from evolve.loops.checkpoint import checkpoint_state, claim_identity
from evolve.loops.plan import Plan
from evolve.output.fidelity import FidelityRecords
from evolve.output.plotter import Plotter
from evolve.output.progress import Budget, Progress
from evolve.output.records import RunRecords, TrialRecord
from evolve.output.rundir import save_checkpoint
from evolve.search.ga import GeneticAlgorithm

LOGGER = logging.getLogger(__name__)

Genome = list[float]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C ended the run; ``run_dir`` holds everything needed to ``--resume`` it."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def report_best(records: RunRecords, data: str | None, trainer: str = "detector", model: str = "n") -> None:
    """Log the best trial of the run and the command that trains with its hyps."""
    best = records.best()
    if best is None:
        LOGGER.warning("no trial finished well; %s has no best hyps", records.best_path)
        return
    LOGGER.info("best fitness %.5f (trial %s, generation %d); hyps in %s", best.metrics.fitness,
                best.trial_id, best.generation, records.best_path)
    if data and "," in data:  # a trainer trains on one data set: the first of the run's is the example
        data = data.split(",")[0]
    if trainer == "ultralytics":  # the evolved file is an Ultralytics cfg as it is
        from evolve.execution.ultralytics_inputs import DEFAULT_FAMILY

        model = f"{DEFAULT_FAMILY}{model}.yaml" if model in MODEL_SIZES else model
        LOGGER.info("train with them: yolo train cfg=%s model=%s data=%s", records.best_path, model,
                    data or "YOUR_DATA.yaml")
        return
    data_flag = f" --data {data}" if data else ""
    LOGGER.info("train with them: python -m detector train%s --hyp %s", data_flag, records.best_path)


def progress_totals(rows: list[TrialRecord]) -> dict[str, Any]:
    """``Progress`` keywords that carry a resumed run's earlier trials into its counts."""
    best = max((r.metrics for r in rows if r.metrics.status not in FAILED_STATUSES), key=standing,
               default=None)
    return {"done_before": len(rows), "failed_before": sum(r.metrics.status in FAILED_STATUSES for r in rows),
            "best_before": best.fitness if best else None,
            "best_status_before": best.status if best else "ok"}


def progress_options(cfg: EvolveConfig, trials: int, exact: bool) -> dict[str, Any]:
    """``Progress`` keywords of the run's display mode and its planned budget of ``trials`` trials (at most
    that, unless ``exact`` and no trial can be stopped at a rung); ``--quiet`` keeps the plain display of
    old, without budget or cost lines."""
    if cfg.quiet:
        return {"live": False, "planned": None}
    parts = max(1, len(data_names(cfg.train.data)))  # a trial reports the epochs of every data set in turn
    v = cfg.validation
    runs = (v.top + v.sentinels_wanted + 1) * v.seeds if v.top > 0 else 0  # the base, top K, sentinels
    budget = Budget(trials, cfg.train.epochs * parts, runs, validation_epochs(cfg) * parts,
                    exact and not rungs(cfg))
    return {"live": True, "planned": budget}


class Evolution:
    """One run of a loop in a locked run folder: records, GA, plots and the checkpoint it saves."""

    progress: Progress | None = None

    def __init__(self, plan: Plan, run_dir: Path) -> None:
        self.plan = plan
        self.cfg = plan.cfg
        self.space = plan.space
        self.run_dir = run_dir
        self.records = RunRecords(run_dir, plan.space.keyset, self.cfg.train.fitness_weights,
                                  data_names(self.cfg.train.data))
        self.ga = GeneticAlgorithm(self.cfg.ga, len(self.space), self.space.levels)
        self.plotter = Plotter(run_dir, self.records.csv_path)
        rung_list = rungs(self.cfg)
        self.fidelity = FidelityRecords(run_dir, self.cfg.fidelity, trial_epochs(self.cfg), rung_list)
        warning = warmup_warning(rung_list, self.space.base.get("warmup_epochs"))
        if warning:
            LOGGER.warning("%s", warning)
        if self.cfg.fidelity == "prefix" and not rung_list:
            LOGGER.info("--fidelity prefix: no rung fits before epoch %d after the base hyp's warmup, so every "
                        "trial trains to the end (give --grace-epochs for one)", trial_epochs(self.cfg))
        self.identity = claim_identity(run_dir, plan.checkpoint)

    def first_population(self) -> list[Genome]:
        """Generation 0 bred from the plan's seeds, said on the console first: at a population of 100000
        breeding and queueing its trials takes about a minute, which must not look like a hang."""
        seeds = [self.space.encode(h) for h in self.plan.seeds]
        LOGGER.info("breeding generation 0: %d individuals from %d seed(s)", self.cfg.ga.population,
                    len(seeds))
        started = time.monotonic()
        population = [list(g) for g in self.ga.initial_population(seeds)]
        LOGGER.debug("generation 0 bred in %.1f s", time.monotonic() - started)
        return population

    def save_checkpoint(self, **state: Any) -> None:
        state = checkpoint_state(self.cfg, self.plan.fingerprint, run=asdict(self.identity),
                                 records=self.records.mark(), **state)
        save_checkpoint(self.run_dir, state)

    def _on_start(self, job: TrialJob) -> None:
        assert self.progress is not None
        self.progress.started(job.trial_id, self.started_at(job.trial_id))

    def on_tick(self) -> None:
        if self.progress is not None:
            self.progress.tick()

    def on_epoch(self, job: TrialJob, epoch: int, metrics: Metrics) -> None:
        """A running trial's per-epoch report: its rung fitness goes to the fidelity records, its epoch to
        the progress display."""
        self.fidelity.epoch(job.trial_id, epoch, metrics)
        if self.progress is not None:
            self.progress.epoch(job.trial_id, epoch, metrics)

    def _on_end(self, job: TrialJob, metrics: Metrics) -> None:
        # Counted before the loop records it: a trial's epochs were spent whatever the loop makes of it.
        self.fidelity.finished(job.trial_id, metrics)
        if self.progress is not None:
            self.progress.note = self.fidelity.note()

    def run_trials(self, source: JobSource) -> None:
        """Run the source's jobs on one TrialRunner until it has no more."""
        # Durations of the trials on record feed the derived --trial-timeout from the first trial on.
        durations = [r.metrics.seconds for r in self.records.rows() if r.metrics.status == "ok"]
        ray_cfg, train_cfg = trial_configs(self.cfg)  # the trials' length and early stopping (--fidelity)
        scheduler = None
        if ray_cfg.early_stop == "asha":  # its rungs start from the trials on record (a resumed run's)
            from evolve.execution.asha import epoch_asha  # Ray Tune is imported only where it is needed

            scheduler = epoch_asha(train_cfg.epochs, ray_cfg.grace_epochs, ray_cfg.reduction_factor,
                                   self.fidelity.history())
        if self.progress is not None:
            self.progress.note = self.fidelity.note()
        try:
            with TrialRunner(ray_cfg, self.cfg.trainer, train_cfg, self.run_dir, scheduler=scheduler,
                             durations=durations) as runner:
                runner.run(source)
        finally:
            if self.progress is not None:
                self.progress.close()  # a live display hands the terminal back, also on Ctrl-C

    def finish(self) -> None:
        """Wait for the last plots and report the best trial."""
        self.plotter.close()
        LOGGER.info("%s", self.fidelity.line())
        report_best(self.records, self.cfg.train.data, self.cfg.trainer, self.cfg.train.model)
