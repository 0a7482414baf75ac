"""What the loops and the runner exchange: a ``TrialJob`` (one hyp to train), the ``WAIT`` answer and the
``JobSource`` base every source of jobs derives from (the generational loop, the steady-state loop and the
winners' validation). No Ray here, so the loops can be read and tested without it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from evolve.contract import Metrics, sanitised

LOGGER = logging.getLogger(__name__)


@dataclass
class TrialJob:
    """One hyp to train: identified in the records by generation and individual.

    ``seed`` overrides the run's training seed for this trial (validation retrains with new seeds).
    """

    trial_id: str
    generation: int
    individual: int
    hyp: dict[str, float]
    seed: Optional[int] = None


class _Wait:
    def __repr__(self) -> str:
        return "WAIT"


WAIT: Any = _Wait()  # a JobSource has nothing to start until another running trial ends


class JobSource:
    """What a TrialRunner pulls jobs from and reports results to (the GA's side of execution).

    A source implements ``_next()`` (a ``TrialJob``, ``WAIT``, or None when there will be no more) and
    ``_record(job, metrics, seconds)``; it may override ``_on_start``, ``_on_end``, ``on_tick`` and
    ``on_epoch``. The base decides, once for every source:

    - when a trial started, on the source's clock (``now``): the one record of trial start times. A job
      is handed out (``started_at``; the ``seconds`` given to ``_record``, which the progress display
      shows, count from it: the records' ``seconds`` column is ``Metrics.seconds``, timed in the worker),
      then Ray begins running it once a worker is up (``began``, ``running_since``; the deadline of
      ``--trial-timeout`` counts from it, so a trial waiting for a worker or for resources is not
      charged for the wait);
    - that a result is taken once: a trial reported twice, or never handed out, is logged and ignored;
    - that a result is judged once as the evolution believes it (``evolve.contract.sanitised``) before any
      source sees it;
    - how a source pickles: Ray Tune pickles its search algorithm, and with it the source, into its
      experiment folder. A source holds the driver's records, files and terminal, which mean nothing in
      another process, and the evolution never restores from Tune's copy, so a source pickles empty.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started: dict[str, float] = {}  # trial id -> when it was handed out, until its result
        self._began: dict[str, float] = {}  # trial id -> when Ray began running it (its first attempt)

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def running(self) -> int:
        """How many of the jobs handed out have no result yet."""
        return len(self._started)

    def now(self) -> float:
        """The time on the clock this source times its trials with."""
        return self._clock()

    def started_at(self, trial_id: str) -> Optional[float]:
        """When the running trial ``trial_id`` was handed out; None once it has ended or if it never was."""
        return self._started.get(trial_id)

    def began(self, trial_id: str) -> None:
        """Ray began running the trial (the runner says so); a retry after a lost worker keeps the first
        time."""
        if trial_id in self._started and trial_id not in self._began:
            self._began[trial_id] = self._clock()

    def running_since(self, trial_id: str) -> Optional[float]:
        """When Ray began running the trial ``trial_id``; None before that and once it has ended."""
        return self._began.get(trial_id)

    def next_job(self) -> Union[TrialJob, None, Any]:
        """The next job to start, ``WAIT`` while none can start before a running trial ends, or None."""
        job = self._next()
        if isinstance(job, TrialJob):
            self._started[job.trial_id] = self._clock()
            self._on_start(job)
        return job

    def on_result(self, job: TrialJob, metrics: Metrics) -> None:
        """A trial ended (called in the driver, once per trial by the runner)."""
        start = self._started.pop(job.trial_id, None)
        self._began.pop(job.trial_id, None)
        if start is None:
            LOGGER.warning("trial %s reported twice or was never started; result ignored", job.trial_id)
            return
        metrics = sanitised(metrics)
        self._on_end(job, metrics)
        self._record(job, metrics, self._clock() - start)

    def on_epoch(self, job: TrialJob, epoch: int, metrics: Metrics) -> None:
        """A running trial's per-epoch report (nothing by default)."""

    def on_tick(self) -> None:
        """Called on every step of Tune's loop, to refresh progress (nothing by default)."""

    def _on_start(self, job: TrialJob) -> None:
        """The job was handed out (nothing by default)."""

    def _on_end(self, job: TrialJob, metrics: Metrics) -> None:
        """The job's result was taken, judged, and is about to be recorded (nothing by default)."""

    def _next(self) -> Union[TrialJob, None, Any]:
        raise NotImplementedError

    def _record(self, job: TrialJob, metrics: Metrics, seconds: float) -> None:
        raise NotImplementedError


class _PlainSource(JobSource):
    """A plain object with ``next_job()`` and ``on_result(job, metrics)`` (``on_epoch`` and ``on_tick`` when
    it has them) as a JobSource, so the base times its trials and guards its results as any source's."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner

    def _next(self) -> Union[TrialJob, None, Any]:
        return self.inner.next_job()

    def _record(self, job: TrialJob, metrics: Metrics, seconds: float) -> None:
        self.inner.on_result(job, metrics)

    def on_epoch(self, job: TrialJob, epoch: int, metrics: Metrics) -> None:
        if hasattr(self.inner, "on_epoch"):
            self.inner.on_epoch(job, epoch, metrics)

    def on_tick(self) -> None:
        if hasattr(self.inner, "on_tick"):
            self.inner.on_tick()


def as_job_source(source: Any) -> JobSource:
    """``source`` itself if it is a JobSource, else a plain object with ``next_job``/``on_result`` wrapped in
    one (a script or a test driving a ``TrialRunner`` need not subclass)."""
    return source if isinstance(source, JobSource) else _PlainSource(source)
