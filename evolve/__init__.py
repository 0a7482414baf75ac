"""Evolution of YOLO hyperparameters: search space, DEAP genetic algorithm, Ray Tune execution, records.

``evolve.run(config)`` is the main job and ``orchestrate.py`` its command line; both take the same
``EvolveConfig``, and the same settings give the same run:

    import evolve
    cfg = evolve.EvolveConfig(ga=evolve.GAConfig(population=8, generations=5, seed=1), trainer="surrogate")
    evolve.run(cfg)                                    # or, from flags:
    evolve.run(evolve.config_from_argv(["--trainer", "surrogate", "--population", "8", "--generations", "5",
                                        "--seed", "1"]))

The package is grouped by what changes together:

- ``config/``: one dataclass per concern (GA, Ray, trial, run), each field with its flag; at the bottom;
- ``contract.py``: the trial contract (Metrics, statuses, fitness, how results rank);
- ``search/``: key sets, search space, GA, baselines, surrogate landscapes (pure: no Ray, no run folder);
- ``execution/``: trial jobs, the Ray Tune runner, the trainable, DDP and the trainer plug-ins;
- ``loops/``: planning, the checkpoint, the generational and steady-state loops, winner validation;
- ``output/``: records (the evolution's and the validation's), run folder, plots, progress, console;
- ``driver.py``: ``run()``.

Importing this package loads nothing heavy: ``run`` and the configuration classes are imported on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from evolve.config import (
        EvolveConfig,
        GAConfig,
        RayConfig,
        SurrogateOptions,
        TrialConfig,
        ValidationConfig,
        config_from_argv,
    )
    from evolve.driver import run

# name -> the module it lives in; Ray, DEAP and pandas load only when an evolution is actually run.
_EXPORTS = {"run": "evolve.driver", **{name: "evolve.config" for name in (
    "EvolveConfig", "GAConfig", "RayConfig", "SurrogateOptions", "TrialConfig", "ValidationConfig",
    "config_from_argv")}}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'evolve' has no attribute {name!r}")
