"""Evolution of YOLO hyperparameters: search space, DEAP genetic algorithm, Ray Tune execution, records.

``evolve.run(config)`` is the main job; ``orchestrate.py`` is its command line. The package is grouped by
what changes together:

- ``config/``: one dataclass per concern (GA, Ray, trial, run), each field with its flag; at the bottom;
- ``contract.py``: the trial contract (Metrics, statuses, fitness, how results rank);
- ``search/``: key sets, search space, GA, baselines, surrogate landscapes (pure: no Ray, no run folder);
- ``execution/``: trial jobs, the Ray Tune runner, the trainable, DDP and the trainer plug-ins;
- ``loops/``: planning, the checkpoint, the generational and steady-state loops, winner validation;
- ``output/``: records (the evolution's and the validation's), run folder, plots, progress, console;
- ``driver.py``: ``run()``.

Importing this package loads nothing heavy: ``run`` and ``EvolveConfig`` are imported on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from evolve.config.run import EvolveConfig
    from evolve.driver import run

__all__ = ["EvolveConfig", "run"]


def __getattr__(name: str) -> Any:
    # Ray, DEAP and pandas load only when an evolution is actually configured or run.
    if name == "run":
        from evolve.driver import run

        return run
    if name == "EvolveConfig":
        from evolve.config.run import EvolveConfig

        return EvolveConfig
    raise AttributeError(f"module 'evolve' has no attribute {name!r}")
