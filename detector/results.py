"""The result of one training run (``Metrics``) and the fitness that evolution selects on."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

STATUSES = ("ok", "diverged", "failed", "stopped")


def fitness(map50: float, map50_95: float) -> float:
    """The single number evolution selects on: 0.1 * mAP50 + 0.9 * mAP50-95 (non-finite counts as 0)."""
    value = 0.1 * float(map50) + 0.9 * float(map50_95)
    return value if math.isfinite(value) else 0.0


@dataclass
class Metrics:
    """Validation metrics and mean validation losses of one run, plus how it ended.

    ``status`` is ``ok`` (finished), ``diverged`` (non-finite loss), ``failed`` (raised, out of memory)
    or ``stopped`` (ended early by a scheduler; the metrics are those it reached).
    """

    precision: float = 0.0
    recall: float = 0.0
    map50: float = 0.0
    map50_95: float = 0.0
    box_loss: float = 0.0
    obj_loss: float = 0.0
    cls_loss: float = 0.0
    fitness: float = 0.0
    epochs: int = 0
    seconds: float = 0.0
    status: str = "ok"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Metrics.status must be one of {STATUSES}, got {self.status!r}")

    def with_fitness(self) -> "Metrics":
        """Return self with ``fitness`` recomputed from the mAPs (0 for a run that did not finish well)."""
        self.fitness = fitness(self.map50, self.map50_95) if self.status in ("ok", "stopped") else 0.0
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_any(cls, value: Any) -> "Metrics":
        """Accept a ``Metrics`` or a mapping with at least ``map50`` and ``map50_95`` (a user's trainer)."""
        if isinstance(value, Metrics):
            return value
        if isinstance(value, Mapping):
            missing = [k for k in ("map50", "map50_95") if k not in value]
            if missing:
                raise ValueError(f"trainer result lacks {', '.join(missing)}: got keys {sorted(value)}")
            known = {f.name for f in fields(cls)}
            out = cls(**{k: v for k, v in value.items() if k in known})
            if "fitness" not in value:
                out.with_fitness()
            return out
        raise TypeError(f"trainer must return Metrics or a mapping, got {type(value).__name__}")
