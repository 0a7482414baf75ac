"""Early stopping of hopeless trials (``--early-stop asha``): Ray Tune's asynchronous successive halving on
per-epoch ``fitness``, deciding only between epochs.

Ray Tune is imported at the top of this module, so only ``TrialRunner`` imports it, and only when a run
asks for early stopping.
"""
from __future__ import annotations

from typing import Any

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
