"""Trainers as plug-ins: what trains one trial, named on the command line with ``--trainer``.

A ``Trainer`` is a small typed object: its name, the function that trains (``train(hyp, cfg, report) ->
Metrics``, with ``cfg`` a ``TrialConfig``), its key set, its default hyp file and search space, and
whether it can run as a DDP job. Names accepted by ``trainer_for``:

- ``detector``: the built-in YOLO detector with the YOLOv5 key set (``evolve.execution.detector_trainer``,
  the one module of ``evolve`` that imports ``detector``), the default;
- ``surrogate``: the analytic stand-in used for fast tests and demos (``evolve.search.surrogate.train``);
- ``ultralytics``: Ultralytics models with Ultralytics' key set (``evolve.execution.ultralytics_trainer``),
  which needs the optional ``ultralytics`` package (``pip install -e ".[ultralytics]"``);
- ``package.module:attr``: a ``Trainer`` object of your own (with its own key set and files), or any
  callable ``fn(hyp, cfg, report=None)``, which gets the YOLOv5 key set and the default files.

Functions are imported when a trial calls them, never when a trainer is looked up by the driver, so the
driver does not pay for torch unless a trial needs it. Deciding whether a name can be had is done here
and only here (``check``).

A trainer may also bring a data check (``check_entry``, ``fn(cfg) -> DataSummary | None``), which the
driver runs once before any run folder exists or Ray starts: it raises ``ValueError`` (the detector's
``DataError``) with one line naming the file and line of the first problem, and may return how many
images it found and which it could not read (they are skipped by the trials and shown on the console).
"""
from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import hyps
from evolve.config.trial import TrialConfig
from evolve.errors import ConfigError
from evolve.search.keyset import ULTRALYTICS, YOLOV5, KeySet

if TYPE_CHECKING:  # pragma: no cover
    from evolve.config.run import EvolveConfig
    from evolve.search.space import SearchSpace

TrainFn = Callable[..., object]

# A dotted module path, a colon, and a (possibly dotted) attribute path: "pkg.mod:func" or "mod:Cls.meth".
_SPEC_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_EXPECTED = "expected 'detector', 'surrogate', 'ultralytics' or 'package.module:function'"


@dataclass(frozen=True)
class DataSummary:
    """What a trainer's data check found: images listed (both splits) and those that cannot be read."""

    images: int = 0
    unreadable: tuple[str, ...] = ()

    def line(self) -> str:
        text = f"data checked: {self.images} images, every label file valid"
        if self.unreadable:
            text += (f"; {len(self.unreadable)} unreadable image(s) will be skipped, e.g. "
                     f"{', '.join(self.unreadable[:3])}")
        return text


@dataclass(frozen=True)
class Trainer:
    """A trainer plug-in. ``entry`` is ``"package.module:function"``, imported on first ``train``."""

    name: str
    entry: str
    keyset: KeySet = YOLOV5
    hyp_file: Path = field(default_factory=lambda: hyps.path(hyps.HYP_SCRATCH_LOW))
    space_file: Path = field(default_factory=lambda: hyps.path(hyps.META))
    distributed: bool = True  # False: it never uses torch.distributed, so a trial runs it in one process
    requires: str = ""  # an optional package it needs, installed by the extra of the same name
    preflight: str = ""  # "module:function" checking an EvolveConfig before any run folder exists
    val_every: Optional[int] = None  # validation interval when early stopping does not need every epoch
    check_entry: Optional[str] = None  # "package.module:function" checking the data before the run
    hyp_entry: Optional[str] = None  # "module:function(optimizer) -> Path": a base hyp file by --optimizer

    def check_data(self, cfg: TrialConfig) -> Optional[DataSummary]:
        """Run the trainer's data check, if it has one; ConfigError with its one line on bad data."""
        if not self.check_entry:
            return None
        try:
            return _load(self.name, self.check_entry)(cfg)
        except ValueError as exc:  # DataError, ConfigError: the check's own one-line message
            raise ConfigError(str(exc)) from None

    def default_hyp(self, optimizer: str = "auto") -> Path:
        """The base hyp file of an evolution without ``--hyp``: the trainer's own, or for the detector the
        file of the trials' optimizer (``detector.hyp.default_hyp_path``)."""
        return Path(_load(self.name, self.hyp_entry)(optimizer)) if self.hyp_entry else self.hyp_file

    def space(self, cfg: EvolveConfig) -> SearchSpace:
        """The search space of a run of ``cfg``: ``--meta`` or this trainer's, over ``--hyp`` or its base hyp."""
        from evolve.search.space import SearchSpace

        return SearchSpace.load(cfg.meta or self.space_file, cfg.hyp or self.default_hyp(cfg.train.optimizer),
                                self.keyset)

    def function(self) -> TrainFn:
        """The training function itself (imports its module)."""
        return _load(self.name, self.entry)


BUILTIN_TRAINERS: dict[str, Trainer] = {
    # Both validate after the last epoch only unless early stopping needs every epoch, as YOLOv5's evolve
    # does: nothing else reads per-epoch fitness, and a detector trial of 20 epochs of 256 images spent
    # about 10% of its time in the other 19 validations.
    "detector": Trainer("detector", "evolve.execution.detector_trainer:train", val_every=0,
                        hyp_entry="evolve.execution.detector_trainer:base_hyp",
                        check_entry="evolve.execution.detector_trainer:check_data"),
    "surrogate": Trainer("surrogate", "evolve.search.surrogate:train", distributed=False),
    "ultralytics": Trainer("ultralytics", "evolve.execution.ultralytics_trainer:train", ULTRALYTICS,
                           hyps.path(hyps.HYP_ULTRALYTICS), hyps.path(hyps.META_ULTRALYTICS),
                           distributed=False, requires="ultralytics",
                           preflight="evolve.execution.ultralytics_inputs:preflight", val_every=0),
}


def _parse(spec: Any) -> str:
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--trainer: {_EXPECTED}, got {spec!r}")
    spec = spec.strip()
    if spec not in BUILTIN_TRAINERS and not _SPEC_RE.match(spec):
        raise ConfigError(f"--trainer '{spec}': {_EXPECTED}")
    return spec


def _load(spec: str, target: str) -> Any:
    """Import ``module:attr`` for the ``--trainer`` value ``spec``; ConfigError naming it on failure."""
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
    if not callable(obj) and not isinstance(obj, Trainer):
        raise ConfigError(f"--trainer '{spec}': '{attr_path}' in '{module_name}' is not callable "
                          f"(it is a {type(obj).__name__})")
    return obj


def trainer_for(spec: Any) -> Trainer:
    """The ``Trainer`` named by ``spec``; a built-in is not imported, a user's spec is."""
    spec = _parse(spec)
    if spec in BUILTIN_TRAINERS:
        return BUILTIN_TRAINERS[spec]
    obj = _load(spec, spec)
    if isinstance(obj, Trainer):
        return obj
    return Trainer(name=spec, entry=spec)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that is not a package, or a module blocked in sys.modules
        return False


def check(spec: Any) -> Trainer:
    """ConfigError unless ``spec`` names a trainer that can be had here; the trainer otherwise.

    A built-in's module is only located, not imported: torch is slow to load and only trials need it.
    """
    trainer = trainer_for(spec)
    if trainer.requires and not _installed(trainer.requires):
        raise ConfigError(f"--trainer {trainer.name}: the '{trainer.requires}' package is not installed; "
                          f"install it with: pip install -e \".[{trainer.requires}]\"")
    module = trainer.entry.split(":", 1)[0]
    if not _installed(module):
        raise ConfigError(f"--trainer '{trainer.name}': module '{module}' is not installed")
    return trainer


def preflight(trainer: Trainer, cfg: "EvolveConfig") -> None:
    """Run the trainer's own checks of the run's settings (ConfigError naming the flag), if it has any."""
    if trainer.preflight:
        _load(trainer.name, trainer.preflight)(cfg)


def resolve_trainer(spec: Any) -> TrainFn:
    """The training function named by ``spec`` (imported now)."""
    return trainer_for(spec).function()
