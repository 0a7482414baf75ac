"""Ultralytics' detection trainer as a trial runs it (``TrialTrainer``).

This module imports Ultralytics at its top, so only the Ultralytics adapter
(``evolve.execution.ultralytics_trainer``) imports it, inside a trial, once
``evolve.execution.ultralytics_inputs.import_ultralytics`` has put Ultralytics in offline mode (a setting
it reads on its first import only).
"""
from __future__ import annotations

from ultralytics.models.yolo.detect import DetectionTrainer


class TrialTrainer(DetectionTrainer):
    """Ultralytics' detection trainer without its final re-validation of best.pt: a trial's result is its
    last epoch (as in YOLOv5's evolution), already validated."""

    def final_eval(self) -> None:
        return None
