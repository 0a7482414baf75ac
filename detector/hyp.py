"""The YOLOv5 hyperparameter key set, its defaults, and loading/validating hyp YAML files."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import yaml

import hyps
from detector.errors import HypError

LOGGER = logging.getLogger(__name__)

# The default hyp files ship as package data of ``hyps`` (so an installed package has them too).
DEFAULT_HYP_PATH = hyps.path(hyps.HYP_SCRATCH_LOW)
ADAMW_HYP_PATH = hyps.path(hyps.HYP_SCRATCH_ADAMW)

# The YOLOv5 defaults (hyp.scratch-low.yaml); the order is the column order of evolve.csv.
DEFAULT_HYP: dict[str, float] = {
    "lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
    "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0,
    "obj_pw": 1.0, "iou_t": 0.20, "anchor_t": 4.0, "anchors": 3, "fl_gamma": 0.0, "hsv_h": 0.015,
    "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0,
    "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0,
}
HYP_KEYS: tuple[str, ...] = tuple(DEFAULT_HYP)
INTEGER_KEYS = frozenset({"anchors"})
# Not a YOLOv5 key: a hyp file may name the optimizer to train with (an evolution that evolved it writes
# it to hyp_evolve.yaml); it overrides --optimizer. Files without it train as before.
OPTIMIZER_KEY = "optimizer"
HYP_OPTIMIZERS = ("SGD", "Adam", "AdamW")


def validate_hyp(hyp: Mapping[str, Any], source: str = "hyp") -> dict[str, float]:
    """Return a complete hyp dict: known keys only, numeric finite values, missing keys defaulted.

    YOLOv5's own files leave ``anchors`` commented out, so a missing key takes its default rather than
    failing; an unknown key is an error because it would silently do nothing.
    """
    if not isinstance(hyp, Mapping):
        raise HypError(f"{source}: expected a mapping of hyperparameters, got {type(hyp).__name__}")
    unknown = [k for k in hyp if k not in DEFAULT_HYP and k != OPTIMIZER_KEY]
    if unknown:
        raise HypError(f"{source}: unknown hyperparameter key '{unknown[0]}' (known: {', '.join(HYP_KEYS)})")
    out: dict[str, float] = {}
    for key, default in DEFAULT_HYP.items():
        if key not in hyp or hyp[key] is None:
            if key != "anchors":
                LOGGER.info("%s: '%s' missing, using default %s", source, key, default)
            out[key] = default
            continue
        value = hyp[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise HypError(f"{source}: key '{key}' must be a finite number, got {value!r}")
        out[key] = int(round(value)) if key in INTEGER_KEYS else float(value)
    if hyp.get(OPTIMIZER_KEY) is not None:
        if hyp[OPTIMIZER_KEY] not in HYP_OPTIMIZERS:
            raise HypError(f"{source}: key '{OPTIMIZER_KEY}' must be one of {', '.join(HYP_OPTIMIZERS)}, "
                           f"got {hyp[OPTIMIZER_KEY]!r}")
        out[OPTIMIZER_KEY] = hyp[OPTIMIZER_KEY]
    if out["anchors"] < 1:
        raise HypError(f"{source}: key 'anchors' must be >= 1, got {out['anchors']}")
    return out


def default_hyp_path(optimizer: str = "auto") -> Path:
    """The hyp file a run without ``--hyp`` trains with: YOLOv5's hyp.scratch-low.yaml under ``SGD``, and
    hyp.scratch-adamw.yaml (the same values but lr0 0.005) under ``auto``, ``Adam`` and ``AdamW``.

    Why: AdamW stepping every 8 images reached the peer's mAP in fewer epochs at lr0 0.005 than at
    YOLOv5's SGD rate 0.01 (docs/detector-train.md). ``auto`` takes the AdamW file because it trains
    AdamW on every run of under 10 000 steps; a longer run under ``auto`` trains SGD at this lr0 unless
    given ``--hyp hyps/hyp.scratch-low.yaml``.
    """
    return DEFAULT_HYP_PATH if optimizer == "SGD" else ADAMW_HYP_PATH


def load_hyp(path: str | Path | None = None) -> dict[str, float]:
    """Load a hyp YAML (ours or any YOLOv5 hyp file) into a complete, validated dict."""
    path = Path(path) if path is not None else DEFAULT_HYP_PATH
    if not path.is_file():
        raise HypError(f"{path}: hyp file not found")
    try:
        data = yaml.safe_load(path.read_bytes())  # a non-UTF-8 byte is a YAMLError
    except yaml.YAMLError as exc:
        raise HypError(f"{path}: not valid YAML: {exc}".splitlines()[0]) from exc
    return validate_hyp(data or {}, source=str(path))
