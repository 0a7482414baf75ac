"""What the loops and the runner exchange: a ``TrialJob`` (one hyp to train), the ``WAIT`` answer and the
``JobSource`` protocol a loop implements. No Ray here, so the loops can be read and tested without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Union

from evolve.contract import Metrics


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


class JobSource(Protocol):
    """What a TrialRunner pulls jobs from and reports results to (the GA's side of execution).

    A source may also define ``on_epoch(job, epoch, metrics)`` to receive per-epoch reports.
    """

    def next_job(self) -> Union[TrialJob, None, Any]:  # TrialJob, None (no more ever) or WAIT
        ...

    def on_result(self, job: TrialJob, metrics: Metrics) -> None:
        ...
