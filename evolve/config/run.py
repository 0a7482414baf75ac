"""Configuration of one evolution (``EvolveConfig``) and the rules for resuming a run with a new command.

An evolution is configured by five parts: the GA (``GAConfig``), Ray execution (``RayConfig``), every
trial's training (``TrialConfig``), the validation of its winners (``ValidationConfig``) and the run
itself (``EvolveConfig``'s own fields: mode, trainer, search-space files, seeds, run folder). A resumed
run keeps the settings it was started with, because changing the GA, the mode, early stopping or the
trials halfway would make its records meaningless; only the generation count may be extended, and the
execution settings (which machines, how many trials at once, where Tune stores its records) follow the
new command since they cannot change a result.
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Iterator, Mapping

from evolve.config.fidelity import (
    COMPRESSION,
    DEFAULT_FIDELITY,
    FIDELITIES,
    SAVED_WITHOUT,
    early_stop,
    grace_epochs,
    trial_epochs,
)
from evolve.config.fields import Flag, check_fields, setting
from evolve.config.ga import SEED_MAX, GAConfig
from evolve.config.ray import RayConfig
from evolve.config.trial import EXECUTION_FIELDS, MODEL_SIZES, TrialConfig, data_sets
from evolve.config.winners import ValidationConfig
from evolve.errors import ConfigError

MODES = ("generational", "async")

# Settings that decide where and how fast trials run but never what they return; a resumed run takes
# them from the new command (it may well run on another machine or cluster).
EXECUTION_SETTINGS = ("ray", *(f"train.{name}" for name in EXECUTION_FIELDS), "max_failed_generations",
                      "quiet")
# Early stopping lives in RayConfig (the runner builds the scheduler) but decides which trials finish,
# so it is a setting of the run like the GA's, kept on resume.
EARLY_STOP_SETTINGS = ("early_stop", "grace_epochs", "reduction_factor")
# Winner validation runs after the evolution and changes none of its results: a resumed run validates
# as it was started, unless its new command names validation flags.
VALIDATION = "validation"
# Saved with every prefix run since --epochs became its target length; one saved without it is older.
TARGET_MARK = "prefix_epochs_are_target"
_EVOLUTION = "evolution"
_OUTPUT = "output"


@dataclass
class EvolveConfig:
    """Everything one evolution needs; ``evolve.run(cfg)`` takes it, ``evolve.config_from_argv`` (and so
    ``orchestrate.py``) builds it from flags. Built in Python or from flags, the same settings give the
    same run: every policy is applied here (see ``apply_policies``), none by the command line.

    ``resume`` is a run folder to continue, or a population YAML that seeds a new run. ``explicit``
    lists the flags the user gave (``"--generations"`` ...): on resuming a run folder an explicit
    ``--generations`` extends the run, and other explicit settings that differ from the saved run are
    reported as ignored. ``config_from_argv`` fills it in; from Python, name the flags of the settings
    you chose, e.g. ``explicit={"--generations"}`` to extend a resumed run.
    """

    ga: GAConfig = field(default_factory=GAConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    train: TrialConfig = field(default_factory=TrialConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    mode: str = setting("generational", "--mode", "generational: a barrier per generation; async: a "
                        "steady-state GA that breeds a child the moment any trial ends, so no slot waits "
                        "for the slowest trial", choices=MODES, group=_EVOLUTION)
    fidelity: str = setting(DEFAULT_FIDELITY, "--fidelity", "what a trial is a proxy for: prefix: --epochs is "
                            "the target length; each trial trains it, judged at ASHA rungs (--grace-epochs, "
                            "--reduction-factor), the hopeless stopped, survivors reach the end, winners "
                            "validated at it; compressed: each trial a whole schedule of --epochs standing in "
                            "for one 3x longer", choices=FIDELITIES, group="trials")
    trainer: str = setting("detector", "--trainer", "what trains one hyp: the built-in detector, the "
                           "analytic surrogate, Ultralytics models (an optional extra), or your own function "
                           "trainer(hyp, cfg, report=None)",
                           metavar="detector|surrogate|ultralytics|package.module:function", group="trials")
    hyp: str | None = setting(None, "--hyp", "base hyp YAML, the first seed and the source of frozen keys "
                              "(default: the trainer's: hyps/hyp.scratch-adamw.yaml, or hyps/hyp.scratch-low.yaml "
                              "with --optimizer SGD; hyps/hyp.ultralytics.yaml for --trainer ultralytics)", group=_EVOLUTION)
    meta: str | None = setting(None, "--meta", "search-space YAML: evolve/low/high/scale per key (default: "
                               "the trainer's: hyps/meta.yaml, hyps/meta.ultralytics.yaml for --trainer "
                               "ultralytics)", group=_EVOLUTION)
    population_dir: str | None = setting(None, "--population-dir", "folder of hyp or population YAMLs added "
                                         "to the seeds of generation 0 (default: none)", metavar="DIR",
                                         group=_EVOLUTION)
    resume: str | None = setting(None, "--resume", "RUN_DIR: continue that run exactly (its saved settings "
                                 "win, except --generations); FILE.yaml: start a new run seeded with that "
                                 "population (default: none)", metavar="FILE.yaml|RUN_DIR", group=_EVOLUTION)
    project: str = setting("runs/evolve", "--project", "folder of runs", group=_OUTPUT)
    name: str = setting("exp", "--name", "run name; exp2, exp3 ... when taken", group=_OUTPUT)
    exist_ok: bool = setting(False, "--exist-ok", "use PROJECT/NAME even if it exists (a run with "
                             "evolve.csv is refused: use --resume)", parse=bool, group=_OUTPUT)
    report: str | None = setting(None, "--report", "write RUN_DIR/report.html from that run's files and exit "
                                 "(no trial runs); also while the run goes on (default: none)",
                                 metavar="RUN_DIR", optional=True, group=_OUTPUT)
    quiet: bool = setting(False, "--quiet", "no live display on a terminal and no heartbeat lines "
                          "elsewhere: one line per finished trial (on a terminal, one line redrawn in place)",
                          parse=bool, group=_OUTPUT)
    max_failed_generations: int = setting(1, "--max-failed-generations", "stop the run after N generations "
                                          "in a row whose trials all failed with one reason (async: N x "
                                          "population such trials in a row); 0: never", parse=int, low=0,
                                          metavar="N", group="trials")
    explicit: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.apply_policies()

    @property
    def seed(self) -> int:
        return self.ga.seed

    def apply_policies(self) -> None:
        """Apply the run-wide rules that tie one part of the configuration to another, in place.

        Trials train with the run's seed (``ga.seed``): ``train.seed`` follows it and is not set on its
        own. Rules within one part live in that part: the default elite schedule is fitted to the
        population (``GAConfig.elite_schedule``), an empty Ray address means an embedded Ray
        (``RayConfig``). Run on construction and again by ``validate``, so a field changed since counts.
        """
        self.explicit = frozenset(self.explicit)
        self.train.seed = self.ga.seed

    def validate(self) -> None:
        """Apply the policies (``apply_policies``), then raise ``ConfigError`` naming the flag of the first
        setting out of range or out of step.

        Each part checks its own fields on construction (``evolve.config.fields``); they are checked
        again here because a caller may have changed a field since.
        """
        self.apply_policies()
        self.ga.__post_init__()
        self.ray.__post_init__()
        self.train.__post_init__()
        self.validation.__post_init__()
        check_fields(self)
        check_name(self.name)
        top_seed = self.ga.seed + self.validation.seeds  # validation retrains with seed + 1 .. seed + S
        if top_seed > SEED_MAX:
            raise ConfigError(f"--seed {self.ga.seed} with --validate-seeds {self.validation.seeds}: "
                              f"validation seeds run to {top_seed}, past {SEED_MAX} (numpy's seed range); "
                              "choose a smaller --seed")
        if not isinstance(self.trainer, str) or not self.trainer.strip():
            raise ConfigError(f"--trainer must not be empty, got {self.trainer!r}")
        if self.trainer == "detector" and self.train.model not in MODEL_SIZES:
            raise ConfigError(f"--model must be one of {', '.join(MODEL_SIZES)} for --trainer detector, got "
                              f"{self.train.model!r}")
        if self.report and (self.resume or self.validation.run_dir):
            raise ConfigError("--report RUN_DIR only writes the report of a run: it excludes --resume and "
                              "--validate")
        if self.validation.run_dir and self.resume:
            raise ConfigError("--validate and --resume exclude each other: --validate RUN_DIR validates a "
                              "finished run, --resume RUN_DIR continues one (and validates it at its end)")
        if self.fidelity == "prefix" and self.ray.early_stop == "none" and not self._continues_a_run():
            # A resumed or validated run keeps its own fidelity and early stopping (``resumed_config``).
            raise ConfigError("--early-stop none: --fidelity prefix stops the hopeless trials at ASHA rungs; "
                              "drop --early-stop or use --fidelity compressed")
        self.validation.check_sentinels(self.ga.population, self.ga.generations)
        length = trial_epochs(self)
        grace = grace_epochs(self)
        if early_stop(self) != "none" and grace is not None and grace >= length:
            # A trial must get past the grace period with epochs left, or nothing could ever be stopped.
            raise ConfigError(f"--grace-epochs must be below --epochs ({self.train.epochs}) for "
                              f"--early-stop {early_stop(self)} to stop anything, got "
                              f"{grace}")

    def _continues_a_run(self) -> bool:
        return bool(self.validation.run_dir) or bool(self.resume and os.path.isdir(self.resume))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (nested dicts, tuples kept) for the checkpoint."""
        out = asdict(self)
        out["explicit"] = sorted(self.explicit)
        if out["ray"]["early_stop"] is None:
            # Saved as the default was before the fidelity decided it, so a run's checkpoint and fingerprint
            # are what they were; from_dict reads it back.
            out["ray"]["early_stop"] = "none"
        if self.fidelity == "prefix":
            out[TARGET_MARK] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config", upgrade: bool = True) -> "EvolveConfig":
        """Rebuild a config saved by ``to_dict``; ConfigError naming ``source`` if it does not fit.

        A run saved without ``fidelity`` is ``compressed``. A ``prefix`` run saved before ``--epochs`` was
        its target length trained the validation length (``--validate-epochs``, 3x ``--epochs``; ``--epochs``
        with validation off): ``upgrade`` makes that its ``--epochs``, so it goes on as it began (its
        checkpoint's fingerprint is brought along by ``evolve.loops.checkpoint.upgraded``)."""
        try:
            values = dict(data)
            values.setdefault("fidelity", SAVED_WITHOUT)
            target = bool(values.pop(TARGET_MARK, False))
            # A run saved before ageing existed had none; it resumes without it, exactly as it began.
            values["ga"] = GAConfig(**{"age": 0.0, **values["ga"]})
            values["ray"] = RayConfig(**values["ray"])
            if values.get("fidelity") == "prefix" and values["ray"].early_stop == "none":
                # A prefix run saves "none" only as its default (an explicit one is refused): ASHA.
                values["ray"].early_stop = None
            values["train"] = TrialConfig(**values["train"])
            values[VALIDATION] = ValidationConfig(**values.get(VALIDATION, {}))
            if values["fidelity"] == "prefix" and not target and upgrade:
                v = values[VALIDATION]
                epochs = values["train"].epochs
                length = (v.epochs or COMPRESSION * epochs) if v.top > 0 else epochs
                values["train"] = values["train"].replace(epochs=int(length))
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
        for name in ("ray", VALIDATION, "resume", "report", "quiet", "project", "name", "exist_ok",
                     "explicit", "population_dir", "max_failed_generations"):
            out.pop(name)
        for name in EXECUTION_FIELDS:
            out["train"].pop(name)
        return out


def check_name(name: str) -> None:
    """ConfigError unless ``--name`` is one folder name inside ``--project``: not empty, no path separator,
    not ``.`` or ``..`` (an empty name would number the project folder itself, ``a/b`` nests folders, and
    ``../x`` or an absolute name writes outside the project)."""
    seps = {"/", os.sep, os.altsep} - {None}
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or "\0" in name \
            or any(sep in name for sep in seps):
        raise ConfigError(f"--name must be one folder name inside --project (not empty, no '/', not '.' or "
                          f"'..'), got {name!r}")


def settings(cls: type = EvolveConfig, prefix: str = "") -> Iterator[tuple[str, Flag]]:
    """(dotted setting path, flag) of every flagged setting of ``cls`` and the configs inside it."""
    for f in fields(cls):
        spec = f.metadata.get("flag")
        if spec is not None:
            yield prefix + f.name, spec
        elif isinstance(f.default_factory, type) and is_dataclass(f.default_factory):  # type: ignore[misc]
            yield from settings(f.default_factory, f"{prefix}{f.name}.")


def flag_paths() -> dict[str, str]:
    """Setting path -> command-line flag, for messages and for telling which flags a user gave."""
    return {path: spec.flag for path, spec in settings()}


def resumed_config(saved: EvolveConfig, new: EvolveConfig) -> tuple[EvolveConfig, list[str]]:
    """The configuration a resumed run continues with, and one note per explicit flag that was ignored.

    The saved run's settings win, except an explicit ``--generations`` (the run may be extended), explicit
    validation flags, and the execution settings, which always come from ``new``. The mode and early
    stopping are the saved run's.
    """
    merged = copy.deepcopy(saved)
    merged.ray = copy.deepcopy(new.ray)
    for name in EARLY_STOP_SETTINGS:
        setattr(merged.ray, name, getattr(saved.ray, name))
    for name in EXECUTION_FIELDS:
        setattr(merged.train, name, getattr(new.train, name))
    merged.max_failed_generations = new.max_failed_generations
    merged.quiet = new.quiet
    for path, flag in flag_paths().items():
        if path.startswith(VALIDATION + ".") and flag in new.explicit:
            setattr(merged.validation, path.split(".", 1)[1], get_setting(new, path))
    merged.resume = new.resume
    merged.explicit = new.explicit
    if "--generations" in new.explicit:
        merged.ga.generations = new.ga.generations
    if "--fitness-weights" in new.explicit and new.train.fitness_weights != saved.train.fitness_weights:
        # Fitnesses of the two weightings cannot be compared, so one run cannot select on both.
        raise ConfigError(f"--fitness-weights {_show(new.train.fitness_weights)}: the resumed run selects with "
                          f"{_show(saved.train.fitness_weights)}; start a new run to change the weights")
    if "--data" in new.explicit and data_sets(new.train.data) != data_sets(saved.train.data):
        # The records' columns and every fitness so far belong to the saved data sets.
        was = saved.train.data or "the embedded data set"
        raise ConfigError(f"--data {new.train.data}: the resumed run trains on {was}; start a new run to "
                          "change the data sets")
    notes = []
    for path, flag in flag_paths().items():
        if flag not in new.explicit or path in ("ga.generations", "resume") or _is_execution(path):
            continue
        old_value, new_value = get_setting(saved, path), get_setting(new, path)
        if old_value != new_value:
            notes.append(f"{flag} {_show(new_value)} ignored: the resumed run keeps {_show(old_value)}")
    return merged, notes


def get_setting(cfg: EvolveConfig, path: str) -> Any:
    """The value at a dotted setting path such as ``ga.elite`` or ``train.surrogate.noise``."""
    value: Any = cfg
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
    return value


def _is_execution(path: str) -> bool:
    if path.startswith(VALIDATION + "."):
        return True  # not execution, but never ignored: an explicit one is taken from the new command
    if path in {f"ray.{name}" for name in EARLY_STOP_SETTINGS}:
        return False
    return any(path == p or path.startswith(p + ".") for p in EXECUTION_SETTINGS)


def _show(value: Any) -> str:
    if value is None:
        return "the default"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)
