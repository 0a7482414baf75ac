"""Evolution of YOLO hyperparameters: search space, DEAP genetic algorithm, Ray Tune execution, records.

``evolve.run(config)`` is the main job; ``orchestrate.py`` is its command line. Importing this package
loads nothing heavy: ``run`` and ``EvolveConfig`` are imported on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from evolve.config import EvolveConfig
    from evolve.driver import run

__all__ = ["EvolveConfig", "run"]


def __getattr__(name: str) -> Any:
    # Ray, DEAP and pandas load only when an evolution is actually configured or run.
    if name == "run":
        from evolve.driver import run

        return run
    if name == "EvolveConfig":
        from evolve.config import EvolveConfig

        return EvolveConfig
    raise AttributeError(f"module 'evolve' has no attribute {name!r}")
