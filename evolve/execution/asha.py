"""Early stopping of hopeless trials (``--early-stop asha``): Ray Tune's asynchronous successive halving on
per-epoch ``fitness``, deciding only between epochs.

Ray Tune is imported at the top of this module, so only ``TrialRunner`` imports it, and only when a run
asks for early stopping.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from evolve.execution.trainable import EPOCH_KEY, FINAL_KEY


class EpochASHA(AsyncHyperBandScheduler):
    """ASHA on per-epoch ``fitness`` (maximised), epochs as time, deciding only between epochs.

    A trial's report of its last epoch and its ``final`` report are never acted on: the trial has done
    all its work by then, and stopping it there would record a finished trial as ``stopped``. Ray's ASHA
    also stops any trial reaching ``max_t``; that too is left to the trial, which ends by itself.
    """

    def __init__(self, max_t: int, grace_period: int, reduction_factor: float) -> None:
        super().__init__(time_attr=EPOCH_KEY, metric="fitness", mode="max", max_t=max_t,
                         grace_period=grace_period, reduction_factor=reduction_factor)
        self.last_epoch = int(max_t)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if result.get(FINAL_KEY) or int(result.get(EPOCH_KEY, 0) or 0) >= self.last_epoch:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def epoch_asha(max_t: int, grace_period: int, reduction_factor: float,
               history: Optional[Mapping[int, Sequence[float]]] = None) -> EpochASHA:
    """``EpochASHA`` whose rungs already hold ``history`` (rung epoch -> fitness values the run's earlier
    trials had there): a resumed run's ASHA would otherwise let every trial pass until its rungs refilled."""
    asha = EpochASHA(max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor)
    # Ray keeps no public way to seed rungs; one bracket, its rungs are (milestone, {trial: fitness}).
    for milestone, recorded in asha._brackets[0]._rungs:
        for i, value in enumerate((history or {}).get(math.ceil(milestone - 1e-9), ())):
            recorded[f"earlier-{i}"] = float(value)
    return asha
