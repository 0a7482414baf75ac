"""Files of a training run's folder: choosing the folder (``exp``, ``exp2``, ...) and ``results.csv``, one
row per epoch in YOLOv5's column layout (blank metric cells for epochs that were not validated)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional, Sequence

from detector.results import Metrics

RESULTS_COLUMNS = (
    "epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
    "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss", "val/cls_loss",
    "x/lr_bias", "x/lr_weight", "x/lr_norm", "fitness", "seconds",
)


def increment_path(path: Path, exist_ok: bool = False) -> Path:
    """``path`` if it is free (or ``exist_ok``), else the first free ``path2``, ``path3``, ..."""
    if exist_ok or not path.exists():
        return path
    n = 2
    while path.with_name(f"{path.name}{n}").exists():
        n += 1
    return path.with_name(f"{path.name}{n}")


def write_results_row(path: Path, epoch: int, train_loss: Sequence[float], metrics: Optional[Metrics],
                      lrs: dict[str, float], seconds: float, new: bool) -> None:
    """Append one epoch to ``path`` (``new``: start the file with its header instead)."""
    values: list[Any] = [epoch, *(round(v, 5) for v in train_loss)]
    if metrics is None:
        values += [""] * 7
    else:
        values += [round(v, 5) for v in (metrics.precision, metrics.recall, metrics.map50,
                                          metrics.map50_95, metrics.box_loss, metrics.obj_loss,
                                          metrics.cls_loss)]
    values += [f"{lrs.get(k, 0.0):.6g}" for k in ("bias", "weight", "norm")]
    values += ["" if metrics is None else round(metrics.fitness, 5), round(seconds, 2)]
    with path.open("w" if new else "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(RESULTS_COLUMNS)
        writer.writerow(values)
