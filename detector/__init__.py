"""A compact YOLO detector: model, loss, data, augmentation, training and COCO-style validation.

The public surface used by evolution (and by anyone who wants a trainer) is small:

- ``detector.train(hyp, cfg, report=None) -> Metrics`` trains one model and returns its metrics.
- ``detector.Metrics`` and ``detector.fitness`` describe a result.
- ``detector.TrainConfig`` configures a run.

Importing this package does not import torch; ``train`` loads it on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detector.config import TrainConfig
from detector.results import STATUSES, Metrics, fitness

if TYPE_CHECKING:  # pragma: no cover
    from detector.train import train

__all__ = ["Metrics", "STATUSES", "TrainConfig", "fitness", "train"]


def __getattr__(name: str) -> Any:
    # torch is heavy to import; evolution's driver needs Metrics long before any trial trains.
    if name == "train":
        from detector.train import train

        return train
    raise AttributeError(f"module 'detector' has no attribute {name!r}")
