"""Configuration of one evolution (``EvolveConfig``) and the rules for resuming a run with a new command.

An evolution is configured by four parts: the GA (``GAConfig``), Ray execution (``RayConfig``), every
trial's training run (``TrainConfig``) and the run itself (mode, trainer, search-space files, seeds, run
folder). A resumed run keeps the settings it was started with, because changing the GA, the mode, early
stopping or the trials halfway would make its records meaningless; only the generation count may be
extended, and the execution settings (which machines, how many trials at once, where Tune stores its
records) follow the new command since they cannot change a result. A checkpoint is accepted only if it
fits the configuration and the search space it is resumed with (``check_checkpoint``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from detector.config import TrainConfig
from evolve.ddp import nproc_for
from evolve.errors import ConfigError
from evolve.ga import GAConfig
from evolve.rundir import checkpoint_path
from evolve.runner import RayConfig
from evolve.space import SearchSpace
from evolve.surrogate import LANDSCAPES

LOGGER = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1

MODES = ("generational", "async")
EARLY_STOP = ("none", "asha")

# Settings that decide where and how fast trials run but never what they return; a resumed run takes
# them from the new command (it may well run on another machine or cluster).
EXECUTION_SETTINGS = ("ray", "train.device", "train.workers")
# Early stopping lives in RayConfig (the runner builds the scheduler) but decides which trials finish,
# so it is a setting of the run like the GA's, kept on resume.
EARLY_STOP_SETTINGS = ("early_stop", "grace_epochs", "reduction_factor")

# Setting path -> command-line flag, for messages and for telling which flags a user gave explicitly.
FLAGS: dict[str, str] = {
    "ga.generations": "--generations", "ga.population": "--population", "ga.crossover": "--crossover",
    "ga.mutation": "--mutation", "ga.mutation_sigma": "--mutation-sigma", "ga.init": "--init",
    "ga.elite": "--elite", "ga.tournament": "--tournament", "ga.crossover_rate": "--crossover-rate",
    "ga.mutation_rate": "--mutation-rate", "ga.seed": "--seed", "ga.init_sigma": "--init-sigma",
    "ga.drift": "--drift", "ga.bounds": "--bounds",
    "train.data": "--data", "train.model": "--model", "train.epochs": "--epochs", "train.imgsz": "--imgsz",
    "train.batch": "--batch", "train.device": "--device", "train.workers": "--workers",
    "train.max_images": "--max-images",
    "train.extra.surrogate.landscape": "--surrogate-landscape",
    "train.extra.surrogate.seconds": "--surrogate-seconds",
    "train.extra.surrogate.seconds_spread": "--surrogate-spread",
    "train.extra.surrogate.failure_rate": "--surrogate-failure-rate",
    "train.extra.surrogate.noise": "--surrogate-noise",
    "ray.address": "--address", "ray.cpus_per_trial": "--cpus-per-trial",
    "ray.gpus_per_trial": "--gpus-per-trial",
    "ray.max_concurrent": "--max-concurrent", "ray.num_cpus": "--num-cpus", "ray.num_gpus": "--num-gpus",
    "ray.workers_per_trial": "--workers-per-trial", "ray.storage": "--storage",
    "ray.early_stop": "--early-stop", "ray.grace_epochs": "--grace-epochs",
    "ray.reduction_factor": "--reduction-factor",
    "mode": "--mode", "trainer": "--trainer", "hyp": "--hyp", "meta": "--meta",
    "population_dir": "--population-dir",
    "project": "--project", "name": "--name", "exist_ok": "--exist-ok",
}


def trial_train_config(**overrides: Any) -> TrainConfig:
    """The ``TrainConfig`` of evolution trials: no progress bars and no weights unless asked for."""
    values: dict[str, Any] = {"progress": False, "save_weights": False}
    values.update(overrides)
    return TrainConfig(**values)


def surrogate_options(landscape: str = "smooth", noise: float = 0.0, seconds: float = 0.0,
                      seconds_spread: float = 0.0, failure_rate: float = 0.0) -> dict[str, Any]:
    """The ``cfg.extra["surrogate"]`` mapping read by the surrogate trainer."""
    return {"landscape": landscape, "noise": noise, "seconds": seconds, "seconds_spread": seconds_spread,
            "failure_rate": failure_rate}


def default_elite(elite: tuple[int, int], population: int) -> tuple[int, int]:
    """The default elite schedule fitted to a small population: at most a quarter of it (at least 1).

    With more elites than that, a small population breeds one or two new genomes a generation and
    spends the rest of the generation re-listing old ones. Applied only where the user did not choose
    ``--elite``; a schedule they typed is checked as given.
    """
    cap = max(1, population // 4)
    return (min(int(elite[0]), cap), min(int(elite[1]), cap))


@dataclass
class EvolveConfig:
    """Everything one evolution needs; ``evolve.run(cfg)`` takes it, ``orchestrate.py`` builds it.

    ``resume`` is a run folder to continue, or a population YAML that seeds a new run. ``explicit``
    lists the flags the user gave (``"--generations"`` ...): on resuming a run folder an explicit
    ``--generations`` extends the run, and other explicit settings that differ from the saved run are
    reported as ignored.
    """

    ga: GAConfig = field(default_factory=GAConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    train: TrainConfig = field(default_factory=trial_train_config)
    mode: str = "generational"  # generational (a barrier per generation) | async (steady state)
    trainer: str = "detector"
    hyp: str | None = None
    meta: str | None = None
    population_dir: str | None = None
    resume: str | None = None
    project: str = "runs/evolve"
    name: str = "exp"
    exist_ok: bool = False
    explicit: frozenset[str] = frozenset()

    @property
    def seed(self) -> int:
        return self.ga.seed

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the flag of the first out-of-range setting.

        The parts check themselves on construction; they are checked again here because a caller may
        have changed a field since.
        """
        self.ga.__post_init__()
        self.ray.__post_init__()
        try:
            self.train.__post_init__()
        except ValueError as exc:
            raise ConfigError(f"--{str(exc).split()[0].replace('_', '-')}: {exc}") from None
        _check(isinstance(self.trainer, str) and bool(self.trainer.strip()), "trainer", self.trainer,
               "must not be empty")
        _check(self.mode in MODES, "mode", self.mode, f"must be one of {', '.join(MODES)}")
        if "--elite" in self.explicit:
            # The GA caps a default schedule at population - 1; one the user typed must fit as given.
            _check(all(e < self.ga.population for e in self.ga.elite), "ga.elite", self.ga.elite,
                   f"must stay below --population ({self.ga.population}): a generation needs a bred child")
        self._validate_scale_out()
        self._validate_surrogate()

    def _validate_scale_out(self) -> None:
        ray = self.ray
        nproc_for(ray.gpus_per_trial, ray.workers_per_trial)
        _check(ray.early_stop in EARLY_STOP, "ray.early_stop", ray.early_stop,
               f"must be one of {', '.join(EARLY_STOP)}")
        if ray.early_stop == "asha":
            # A trial must get past the grace period with epochs left, or nothing could ever be stopped.
            _check(ray.grace_epochs < self.train.epochs, "ray.grace_epochs", ray.grace_epochs,
                   f"must be below --epochs ({self.train.epochs}) for --early-stop asha to stop anything")

    def _validate_surrogate(self) -> None:
        opts = self.train.extra.get("surrogate")
        if opts is None:
            return
        if not isinstance(opts, Mapping):
            raise ConfigError(f"train.extra['surrogate'] must be a mapping, got {type(opts).__name__}")
        prefix = "train.extra.surrogate."
        if "landscape" in opts:
            _check(opts["landscape"] in LANDSCAPES, prefix + "landscape", opts["landscape"],
                   f"must be one of {', '.join(LANDSCAPES)}")
        for name in ("noise", "seconds"):
            if name in opts:
                _check(_finite(opts[name]) and opts[name] >= 0, prefix + name, opts[name], "must be >= 0")
        for name in ("seconds_spread", "failure_rate"):
            if name in opts:
                _check(_finite(opts[name]) and 0 <= opts[name] <= 1, prefix + name, opts[name],
                       "must be in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (nested dicts, tuples kept) for the checkpoint."""
        out = asdict(self)
        out["explicit"] = sorted(self.explicit)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "EvolveConfig":
        """Rebuild a config saved by ``to_dict``; ConfigError naming ``source`` if it does not fit."""
        try:
            values = dict(data)
            values["ga"] = GAConfig(**values["ga"])
            values["ray"] = RayConfig(**values["ray"])
            values["train"] = TrainConfig(**values["train"])
            values["explicit"] = frozenset(values.get("explicit", ()))
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise TypeError(f"unexpected setting '{unknown[0]}'")
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: saved configuration does not match this version ({exc})") from exc

    def result_settings(self) -> dict[str, Any]:
        """The settings that decide a run's results (everything but execution, run folder and resume)."""
        out = self.to_dict()
        out["early_stop"] = {name: out["ray"][name] for name in EARLY_STOP_SETTINGS}
        for name in ("ray", "resume", "project", "name", "exist_ok", "explicit", "population_dir"):
            out.pop(name)
        for name in ("device", "workers"):
            out["train"].pop(name)
        return out


def resumed_config(saved: EvolveConfig, new: EvolveConfig) -> tuple[EvolveConfig, list[str]]:
    """The configuration a resumed run continues with, and one note per explicit flag that was ignored.

    The saved run's settings win, except an explicit ``--generations`` (the run may be extended) and the
    execution settings, which always come from ``new``. The mode and early stopping are the saved run's.
    """
    merged = copy.deepcopy(saved)
    merged.ray = copy.deepcopy(new.ray)
    for name in EARLY_STOP_SETTINGS:
        setattr(merged.ray, name, getattr(saved.ray, name))
    merged.train.device = new.train.device
    merged.train.workers = new.train.workers
    merged.resume = new.resume
    merged.explicit = new.explicit
    if "--generations" in new.explicit:
        merged.ga.generations = new.ga.generations
    notes = []
    for path, flag in FLAGS.items():
        if flag not in new.explicit or flag == "--generations" or _is_execution(path):
            continue
        old_value, new_value = get_setting(saved, path), get_setting(new, path)
        if old_value != new_value:
            notes.append(f"{flag} {_show(new_value)} ignored: the resumed run keeps {_show(old_value)}")
    return merged, notes


def fingerprint(cfg: EvolveConfig, space: SearchSpace) -> str:
    """A digest of everything that decides results, except the generation count (a run may be extended)."""
    settings = cfg.result_settings()
    settings["ga"].pop("generations")
    blob = {"settings": settings, "base": space.base, "genes": [asdict(g) for g in space.genes]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resumed_from(cfg: EvolveConfig, checkpoint: dict[str, Any], run_dir: Path) -> EvolveConfig:
    """The configuration saved in ``checkpoint`` with this command's --generations and execution settings."""
    source = str(checkpoint_path(run_dir))
    if checkpoint.get("version") != CHECKPOINT_VERSION or "config" not in checkpoint:
        raise ConfigError(f"{source}: not a checkpoint of this version "
                          f"(version {checkpoint.get('version')!r})")
    saved = EvolveConfig.from_dict(checkpoint["config"], source=source)
    merged, notes = resumed_config(saved, cfg)
    for note in notes:
        LOGGER.warning("%s", note)
    merged.validate()
    generation = checkpoint.get("generation")
    if isinstance(generation, int) and merged.ga.generations <= generation:
        raise ConfigError(f"--generations {merged.ga.generations}: the run in {run_dir} is already at "
                          f"generation {generation} (counted from 0); ask for at least {generation + 1} "
                          "generations")
    return merged


def _fits(genome: Any, space: SearchSpace) -> bool:
    return isinstance(genome, (list, tuple)) and len(genome) == len(space)


def check_checkpoint(state: dict[str, Any], run_dir: Path, space: SearchSpace, digest: str,
                     mode: str) -> None:
    """ConfigError naming the checkpoint unless it belongs to this configuration and search space."""
    source = checkpoint_path(run_dir)
    generation, population = state.get("generation"), state.get("population")
    if state.get("mode", "generational") != mode:
        raise ConfigError(f"{source}: checkpoint of a {state.get('mode')!r} run, but its configuration "
                          f"says {mode!r}")
    if not isinstance(generation, int) or generation < 0 or "ga_state" not in state:
        raise ConfigError(f"{source}: checkpoint lacks a valid generation index or GA state")
    if mode == "async":
        # Members are (index, genome, selection value, fitness), pending children (index, trial id, genome).
        bred, pending = state.get("bred"), state.get("pending")
        ok = isinstance(bred, int) and bred >= 0
        ok = ok and isinstance(population, list) and isinstance(pending, list)
        ok = ok and all(isinstance(m, (list, tuple)) and len(m) == 4 and _fits(m[1], space)
                        for m in population)
        ok = ok and all(isinstance(c, (list, tuple)) and len(c) == 3 and _fits(c[2], space)
                        for c in pending)
        if not ok:
            raise ConfigError(f"{source}: async checkpoint lacks a valid bred count, population or pending "
                              f"children for the search space ({len(space)} genes)")
    elif not isinstance(population, list) or not population or not all(_fits(g, space) for g in population):
        raise ConfigError(f"{source}: checkpoint population does not fit the search space "
                          f"({len(space)} genes)")
    if state.get("fingerprint") != digest:
        raise ConfigError(f"{source}: the search space or settings changed since the run started "
                          f"(the meta or hyp file was edited?); restore them or start a new run")


def get_setting(cfg: EvolveConfig, path: str) -> Any:
    """The value at a dotted setting path such as ``ga.elite`` or ``train.extra.surrogate.noise``."""
    value: Any = cfg
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
    return value


def _is_execution(path: str) -> bool:
    if path in {f"ray.{name}" for name in EARLY_STOP_SETTINGS}:
        return False
    return any(path == p or path.startswith(p + ".") for p in EXECUTION_SETTINGS)


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, path: str, value: Any, what: str) -> None:
    if not ok:
        raise ConfigError(f"{FLAGS.get(path, path)} {what}, got {_show(value)}")
