"""What a trial is a proxy for (``--fidelity``): the one place that turns the setting into the length of a
trial and its early stopping.

- ``compressed`` (the default): every trial is a whole schedule of ``--epochs``, as it always was;
  ``--early-stop`` applies as given (none unless asked for).
- ``prefix``: every trial trains the target schedule, the length the winners are validated at
  (``--validate-epochs``, 3x ``--epochs`` by default; ``--epochs`` when validation is off), and is judged
  at ASHA rungs (``--grace-epochs``, ``--reduction-factor``): the hopeless are stopped (recorded
  ``stopped``, ranked below every finished trial by ``evolve.contract.standing``), survivors reach the full
  length. ``--early-stop none`` is refused (``EvolveConfig.validate``).

The default is ``compressed``, although the evidence now favours ``prefix`` with its first rung after
the base hyp's warmup: on BCCD at equal trial-epochs it ranked hyps as the target length does (Spearman
+0.94 over 6 hyps) where ``compressed`` did not (-0.14); docs/evolve-fidelity.md says why the default has
not moved yet (under ``prefix`` the trial length is the validation length, 3x ``--epochs``). Under
``prefix`` the first rung follows the base hyp's warmup unless ``--grace-epochs`` is given
(``default_grace``, decided by ``resolve_grace`` before a run's fingerprint). No schedule-aware or
extrapolating mode is offered without evidence.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, Optional

# The functions take an EvolveConfig; it is not imported, since evolve.config.run imports this module.

FIDELITIES = ("compressed", "prefix")


def trial_epochs(cfg: Any) -> int:
    """Epochs a trial of ``cfg`` trains when nothing stops it: its target length."""
    if cfg.fidelity == "prefix" and cfg.validation.top > 0:
        return cfg.validation.epochs_for(cfg.train.epochs)
    return int(cfg.train.epochs)


def target_source(cfg: Any) -> str:
    """The flag that sets the trial length, for messages: ``--epochs`` or ``--validate-epochs``."""
    if cfg.fidelity == "prefix" and cfg.validation.top > 0:
        return "--validate-epochs" if cfg.validation.epochs is not None else "--validate-epochs (3x --epochs)"
    return "--epochs"


def early_stop(cfg: Any) -> str:
    """The early stopping the trials run with: ``--early-stop`` when given, else the fidelity's own (``prefix``
    judges at ASHA rungs, ``compressed`` stops nothing)."""
    if cfg.ray.early_stop is not None:
        return cfg.ray.early_stop
    return "asha" if cfg.fidelity == "prefix" else "none"


def trial_configs(cfg: Any) -> tuple[Any, Any]:
    """Copies of the run's RayConfig and TrialConfig as the trials of its fidelity run them."""
    ray_cfg = copy.deepcopy(cfg.ray)
    ray_cfg.early_stop = early_stop(cfg)
    ray_cfg.grace_epochs = grace_epochs(cfg)
    return ray_cfg, cfg.train.replace(epochs=trial_epochs(cfg))


def default_grace(cfg: Any, warmup: Optional[float]) -> int:
    """``--grace-epochs`` when not given: under ``prefix`` the first epoch after the base hyp's warmup,
    kept below the target length so that a rung remains; otherwise (and without a warmup key) 1.

    On BCCD ``prefix`` with rungs within the 3-epoch warmup (epochs 1 and 3) ranked hyps with Spearman
    +0.43; with its first rung at epoch 4, +0.94 (docs/evolve-fidelity.md)."""
    if cfg.fidelity != "prefix" or not warmup:
        return 1
    return max(1, min(math.floor(warmup) + 1, trial_epochs(cfg) - 1))


def grace_epochs(cfg: Any) -> int:
    """The first rung epoch of ``cfg``: ``--grace-epochs``, or 1 while it is unset (before ``resolve_grace``
    decides it as a run starts; the checks of a config read it so, as the smallest it can become)."""
    return cfg.ray.grace_epochs or 1


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
    """The rung epochs of ``cfg``'s trials; none without early stopping."""
    if early_stop(cfg) != "asha":
        return []
    return rung_epochs(grace_epochs(cfg), cfg.ray.reduction_factor, trial_epochs(cfg))
