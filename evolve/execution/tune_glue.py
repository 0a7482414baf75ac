"""The Ray Tune pieces a ``TrialRunner`` plugs into one ``tune.Tuner``: searcher, callbacks, stopper, ASHA.

- ``JobSearcher`` suggests the job source's next ``TrialJob`` as a trial config, or nothing while the
  source says ``WAIT``;
- ``ResultRelay`` delivers each ended trial (and each per-epoch report) to the source, in the driver, and
  on every step of Tune's loop ends the trials past their deadline (``evolve.execution.watchdog``) and
  lets the source refresh its progress (``on_tick``);
- ``StopOnError`` ends the experiment once the source has raised;
- ``record_callbacks`` keeps Ray Tune's own per-trial records (``result.json``, ``progress.csv``).

This module imports Ray Tune at its top, so only ``TrialRunner.run`` imports it, when trials are about to
run: importing ``evolve`` must stay cheap and side-effect free (as Ray Tune imports each searcher's
optional dependency only in the searcher's own module). The early-stopping scheduler is in
``evolve.execution.asha``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ray import tune
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from evolve.contract import Metrics, one_line
from evolve.execution.jobs import WAIT, JobSource, TrialJob
from evolve.execution.trainable import EPOCH_KEY, ERROR_KEY, FINAL_KEY, metrics_from_result
from evolve.execution.watchdog import TrialClock

LOGGER = logging.getLogger(__name__)

MAX_FAILURES = 2  # retries of a trial lost with its worker (actor died, node lost)


@dataclass
class RunState:
    """What the searcher, the callback and the stopper share during one ``TrialRunner.run``."""

    source: JobSource
    jobs: dict[str, TrialJob] = field(default_factory=dict)  # Tune trial id -> job, while running
    exhausted: bool = False
    error: Optional[BaseException] = None
    finished: int = 0
    clock: TrialClock = field(default_factory=TrialClock)  # deadlines of running trials
    timed_out: dict[str, float] = field(default_factory=dict)  # Tune trial id -> seconds it had run


class JobSearcher(Searcher):
    """Suggests the source's next job as a trial config (None while the source says WAIT)."""

    def __init__(self, state: RunState):
        super().__init__()
        self.state = state

    def suggest(self, trial_id: str):
        state = self.state
        if state.error is not None or state.exhausted:
            return Searcher.FINISHED
        try:
            job = state.source.next_job()
            if job is WAIT:
                if not state.jobs:
                    raise RuntimeError("JobSource.next_job returned WAIT while no trial is running; "
                                       "nothing could ever end the wait")
                return None
            if job is None:
                state.exhausted = True
                return Searcher.FINISHED
            if not isinstance(job, TrialJob):
                raise TypeError(f"JobSource.next_job returned {type(job).__name__}, expected TrialJob")
        except Exception as exc:  # surfaces from run() once Tune has stopped the running trials
            state.error = exc
            return Searcher.FINISHED
        state.jobs[trial_id] = job
        config = {"trial_id": job.trial_id, "generation": int(job.generation),
                  "individual": int(job.individual), "hyp": dict(job.hyp)}
        if job.seed is not None:
            config["seed"] = int(job.seed)
        return config

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False):
        pass  # the callback records results: it also sees the error of a lost trial

    def save(self, checkpoint_path: str) -> None:
        pass  # the evolution keeps its own checkpoint; Tune's experiment restore is not used

    def restore(self, checkpoint_path: str) -> None:
        pass


class ResultRelay(tune.Callback):
    """Delivers each ended trial (and each per-epoch report) to the source, in the driver."""

    def __init__(self, state: RunState):
        self.state = state

    def _deliver(self, trial: Any, metrics: Metrics) -> None:
        # The Tune trial id maps to its job until delivered; popping it means a second complete/error call
        # for the same trial finds nothing (the source's own once-per-trial guard is on_result's).
        job = self.state.jobs.pop(trial.trial_id, None)
        if job is None or self.state.error is not None:
            return
        source = self.state.source
        began = source.running_since(job.trial_id)
        ran = None if began is None else source.now() - began  # what the deadline measures
        self.state.clock.finish(trial.trial_id, ran, ok=metrics.status == "ok")
        self.state.finished += 1
        try:
            source.on_result(job, metrics)
        except Exception as exc:
            self.state.error = exc

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any):
        job = self.state.jobs.get(trial.trial_id)
        if job is not None:
            self.state.source.began(job.trial_id)

    def on_step_begin(self, iteration: int, trials: list, **info: Any):
        state = self.state
        # The source's start times (when Ray began each trial) against the source's clock.
        since = {tid: t for tid, job in state.jobs.items() if (t := state.source.running_since(job.trial_id))
                 is not None}
        late = dict(state.clock.overdue(since, state.source.now()))
        for trial in trials:
            if trial.trial_id in late and trial.status == "RUNNING":
                self._end_overdue(trial, late[trial.trial_id])
        if state.error is None:
            try:
                state.source.on_tick()
            except Exception as exc:
                state.error = exc

    def _end_overdue(self, trial: Any, seconds: float) -> None:
        # Killing the worker ends what the trial started: DDP ranks die with their parent (PDEATHSIG)
        # and data-loader workers leave once they see theirs gone. Tune then reports the trial as
        # errored; with no failures left to spend it is not retried but delivered once, as failed.
        import ray

        self.state.timed_out[trial.trial_id] = seconds
        trial.max_failures = 0
        LOGGER.warning("trial %s timed out after %.0f s (deadline %.0f s); ending it and its processes",
                       trial.config.get("trial_id"), seconds, self.state.clock.timeout() or seconds)
        actor = getattr(trial.temporary_state, "ray_actor", None)
        if actor is not None:
            ray.kill(actor, no_restart=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any):
        job = self.state.jobs.get(trial.trial_id)
        if job is None or result.get(FINAL_KEY) or self.state.error is not None:
            return
        try:
            self.state.source.on_epoch(job, int(result.get(EPOCH_KEY, 0)), metrics_from_result(result))
        except Exception as exc:
            self.state.error = exc

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
        result = trial.last_result or {}
        if result.get(FINAL_KEY):
            metrics = metrics_from_result(result)
            if result.get(ERROR_KEY):
                LOGGER.warning("trial %s failed: %s", trial.config.get("trial_id"), result[ERROR_KEY])
        else:  # ended by a scheduler before its final report: keep what it reached
            metrics = metrics_from_result(result, status="stopped")
        self._deliver(trial, metrics)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any):
        LOGGER.warning("trial %s lost its worker on attempt %d of %d; retrying: %s",
                       trial.config.get("trial_id"), trial.run_metadata.num_failures, MAX_FAILURES + 1,
                       error_line(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any):
        epochs = int((trial.last_result or {}).get(EPOCH_KEY, 0) or 0)
        seconds = self.state.timed_out.pop(trial.trial_id, None)
        if seconds is not None:
            reason = f"timeout: ended after {seconds:.0f} s"
            self._deliver(trial, Metrics(status="failed", epochs=epochs, seconds=seconds, reason=reason))
            return
        LOGGER.warning("trial %s lost %d times (worker died or node lost); recorded as failed: %s",
                       trial.config.get("trial_id"), MAX_FAILURES + 1, error_line(trial))
        reason = one_line(f"worker lost {MAX_FAILURES + 1} times: {error_line(trial)}")
        self._deliver(trial, Metrics(status="failed", epochs=epochs, reason=reason))


class StopOnError(Stopper):
    """Ends the whole experiment once the source has raised (the error is re-raised by run)."""

    def __init__(self, state: RunState):
        self.state = state

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.state.error is not None


def record_callbacks() -> list[Any]:
    """Ray Tune's JSON and CSV loggers: every report of every trial, with placement and timing, under the
    storage path (``<experiment>/<trial_id>/result.json`` and ``progress.csv``). TensorBoard's logger is
    left out: evolve.csv and the trial folders already hold the curves."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def error_line(trial: Any) -> str:
    """The last line of a lost trial's error file (Tune keeps the full traceback there)."""
    try:
        path = trial.error_file
        if path and Path(path).is_file():
            lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else "no message"
    except Exception:  # the error file is a courtesy; never let it break recording
        pass
    return "no message"
