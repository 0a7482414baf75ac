"""What a trial is a proxy for (``--fidelity``): the one place that turns the setting into the length of a
trial and its early stopping.

- ``prefix`` (the default): ``--epochs`` is the target length, the training the user will do. Every trial
  trains that whole schedule and is judged at ASHA rungs (``--grace-epochs``, ``--reduction-factor``): the
  hopeless are stopped (recorded ``stopped``, ranked below every finished trial by
  ``evolve.contract.standing``), survivors reach the full length, and the winners are validated at the same
  length (``--validate-epochs`` defaults to ``--epochs``). ``--early-stop none`` is refused
  (``EvolveConfig.validate``).
- ``compressed``: every trial is a whole schedule of ``--epochs``, a short stand-in for the target;
  ``--early-stop`` applies as given (none unless asked for) and the winners are validated at 3x
  ``--epochs``. It was the only kind before ``--fidelity`` existed, and a run saved without the setting
  resumes as one.

Why ``prefix`` is the default: on BCCD (the tuning set of this choice) at equal trial-epochs it ranked
hyps as the target length does (Spearman +0.94 over 6 validated hyps) where ``compressed`` did not
(-0.14); docs/evolve-fidelity.md has the runs. Its first rung follows the base hyp's warmup unless
``--grace-epochs`` is given (``default_grace``, decided by ``resolve_grace`` before a run's fingerprint);
a target too short for a rung after the warmup trains every trial to the end. No schedule-aware or
extrapolating mode is offered without evidence.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, Optional

# The functions take an EvolveConfig; it is not imported, since evolve.config.run imports this module.

FIDELITIES = ("prefix", "compressed")
DEFAULT_FIDELITY = "prefix"
# A run saved without the setting began before it existed, when every trial was compressed.
SAVED_WITHOUT = "compressed"
COMPRESSION = 3  # a compressed trial stands in for a target 3x its length, the default validation length


def trial_epochs(cfg: Any) -> int:
    """Epochs a trial of ``cfg`` trains when nothing stops it: ``--epochs`` under either fidelity."""
    return int(cfg.train.epochs)


def validation_epochs(cfg: Any) -> int:
    """The length the winners of ``cfg`` are validated at: ``--validate-epochs``, else the target length
    (``--epochs`` under ``prefix``, 3x ``--epochs`` under ``compressed``)."""
    if cfg.validation.epochs is not None:
        return int(cfg.validation.epochs)
    return int(cfg.train.epochs) * (1 if cfg.fidelity == "prefix" else COMPRESSION)


def early_stop(cfg: Any) -> str:
    """The early stopping the trials run with: ``--early-stop`` when given, else the fidelity's own (``prefix``
    judges at ASHA rungs, ``compressed`` stops nothing)."""
    if cfg.ray.early_stop is not None:
        return cfg.ray.early_stop
    return "asha" if cfg.fidelity == "prefix" else "none"


def trial_configs(cfg: Any) -> tuple[Any, Any]:
    """Copies of the run's RayConfig and TrialConfig as the trials of its fidelity run them: a ``prefix``
    run whose target has no room for a rung after the warmup stops nothing."""
    ray_cfg = copy.deepcopy(cfg.ray)
    grace = grace_epochs(cfg)
    ray_cfg.early_stop = early_stop(cfg) if grace is not None else "none"
    ray_cfg.grace_epochs = grace or 1
    return ray_cfg, cfg.train.replace(epochs=trial_epochs(cfg))


def default_grace(cfg: Any, warmup: Optional[float]) -> Optional[int]:
    """``--grace-epochs`` when not given: under ``prefix`` the first epoch after the base hyp's warmup, or
    None (no rung: every trial trains to the end) when that is not below the target length; otherwise (and
    without a warmup key) 1.

    On BCCD ``prefix`` with rungs within the 3-epoch warmup (epochs 1 and 3) ranked hyps with Spearman
    +0.43; with its first rung at epoch 4, +0.94 (docs/evolve-fidelity.md)."""
    if cfg.fidelity != "prefix" or not warmup:
        return 1
    grace = max(1, math.floor(warmup) + 1)
    return grace if grace < trial_epochs(cfg) else None


def grace_epochs(cfg: Any) -> Optional[int]:
    """The first rung epoch of ``cfg``: ``--grace-epochs``; while it is unset, 1 under ``compressed`` (its
    default) and None under ``prefix`` (no rung yet: ``resolve_grace`` decides it as a run starts, and
    leaves it None when the target is too short for a rung after the warmup)."""
    if cfg.ray.grace_epochs is not None:
        return int(cfg.ray.grace_epochs)
    return None if cfg.fidelity == "prefix" else 1


def resolve_grace(cfg: Any, base_hyp: Mapping[str, Any]) -> Any:
    """``cfg`` with ``--grace-epochs`` decided (``default_grace``) when it was left unset: a copy, so the
    caller's config is not changed; ``cfg`` itself when it is set (a resumed run keeps the saved one)."""
    if cfg.ray.grace_epochs is not None:
        return cfg
    out = copy.deepcopy(cfg)
    out.ray.grace_epochs = default_grace(cfg, base_hyp.get("warmup_epochs"))
    return out


def rung_epochs(grace: int, reduction: float, max_t: int) -> list[int]:
    """The epochs at which ASHA (``evolve.execution.asha.epoch_asha``) judges a trial of ``max_t``
    epochs: the first epoch at or past each milestone ``grace * reduction**k`` below ``max_t``."""
    if grace < 1 or reduction <= 1 or max_t <= grace:
        return []
    count = int(math.log(max_t / grace) / math.log(reduction) + 1)  # Ray's number of rungs
    epochs = {math.ceil(grace * reduction ** k - 1e-9) for k in range(count)}
    return sorted(e for e in epochs if e < max_t)


def warmup_warning(rung_list: list[int], warmup_epochs: Optional[float]) -> Optional[str]:
    """A warning when the first rung falls within the base hyp's warmup, else None.

    Fitness there is mostly noise: on BCCD (20-epoch prefix trials, warmup 3 epochs) every trial's fitness
    at epochs 1 and 3 lay between 0.005 and 0.1, against 0.50 at the end (docs/benchmarks.md), so ASHA
    stopped trials on noise."""
    if not rung_list or not warmup_epochs or rung_list[0] > warmup_epochs:
        return None
    return (f"the first rung (epoch {rung_list[0]}) is within the base hyp's warmup ({warmup_epochs:g} epochs): "
            f"fitness there is mostly noise, so trials are stopped on little evidence; a first rung after the "
            f"warmup (--grace-epochs {math.floor(warmup_epochs) + 1}) judges on more")


def rungs(cfg: Any) -> list[int]:
    """The rung epochs of ``cfg``'s trials; none without early stopping or a first rung."""
    grace = grace_epochs(cfg)
    if early_stop(cfg) != "asha" or grace is None:
        return []
    return rung_epochs(grace, cfg.ray.reduction_factor, trial_epochs(cfg))
