"""The default hyperparameter files, shipped as package data: ``hyp.scratch-low.yaml`` (the YOLOv5 key set,
every key commented; the default under SGD), ``hyp.scratch-adamw.yaml`` (the same with the AdamW learning rate;
the default otherwise, see ``detector.hyp.default_hyp_path``) and ``meta.yaml`` (the search space of the evolution); ``hyp.ultralytics.yaml`` and
``meta.ultralytics.yaml`` are the same pair for Ultralytics' key set (``--trainer ultralytics``).

They are read through ``importlib.resources``, so an installed package (not only a checkout) has them.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

HYP_SCRATCH_LOW = "hyp.scratch-low.yaml"
HYP_SCRATCH_ADAMW = "hyp.scratch-adamw.yaml"
META = "meta.yaml"
HYP_ULTRALYTICS = "hyp.ultralytics.yaml"
META_ULTRALYTICS = "meta.ultralytics.yaml"


def path(name: str) -> Path:
    """The file ``name`` of this package on disk (a regular install or a checkout unpacks it)."""
    return Path(str(files(__name__).joinpath(name)))
