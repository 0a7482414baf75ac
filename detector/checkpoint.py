"""Saving and loading training checkpoints (``last.pt`` / ``best.pt``) and rebuilding a model from one.

A checkpoint holds plain data only (state dicts, numbers, strings, lists), so it loads with
``torch.load(weights_only=True)`` and never unpickles arbitrary objects. ``model`` is the EMA weights
(what validation and deployment use); ``train_model`` the raw weights that a resumed run continues.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from detector.errors import DataError

LOGGER = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "nc", "size", "na", "anchors", "names")


def _plain(value: Any) -> Any:
    """Round-trip through JSON so that a config with Paths or other objects stays loadable as plain data."""
    return json.loads(json.dumps(value, default=str))


def make_checkpoint(
    *,
    ema_model: nn.Module,
    train_model: Optional[nn.Module],
    optimizer: Optional[torch.optim.Optimizer],
    epoch: int,
    best_fitness: float,
    ema_updates: int,
    hyp: dict[str, float],
    cfg: dict[str, Any],
    imgsz: int,
    size: str,
    names: list[str],
) -> dict[str, Any]:
    """Build the checkpoint dict; ``epoch`` is the number of epochs completed (1-based)."""
    anchors = ema_model.detect.anchors.detach().cpu().float()
    return {
        "format": FORMAT_VERSION,
        "model": {k: v.detach().cpu().clone() for k, v in ema_model.state_dict().items()},
        "train_model": (
            {k: v.detach().cpu().clone() for k, v in train_model.state_dict().items()}
            if train_model is not None else None
        ),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "best_fitness": float(best_fitness),
        "ema_updates": int(ema_updates),
        "hyp": _plain(hyp),
        "cfg": _plain(cfg),
        "imgsz": int(imgsz),
        "nc": int(ema_model.nc),
        "size": str(size),
        "na": int(ema_model.na),
        "anchors": anchors,
        "names": [str(n) for n in names],
    }


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (temporary file then rename) so an interrupted save never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; DataError naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: weights file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable checkpoint ({first})") from exc
    if not isinstance(ckpt, dict):
        raise DataError(f"{path}: not a detector checkpoint (got {type(ckpt).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise DataError(f"{path}: not a detector checkpoint (missing key '{missing[0]}')")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], weights: str = "model") -> nn.Module:
    """Rebuild the Model of a checkpoint with its anchors and names; ``weights`` picks EMA or raw."""
    from detector.model import Model

    model = Model(nc=int(ckpt["nc"]), size=str(ckpt["size"]), na=int(ckpt["na"]))
    model.set_anchors(torch.as_tensor(ckpt["anchors"], dtype=torch.float32))
    state = ckpt.get(weights) or ckpt["model"]
    model.load_state_dict(state)
    model.names = list(ckpt["names"])
    return model
