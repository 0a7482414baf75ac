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

    - when a trial started (``seconds`` is the time from handing the job out to its result);
    - that a result is taken once: a trial reported twice, or never handed out, is logged and ignored;
    - that a result is judged once as the evolution believes it (``evolve.contract.sanitised``) before any
      source sees it;
    - how a source pickles: Ray Tune pickles its search algorithm, and with it the source, into its
      experiment folder. A source holds the driver's records, files and terminal, which mean nothing in
      another process, and the evolution never restores from Tune's copy, so a source pickles empty.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started: dict[str, float] = {}  # trial id -> start time, while running

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def running(self) -> int:
        """How many of the jobs handed out have no result yet."""
        return len(self._started)

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
