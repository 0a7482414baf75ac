"""The built-in trainer's adapter: runs the project's own detector (``detector.train``) under the trial
contract. This is the one module of ``evolve`` that imports ``detector``, and it is imported only where
a trial trains.

The detector keeps its own ``TrainConfig`` and ``Metrics`` (it knows nothing of evolution); here a
``TrialConfig`` becomes a ``TrainConfig`` (its fields, plus the detector's own options given as
``extra["detector"]``, such as ``cache_dir``), and the detector's results become ``evolve`` Metrics.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable, Mapping, Optional

from detector.config import TrainConfig
from detector.data import load_data_config
from detector.hyp import HYP_KEYS
from detector.synthetic import make_synthetic
from detector.train import train as train_detector
from evolve.config.trial import OTHER_SETTINGS, TrialConfig
from evolve.contract import Metrics
from evolve.search.keyset import YOLOV5

if HYP_KEYS != YOLOV5.keys:  # the detector's key set is the YOLOv5 one; the records rely on it
    raise ImportError("detector.hyp.HYP_KEYS differs from evolve's YOLOv5 key set")


def embedded_data() -> str:
    """The data YAML of the embedded default data set (rendered on first use), for trainers that are
    given no ``--data``: the Ultralytics adapter trains on the same set as the detector."""
    return str(make_synthetic())


def data_root(data: str) -> str:
    """The folder a data YAML's paths are relative to, once the detector has checked the YAML and found
    its images (``DataError`` naming the file and key otherwise): one rule for every trainer."""
    return str(load_data_config(data).root)


def train_config(cfg: Any) -> TrainConfig:
    """The detector's ``TrainConfig`` for a trial's ``TrialConfig``."""
    trial = TrialConfig.from_any(cfg)
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in trial.to_dict().items() if k in known}
    extra = dict(trial.extra)
    values.update(extra.pop(OTHER_SETTINGS, None) or {})
    values["extra"] = extra
    return TrainConfig(**values)


def train(hyp: Mapping[str, float], cfg: Any,
          report: Optional[Callable[[int, Metrics], Any]] = None) -> Metrics:
    """Train the detector on ``hyp`` for one trial; per-epoch reports and the result as evolve Metrics."""

    def forward(epoch: int, metrics: Any) -> None:
        if report is not None:
            report(epoch, Metrics.from_any(metrics))

    return Metrics.from_any(train_detector(dict(hyp), train_config(cfg), forward))
