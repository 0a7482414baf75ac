"""The built-in trainer's adapter: runs the project's own detector (``detector.train``) under the trial
contract. This is the one module of ``evolve`` that imports ``detector``, and it is imported only where
a trial trains.

The detector keeps its own ``TrainConfig`` and ``Metrics`` (it knows nothing of evolution); here a
``TrialConfig`` becomes a ``TrainConfig`` (the fields both have; the detector's other settings keep their
defaults), and the detector's ``Metrics`` become ``evolve``'s (``evolve_metrics``), the one place where the
two meet.
A hyp set holding ``optimizer`` (an evolved optimizer gene) trains with it whatever ``--optimizer`` says:
the detector takes the optimizer named in its hyps over its config.

``check_data`` is the trainer's data check, run by the driver before a run starts. It reads the data YAML
and every label file of both splits with ``detector.data``'s own parsers, so a trial cannot fail on what
the check passed, and refuses a split without any label file. It also opens every image's header, so that
a file that is no image is counted before the run (``DataSummary.unreadable``), not found in a trial log;
a split none of whose images can be read is refused.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from detector.config import TrainConfig
from detector.data import load_data_config
from detector.labels import img2label_path, read_labels
from detector.errors import DataError
from detector.hyp import HYP_KEYS, default_hyp_path
from detector.results import Metrics as DetectorMetrics
from detector.synthetic import make_synthetic
from detector.train import train as train_detector
from evolve.config.trial import TrialConfig
from evolve.contract import Metrics
from evolve.execution.trainers import DataSummary
from evolve.search.keyset import YOLOV5

if HYP_KEYS != YOLOV5.keys:  # the detector's key set is the YOLOv5 one; the records rely on it
    raise ImportError("detector.hyp.HYP_KEYS differs from evolve's YOLOv5 key set")


def base_hyp(optimizer: str) -> Path:
    """The base hyp file of an evolution without --hyp: the detector's default for the trials' optimizer."""
    return default_hyp_path(optimizer)


def embedded_data() -> str:
    """The data YAML of the embedded default data set (rendered on first use), for trainers that are
    given no ``--data``: the Ultralytics adapter trains on the same set as the detector."""
    return str(make_synthetic())


def data_root(data: str) -> str:
    """The folder a data YAML's paths are relative to, once the detector has checked the YAML and found
    its images (``DataError`` naming the file and key otherwise): one rule for every trainer."""
    return str(load_data_config(data).root)


def data_images(data: str) -> dict[str, list[str]]:
    """The images of each split of a data YAML (``train``, ``val``) as the detector lists them: absolute,
    symlinks not resolved. Another trainer given these lists trains on what the data check checked."""
    config = load_data_config(data)
    return {"train": [str(p) for p in config.train], "val": [str(p) for p in config.val]}


def train_config(cfg: TrialConfig | Mapping[str, Any]) -> TrainConfig:
    """The detector's ``TrainConfig`` for a trial's ``TrialConfig``."""
    trial = TrialConfig.from_any(cfg)
    values = {f.name: getattr(trial, f.name) for f in fields(TrainConfig) if hasattr(trial, f.name)}
    return TrainConfig(**values)


def evolve_metrics(metrics: DetectorMetrics) -> Metrics:
    """The detector's ``Metrics`` as the evolution's: the same fields, by name."""
    return Metrics.from_any(metrics)


def train(hyp: Mapping[str, float], cfg: TrialConfig | Mapping[str, Any],
          report: Optional[Callable[[int, Metrics], Any]] = None) -> Metrics:
    """Train the detector on ``hyp`` for one trial; per-epoch reports and the result as evolve Metrics."""

    def forward(epoch: int, metrics: DetectorMetrics) -> None:
        if report is not None:
            report(epoch, evolve_metrics(metrics))

    return evolve_metrics(train_detector(dict(hyp), train_config(cfg), forward))


def _readable(path: Path) -> bool:
    # The header only: decoding every image here would double the first trials' work; a file whose
    # header is fine but whose pixels are cut short is still skipped (and counted) by the trials.
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - parsing the header is the check
        return True
    except Exception:  # noqa: BLE001 - whatever PIL raises means the trials cannot read it either
        return False


def check_data(cfg: TrialConfig | Mapping[str, Any]) -> Optional[DataSummary]:
    """The detector's checks of a trial's data set, before any trial: ``DataError`` naming file and line.

    None for the embedded data set, which the detector generates itself.
    """
    trial = TrialConfig.from_any(cfg)
    if not trial.data:
        return None
    data = load_data_config(trial.data)
    for key, images in (("train", data.train), ("val", data.val)):
        labelled = 0
        for image in images:
            label = img2label_path(image)
            read_labels(label, data.nc)
            labelled += label.is_file()
        if not labelled:
            # Every image background: trials would train and score on nothing, all with fitness 0.
            raise DataError(f"{data.yaml_path}: key '{key}': none of the {len(images)} images has a label file "
                            f"(looked for {img2label_path(images[0])}: the last 'images' folder of an image's "
                            f"path swapped for 'labels', suffix .txt)")
    unreadable: list[str] = []
    for key, images in (("train", data.train), ("val", data.val)):
        bad = [str(p) for p in images if not _readable(p)]
        if len(bad) == len(images):
            raise DataError(f"{data.yaml_path}: key '{key}': none of the {len(images)} images can be read, "
                            f"e.g. {bad[0]}")
        unreadable += bad
    return DataSummary(images=len(data.train) + len(data.val), unreadable=tuple(unreadable))
