"""Turning a trainer name from the command line into the callable that trains one trial.

A trainer has the signature of ``detector.train``: ``trainer(hyp, cfg, report=None) -> Metrics`` (or a
mapping with at least ``map50`` and ``map50_95``). Three kinds of names are accepted:

- ``detector``: the built-in YOLO detector (``detector.train``);
- ``surrogate``: the analytic stand-in used for fast tests and demos (``evolve.surrogate.train``);
- ``package.module:function``: any importable callable, e.g. a wrapper around YOLOv5 or Ultralytics.

Imports happen when a name is resolved, never when this module is imported, so the driver does not
pay for torch unless it asks for the detector.
"""
from __future__ import annotations

import importlib
import re
from typing import Callable

from evolve.errors import ConfigError

Trainer = Callable[..., object]

BUILTIN_TRAINERS: dict[str, str] = {
    "detector": "detector.train:train",
    "surrogate": "evolve.surrogate:train",
}

# A dotted module path, a colon, and a (possibly dotted) attribute path: "pkg.mod:func" or "mod:Cls.meth".
_SPEC_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_builtin(spec: str) -> bool:
    """Whether ``spec`` names one of the trainers shipped with the project."""
    return spec in BUILTIN_TRAINERS


def resolve_trainer(spec: str) -> Trainer:
    """Return the trainer named by ``spec``; ConfigError naming the spec if it cannot be had."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--trainer: expected 'detector', 'surrogate' or 'package.module:function', "
                          f"got {spec!r}")
    spec = spec.strip()
    target = BUILTIN_TRAINERS.get(spec, spec)
    if not _SPEC_RE.match(target):
        raise ConfigError(f"--trainer '{spec}': expected 'detector', 'surrogate' or "
                          f"'package.module:function'")
    module_name, attr_path = target.split(":", 1)
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:  # any failure while importing user code is the user's spec problem
        raise ConfigError(f"--trainer '{spec}': cannot import module '{module_name}': "
                          f"{type(exc).__name__}: {exc}") from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"--trainer '{spec}': module '{module_name}' has no attribute '{attr_path}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"--trainer '{spec}': '{attr_path}' in '{module_name}' is not callable "
                          f"(it is a {type(obj).__name__})")
    return obj
