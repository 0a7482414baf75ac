"""Execution of evolution trials on Ray Tune: one Tune trial per hyp, jobs pulled from a ``JobSource``.

The driver hands a ``TrialRunner`` a ``JobSource``; the runner runs a single ``tune.Tuner`` whose search
algorithm pulls ``TrialJob``s from the source as resources free up, and tells the source about each
trial the moment it ends (``on_result``, in the driver process), so records are written per trial and
an asynchronous GA can breed the next child at once. The trial itself is
``evolve.execution.trainable.run_trial``.

Statuses: the trainable always ends with a report flagged ``final``, so a trial without one was ended by
a scheduler (``stopped``, with the metrics it reached); a trial whose worker was lost is retried by
Tune's ``FailureConfig`` and recorded ``failed`` only once the retries are spent.

Scale-out: ``RayConfig`` sets the resources of a trial (fractional GPUs pack trials on one GPU) and its DDP
ranks (``--workers-per-trial`` on CPU, one per GPU from 2 GPUs up). Early stopping is the scheduler the
caller passes (the loops pass ``evolve.execution.asha.epoch_asha`` when ``evolve.config.fidelity`` asks for
ASHA); the runner builds none. The Tune-side classes live in ``evolve.execution.tune_glue``, imported only
when trials run (it imports Ray Tune at its top).
"""
from __future__ import annotations

import errno
import logging
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from evolve.config.ray import RayConfig
from evolve.config.trial import TrialConfig, TrialSpec, data_sets
from evolve.execution.cluster import check_resources, shutdown, start_or_join
from evolve.execution.jobs import as_job_source
from evolve.execution.trainable import run_trial
from evolve.execution.trainers import check
from evolve.execution.watchdog import TrialClock
from evolve.output.rundir import disk_full

LOGGER = logging.getLogger(__name__)

# Set only while Tune runs: Ray's own console output is replaced by the driver's progress, Tune's
# automatic loggers are replaced by its JSON and CSV loggers alone (TensorBoard curves would duplicate
# evolve.csv), and workers keep the driver's working directory so that relative paths in the TrainConfig
# mean the same thing in a trial as on the command line.
TUNE_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
}
# Tune logs a full traceback for every lost worker and a "did not complete" error for every failed
# trial; the runner logs one line for each instead (the tracebacks stay in Tune's trial folders).
QUIET_LOGGERS = ("ray.tune", "ray.train", "ray.air")


@contextmanager
def _quiet_tune() -> Iterator[None]:
    """TUNE_ENV set and Tune's loggers held at CRITICAL while Tune runs; both restored afterwards."""
    old_env = {k: os.environ.get(k) for k in TUNE_ENV}
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    old_levels = [lg.level for lg in loggers]
    os.environ.update(TUNE_ENV)
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for lg, lvl in zip(loggers, old_levels):
            lg.setLevel(lvl)


def _absolute_paths(data: str | None) -> str | None:
    """``--data`` with relative paths made absolute against the driver's directory."""
    if not data:
        return data
    return ",".join(str(Path(v).resolve()) if not os.path.isabs(v) and Path(v).exists() else v
                    for v in data_sets(data))


class TrialRunner:
    """Runs TrialJobs as Ray Tune trials of ``trainer`` and reports each result to the JobSource."""

    def __init__(self, ray_cfg: RayConfig, trainer: str, train_cfg: TrialConfig | Mapping[str, Any], run_dir: Path,
                 scheduler: Any = None, durations: Sequence[float] = ()):
        """``train_cfg``: a TrialConfig (or a config it accepts); ``scheduler``: an optional Ray Tune
        TrialScheduler (early stopping) acting on ``fitness``, the only early stopping the trials get (None:
        every trial runs to its end); ``durations``: seconds of the trials this
        run finished before (a resumed run's), for the derived ``--trial-timeout``."""
        self.durations = list(durations)
        self.ray_cfg = ray_cfg
        self.scheduler = scheduler
        self.trainer = trainer
        self.plugin = check(trainer)
        self.train_cfg = TrialConfig.from_any(train_cfg)
        self.run_dir = Path(run_dir).resolve()
        self._started_ray = False
        self._runs = 0

    # Ray lifetime -------------------------------------------------------------------------------------
    def __enter__(self) -> "TrialRunner":
        self._ensure_ray()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Shut Ray down if this runner started it (a Ray someone else started is left running)."""
        if self._started_ray:
            shutdown()
            self._started_ray = False

    def _ensure_ray(self) -> None:
        if start_or_join(self.ray_cfg):
            self._started_ray = True

    def concurrency(self) -> int:
        """How many trials run at once: ``max_concurrent`` or what the cluster's CPUs/GPUs allow."""
        import ray

        if self.ray_cfg.max_concurrent is not None:
            return self.ray_cfg.max_concurrent
        check_resources(self.ray_cfg)
        res = ray.cluster_resources()
        fits = [int(float(res.get(name, 0.0)) / need + 1e-9)
                for name, need in (("CPU", self.ray_cfg.cpus_per_trial), ("GPU", self.ray_cfg.gpus_per_trial))
                if need > 0]
        return max(1, min(fits))

    # Running ------------------------------------------------------------------------------------------
    def trial_layout(self) -> tuple[int, int]:
        """(DDP ranks per trial, DataLoader workers per rank) that fit the trial's resources.

        A trainer that does not use torch.distributed (the surrogate) always runs in one process: N ranks
        would compute the same numbers N times; its GPUs are still reserved, which a dry run checks.
        Each rank needs one CPU of its own, so a rank gets ``floor(cpus_per_trial / ranks) - 1`` loader
        workers at most (0: load in the training process) and never more than ``--workers``.
        """
        nproc = self.ray_cfg.nproc
        if nproc > 1 and not self.plugin.distributed:
            LOGGER.info("the %s trainer runs each trial in one process (%d ranks asked for)",
                        self.plugin.name, nproc)
            nproc = 1
        fit = max(0, math.floor(self.ray_cfg.cpus_per_trial / nproc + 1e-9) - 1)
        return nproc, min(self.train_cfg.workers, fit)

    def trial_spec(self) -> TrialSpec:
        """What every trial of a run shares: trainer, TrialConfig (as trials see it) and layout."""
        nproc, workers = self.trial_layout()
        if workers < self.train_cfg.workers:
            LOGGER.info("data-loading workers per trial process: %d (--workers %d does not fit "
                        "--cpus-per-trial %g with %d process(es) per trial)", workers, self.train_cfg.workers,
                        self.ray_cfg.cpus_per_trial, nproc)
        val_every = self.train_cfg.val_every
        if self.scheduler is not None:
            # The one place of this rule: early stopping decides on per-epoch fitness, which needs a
            # validation every epoch; otherwise a trainer may ask to validate less often.
            val_every = 1
        elif self.plugin.val_every is not None:
            val_every = self.plugin.val_every
        cfg = self.train_cfg.replace(data=_absolute_paths(self.train_cfg.data), workers=workers,
                                     val_every=val_every)
        return TrialSpec(trainer=self.trainer, cfg=cfg, run_dir=str(self.run_dir), nproc=nproc,
                         cpus_per_trial=float(self.ray_cfg.cpus_per_trial))

    def storage_path(self) -> str:
        """Where Ray Tune keeps its experiment state and per-trial records (a folder or a URI)."""
        storage = self.ray_cfg.storage or str(self.run_dir / "ray")
        if "://" in storage:  # URIs (s3://, gs://, ...) go to Tune as they are
            return storage
        return str(Path(storage).expanduser().resolve())

    def run(self, source: Any) -> None:
        """Run the source's jobs as Tune trials until it is exhausted and every trial has ended.

        ``source``: a JobSource, or a plain object with ``next_job``/``on_result`` (``as_job_source``).

        ``source.on_result`` is called in this process as each trial ends. An exception raised by the
        source stops the running trials and is re-raised here; Ctrl-C stops them and raises
        KeyboardInterrupt.
        """
        from ray import tune

        from evolve.execution.tune_glue import (
            MAX_FAILURES,
            JobSearcher,
            ResultRelay,
            RunState,
            StopOnError,
            record_callbacks,
        )

        self._ensure_ray()
        clock = TrialClock(self.ray_cfg.trial_timeout, self.durations)
        state = RunState(source=as_job_source(source), clock=clock)
        limit = self.concurrency()
        self._runs += 1
        storage = self.storage_path()
        if "://" not in storage:
            Path(storage).mkdir(parents=True, exist_ok=True)
        resources = {"cpu": self.ray_cfg.cpus_per_trial, "gpu": self.ray_cfg.gpus_per_trial}
        trainable = tune.with_resources(tune.with_parameters(run_trial, spec=self.trial_spec()), resources)

        def trial_name(trial: Any) -> str:
            return str(trial.config.get("trial_id", trial.trial_id))

        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=JobSearcher(state), scheduler=self.scheduler, num_samples=-1,
                max_concurrent_trials=limit,
                # A finished trial's worker (with torch and the trainer imported) takes the next trial.
                reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(
                name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{self._runs}", storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=MAX_FAILURES), verbose=0,
                stop=StopOnError(state), callbacks=[ResultRelay(state), *record_callbacks()],
                log_to_file=False),
        )
        LOGGER.debug("running trials with %s per trial, at most %d at once", resources, limit)
        sigint = signal.getsignal(signal.SIGINT)
        try:
            with _quiet_tune():
                tuner.fit()
        except Exception as exc:
            # Tune reads back what it wrote while it ends; when the source had already stopped the run
            # (a full disk refused a record), that error is the cause, whatever Tune tripped over after.
            if state.error is not None:
                raise state.error from None
            if "://" not in storage and disk_full(str(exc), storage):
                raise OSError(errno.ENOSPC, f"No space left on device (Ray Tune: {type(exc).__name__})",
                              storage) from exc
            raise
        finally:
            # Tune installs a SIGINT handler for its run and leaves it behind; a later Ctrl-C or SIGTERM
            # (evolve.signals) would only set an event nobody waits for.
            if threading.current_thread() is threading.main_thread() and sigint is not None:
                signal.signal(signal.SIGINT, sigint)
        if state.error is not None:
            raise state.error
        if not state.exhausted or state.jobs:
            # Tune catches Ctrl-C itself, stops the running trials and returns; hand the interrupt on.
            raise KeyboardInterrupt(f"interrupted with {len(state.jobs)} trial(s) running; they were stopped")
        LOGGER.debug("%d trials run", state.finished)
