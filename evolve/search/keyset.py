"""A trainer's hyperparameter key set (``KeySet``): its keys in record order, defaults, integer keys, and
the loading and checking of hyp files against it. ``YOLOV5`` is the default key set.

The key set is the trainer's, not the evolution's: it decides the hyp columns of ``evolve.csv``, what a
hyp or meta file may hold and how values are written. A trainer with its own hyps (the Ultralytics one,
a user's) brings its own ``KeySet``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from evolve.config.trial import DETECTOR_OPTIMIZERS
from evolve.errors import ConfigError

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeySet:
    """Keys (in the column order of ``evolve.csv``) with their defaults; ``integer`` keys are whole
    numbers of at least ``integer_low``; ``optional`` keys may be missing from a file without a note
    (YOLOv5's own files leave ``anchors`` commented out); ``choices`` keys hold one of a few names
    rather than a number (Ultralytics' ``optimizer``): they are never evolved, their value comes from
    the base hyp file and is written to every record as it is, unless a search space evolves them.
    ``extensions`` are categorical keys a search space may add to the key set (the YOLOv5 key set has no
    optimizer key, our detector trains with one of three): absent from the records and from hyp files
    unless the search space names them (``with_extension``)."""

    name: str
    defaults: tuple[tuple[str, Any], ...]
    integer: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()
    integer_low: int = 1
    extensions: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def extension_of(self, key: str) -> tuple[str, ...] | None:
        """The names an extension key may hold, None if ``key`` is no extension of this key set."""
        return dict(self.extensions).get(key)

    def with_extension(self, key: str, default: str) -> KeySet:
        """This key set plus the extension ``key`` (default ``default``), as one more categorical key:
        its column comes after the key set's own, and a hyp file may leave it out."""
        return KeySet(self.name, (*self.defaults, (key, default)), self.integer, self.optional | {key},
                      (*self.choices, (key, dict(self.extensions)[key])), self.integer_low,
                      tuple(e for e in self.extensions if e[0] != key))

    def choices_of(self, key: str) -> tuple[str, ...] | None:
        """The names a categorical key may hold, None for a numeric key."""
        return dict(self.choices).get(key)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.defaults)

    def default_hyp(self) -> dict[str, float]:
        return dict(self.defaults)

    def validate(self, hyp: Any, source: str = "hyp") -> dict[str, float]:
        """A complete hyp dict: known keys only, finite numbers, missing keys defaulted.

        An unknown key is an error because it would silently do nothing. ConfigError names the key.
        """
        if not isinstance(hyp, Mapping):
            raise ConfigError(f"{source}: expected a mapping of hyperparameters, got {type(hyp).__name__}")
        defaults = self.default_hyp()
        unknown = [k for k in hyp if k not in defaults]
        if unknown:
            raise ConfigError(f"{source}: unknown hyperparameter key '{unknown[0]}' "
                              f"(known: {', '.join(self.keys)})")
        out: dict[str, float] = {}
        for key, default in defaults.items():
            value = hyp.get(key)
            if value is None:
                if key not in self.optional:
                    LOGGER.info("%s: '%s' missing, using default %s", source, key, default)
                out[key] = default
                continue
            names = self.choices_of(key)
            if names is not None:
                if value not in names:
                    raise ConfigError(f"{source}: key '{key}' must be one of {', '.join(names)}, got {value!r}")
                out[key] = value
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{source}: key '{key}' must be a finite number, got {value!r}")
            if key in self.integer:
                if round(value) < self.integer_low:
                    raise ConfigError(f"{source}: key '{key}' must be >= {self.integer_low}, got {value!r}")
                out[key] = int(round(value))
            else:
                out[key] = float(value)
        return out

    def load(self, path: str | Path) -> dict[str, float]:
        """Load a hyp YAML of this key set into a complete, validated dict."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: hyp file not found")
        try:
            data = yaml.safe_load(path.read_bytes())  # a non-UTF-8 byte is a YAMLError
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}".splitlines()[0]) from exc
        return self.validate(data or {}, source=str(path))

    def format_value(self, key: str, value: Any) -> str:
        """How a value is written to evolve.csv: names and integers as such, else 6 significant digits."""
        if self.choices_of(key) is not None:
            return str(value)
        if key in self.integer:
            return str(int(round(value)))
        return f"{float(value):.6g}"


# The YOLOv5 key set and defaults (hyp.scratch-low.yaml): a hyp file evolved here trains in YOLOv5
# unchanged. The detector keeps the same table (detector.hyp), since it may not import evolve;
# tests/evolve/search/test_keyset.py checks that the two and the shipped file agree.
YOLOV5 = KeySet(
    name="yolov5",
    defaults=(
        ("lr0", 0.01), ("lrf", 0.01), ("momentum", 0.937), ("weight_decay", 0.0005), ("warmup_epochs", 3.0),
        ("warmup_momentum", 0.8), ("warmup_bias_lr", 0.1), ("box", 0.05), ("cls", 0.5), ("cls_pw", 1.0),
        ("obj", 1.0), ("obj_pw", 1.0), ("iou_t", 0.20), ("anchor_t", 4.0), ("anchors", 3),
        ("fl_gamma", 0.0), ("hsv_h", 0.015), ("hsv_s", 0.7), ("hsv_v", 0.4), ("degrees", 0.0),
        ("translate", 0.1), ("scale", 0.5), ("shear", 0.0), ("perspective", 0.0), ("flipud", 0.0),
        ("fliplr", 0.5), ("mosaic", 1.0), ("mixup", 0.0), ("copy_paste", 0.0),
    ),
    integer=frozenset({"anchors"}),
    optional=frozenset({"anchors"}),
    # The detector's optimizers (its --optimizer less auto): a search space may evolve the optimizer.
    extensions=(("optimizer", DETECTOR_OPTIMIZERS),),
)

# Ultralytics' detection hyperparameters (its default.yaml values), for ``--trainer ultralytics``. The
# optimizer is named, never "auto": Ultralytics' auto choice replaces lr0 and momentum by its own, which
# would make both genes dead. Adam-family optimizers want a smaller lr0 than SGD, so when the optimizer
# evolves lr0 takes a range per optimizer (``by: optimizer`` in the search space, see evolve.search.space).
ULTRALYTICS_OPTIMIZERS = ("SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp")
ULTRALYTICS = KeySet(
    name="ultralytics",
    defaults=(
        ("lr0", 0.01), ("lrf", 0.01), ("momentum", 0.937), ("weight_decay", 0.0005), ("warmup_epochs", 3.0),
        ("warmup_momentum", 0.8), ("warmup_bias_lr", 0.1), ("box", 7.5), ("cls", 0.5), ("cls_pw", 0.0),
        ("dfl", 1.5), ("hsv_h", 0.015), ("hsv_s", 0.7), ("hsv_v", 0.4), ("degrees", 0.0), ("translate", 0.1),
        ("scale", 0.5), ("shear", 0.0), ("perspective", 0.0), ("flipud", 0.0), ("fliplr", 0.5),
        ("bgr", 0.0), ("mosaic", 1.0), ("mixup", 0.0), ("cutmix", 0.0), ("copy_paste", 0.0),
        ("close_mosaic", 10), ("optimizer", "SGD"),
    ),
    integer=frozenset({"close_mosaic"}),
    choices=(("optimizer", ULTRALYTICS_OPTIMIZERS),),
    integer_low=0,
)
