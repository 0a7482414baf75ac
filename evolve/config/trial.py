"""What one trial trains with (``TrialConfig``), the configuration every trainer receives, and the typed
options of the surrogate trainer (``SurrogateOptions``).

A trainer is called as ``train(hyp, cfg, report)`` with ``cfg`` a ``TrialConfig``: the data set, model
size, epochs, image size, batch, device, loader workers, seed, the trial's own folder
(``project``/``name``), the image-cache folder and ``extra``, a mapping passed through untouched for a
user's trainer. The built-in detector's adapter turns it into the detector's own ``TrainConfig``; a
setting this class lacks reaches no trainer (``from_any`` refuses it by name).

``TrialSpec`` is what the runner hands every trial of one run (Ray ships it to each worker once): the
trainer, the ``TrialConfig`` as trials see it and the run folder and process layout.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePath
from typing import Any, Mapping, Optional

from evolve.config.fields import check_fields, setting, vector
from evolve.errors import ConfigError

LANDSCAPES = ("smooth", "rugged", "rotated", "noisy")
# The built-in detector's model sizes and optimizers, which --model and --optimizer are checked against
# before any trial. They are detector.config's MODEL_SIZES and OPTIMIZER_CHOICES, but evolve/config may not
# import the detector (it is imported only where a trial trains): declared once more here, for all of
# evolve, and tests/evolve/test_architecture.py checks the two declarations agree.
MODEL_SIZES = ("n", "s", "m")
DETECTOR_OPTIMIZERS = ("SGD", "Adam", "AdamW")  # the names a hyp file's optimizer may take
OPTIMIZERS = ("auto", *DETECTOR_OPTIMIZERS)  # auto: picked from the planned steps
# Where a trial runs, not what it computes: a resumed run takes them from its own command, and the run's
# fingerprint leaves them out (a run moved to another device or cache folder is the same run).
EXECUTION_FIELDS = ("device", "workers", "cache_dir")
_SURROGATE = "surrogate trainer (--trainer surrogate)"


def data_sets(data: Optional[str]) -> list[str]:
    """The data YAMLs of ``--data``: none (the embedded set), one, or several separated by commas."""
    return [part.strip() for part in data.split(",")] if data else []


def data_names(data: Optional[str]) -> list[str]:
    """The names of several data sets (their YAML file stems), which label their columns in evolve.csv;
    empty for one data set or none, whose records keep the single-data layout."""
    paths = data_sets(data)
    if len(paths) < 2:
        return []
    if not all(paths):
        raise ConfigError(f"--data {data}: an empty data-set name in the list")
    names = [PurePath(p).stem for p in paths]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise ConfigError(f"--data {data}: two data sets named '{twice}' (the file name labels its columns "
                          "in evolve.csv); rename one")
    return names


@dataclass
class SurrogateOptions:
    """Options of the surrogate trainer (``evolve.search.surrogate``)."""

    landscape: str = setting("smooth", "--surrogate-landscape", "fitness landscape", choices=LANDSCAPES,
                             group=_SURROGATE)
    # std of the observation noise in fitness units; 0 means the noisy landscape's default
    noise: float = setting(0.0, "--surrogate-noise", "fitness noise std of the noisy landscape; 0 uses its "
                           "default", parse=float, low=0, group=_SURROGATE)
    seconds: float = setting(0.0, "--surrogate-seconds", "simulated seconds per trial", parse=float, low=0,
                             group=_SURROGATE)
    seconds_spread: float = setting(0.0, "--surrogate-spread", "durations spread over seconds*(1 +/- "
                                    "spread)", parse=float, low=0, high=1, group=_SURROGATE)
    failure_rate: float = setting(0.0, "--surrogate-failure-rate", "fraction of hyps whose trial fails",
                                  parse=float, low=0, high=1, group=_SURROGATE)
    seed: int = 0  # picks the landscape instance, the noise, durations and failures

    def __post_init__(self) -> None:
        check_fields(self)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"surrogate: 'seed' must be an integer, got {self.seed!r}")

    @classmethod
    def from_any(cls, value: Any) -> "SurrogateOptions":
        """Accept ``SurrogateOptions``, a mapping of its fields, or None (all defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"surrogate: options must be a mapping, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in value if k not in known)
        if unknown:
            raise ConfigError(f"surrogate: unknown option '{unknown[0]}' (known: {', '.join(sorted(known))})")
        return cls(**dict(value))


@dataclass
class TrialConfig:
    """Everything about one trial's training that is not a hyperparameter (see the module docstring)."""

    data: Optional[str] = setting(None, "--data", "data YAML (YOLOv5 format); a.yaml,b.yaml: every trial "
                                  "trains on each in turn and selection uses the mean fitness (default: the "
                                  "embedded data set)", optional=True, metavar="DATA.yaml[,DATA.yaml...]")
    model: str = setting("n", "--model", "the detector's model size: n, s or m; with --trainer ultralytics a "
                         "model YAML (yolo11n.yaml, yolov8s.yaml: built from scratch), a local .pt file, or n/s/m "
                         "for yolo11n/s/m.yaml (default: n)", metavar="n|s|m|MODEL")
    epochs: int = setting(100, "--epochs", "the target length: epochs of every trial not stopped early and of "
                          "validation (--fidelity prefix); epochs of every short trial (compressed)", parse=int,
                          low=1)
    imgsz: Optional[int] = setting(None, "--imgsz", "image size, a multiple of 32 (default: 256 for the "
                                   "embedded data set, else 640)", parse=int, low=32, optional=True)
    batch: int = setting(16, "--batch", "batch size", parse=int, low=1)
    device: str = setting("", "--device", "device of a trial: cpu, 0, cuda:1 (default: the trial's GPU if "
                          "it has one, else cpu)")
    workers: int = setting(2, "--workers", "data-loader workers per trial", parse=int, low=0)
    optimizer: str = setting("auto", "--optimizer", "optimizer of every trial; auto picks AdamW for runs of "
                             "under 10000 planned steps of 64 images, else SGD", choices=OPTIMIZERS)
    max_images: Optional[int] = setting(None, "--max-images", "use only the first N train/val images "
                                        "(default: all)", parse=int, low=1, optional=True)
    fitness_weights: tuple[float, float, float, float] = setting(
        (0.0, 0.0, 0.1, 0.9), "--fitness-weights", "weights of precision, recall, mAP50 and mAP50-95 in the "
        "fitness selection uses; the records say which", parse=vector(float, 4), metavar="P,R,MAP50,MAP50_95",
        low=0)
    seed: int = 0  # the run's --seed
    val_every: int = 1  # 1: validate after every epoch (per-epoch reports); 0: after the last one only
    save_weights: bool = False  # a trial keeps no weights unless asked: a run has thousands of trials
    project: str = "runs/evolve/trials"  # the trial's folder is project/name
    name: str = "trial"
    exist_ok: bool = True
    progress: bool = False  # nobody watches a trial's progress bar; its log file has the story
    # the decoded-image cache folder of the detector (None: $YOLO_EVOLVE_CACHE/images, else the user's cache)
    cache_dir: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)  # passed through untouched to the trainer
    surrogate: SurrogateOptions = field(default_factory=SurrogateOptions)

    def __post_init__(self) -> None:
        self.fitness_weights = tuple(self.fitness_weights)
        if isinstance(self.surrogate, Mapping):
            self.surrogate = SurrogateOptions.from_any(self.surrogate)
        self.surrogate.__post_init__()
        check_fields(self)
        if "surrogate" in self.extra:  # extra belongs to a user's trainer; the surrogate's options are typed
            raise ConfigError("trial config: surrogate options in extra['surrogate'] reach no trainer; use "
                              "TrialConfig(surrogate=SurrogateOptions(...))")
        if len(self.fitness_weights) != 4 or not sum(self.fitness_weights) > 0:
            raise ConfigError(f"--fitness-weights needs four weights P,R,MAP50,MAP50_95 with a positive sum, "
                              f"got {','.join(map(str, self.fitness_weights))}")
        data_names(self.data)  # a list of data sets must name each one once
        if self.imgsz is not None and self.imgsz % 32:
            raise ConfigError(f"--imgsz must be a multiple of 32, got {self.imgsz}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> "TrialConfig":
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_any(cls, value: Any) -> "TrialConfig":
        """Accept a ``TrialConfig``, a mapping of its fields, or any config whose ``to_dict()`` gives only
        its fields. ConfigError naming every setting this class lacks (another package's config, such as the detector's
        ``TrainConfig``, carries settings no trial would receive)."""
        if isinstance(value, cls):
            return value
        data = dict(value if isinstance(value, Mapping) else value.to_dict())
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in data if k not in known)
        if unknown:
            raise ConfigError(f"trial config: {type(value).__name__} has settings a TrialConfig lacks: "
                              f"{', '.join(unknown)}; pass a TrialConfig (a trainer's own options go in "
                              "extra)")
        data["extra"] = dict(data.get("extra") or {})
        return cls(**data)


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of one ``TrialRunner.run`` shares, as the trainable receives it.

    ``cfg`` is the ``TrialConfig`` as trials see it (data paths made absolute, the loader workers that fit
    the trial's CPUs, the validation interval early stopping needs); ``nproc`` DDP ranks share
    ``cpus_per_trial`` CPUs.
    """

    trainer: str
    cfg: TrialConfig
    run_dir: str
    nproc: int = 1
    cpus_per_trial: float = 1.0

    def for_trial(self, trial_id: str, seed: Optional[int] = None) -> TrialConfig:
        """One trial's config: the run's, writing under ``<run_dir>/trials/<trial_id>``, with its own seed
        if it has one. Progress bars are off: nobody watches a worker's stderr; the log file has the story."""
        changes: dict[str, Any] = {"project": str(PurePath(self.run_dir) / "trials"), "name": trial_id,
                                   "exist_ok": True, "progress": False}
        if seed is not None:
            changes["seed"] = int(seed)
        return self.cfg.replace(**changes)
