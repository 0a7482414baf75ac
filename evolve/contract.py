"""The trial contract between the evolution and any trainer: ``Metrics``, statuses, fitness and the tiers
by which a trial's result is ranked.

A trainer is called as ``train(hyp, cfg, report) -> Metrics`` (``evolve.execution.trainers``), where
``cfg`` is a ``TrialConfig`` (``evolve.config.trial``) and ``report(epoch, metrics)`` forwards per-epoch
results. A trainer may return these ``Metrics``, any object with a ``to_dict()`` giving the same fields
(the detector's own ``Metrics``), or a mapping with at least ``map50`` and ``map50_95``.

Three policies are decided here and nowhere else:

- failure is data: a ``failed`` or ``diverged`` trial scores 0 (``sanitised``);
- a result is believed only if it makes sense: a finished or stopped trial whose mAPs, precision or recall
  lie outside [0, 1], or whose metrics or fitness are NaN or infinite, becomes ``failed`` with the
  ``reason`` saying which value (``invalid_reason``, applied by ``sanitised``), so a wrapper returning
  percentages or a NaN never ranks as ``ok`` or becomes the best hyps;
- a finished trial beats a stopped one whatever their fitness, and a stopped one beats a failed one
  (``standing`` and ``selection_value``).

A trial on several data sets (``--data a.yaml,b.yaml``) is the mean of its per-data-set results
(``mean_metrics``): every metric and the fitness are the means, and it is only as good as its worst
status (one failed data set fails the trial).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from evolve.config.trial import TrialConfig

STATUSES = ("ok", "diverged", "failed", "stopped")
FAILED_STATUSES = ("failed", "diverged")

# Weights of the default fitness: 0.1 * mAP50 + 0.9 * mAP50-95, as in YOLOv5.
FITNESS_WEIGHTS = (0.1, 0.9)
# The same as --fitness-weights P,R,MAP50,MAP50_95 (precision, recall, mAP50, mAP50-95).
DEFAULT_FITNESS_WEIGHTS = (0.0, 0.0, *FITNESS_WEIGHTS)
# Metrics that are fractions: outside [0, 1] the trainer measured something else (percentages, a bug).
UNIT_FIELDS = ("precision", "recall", "map50", "map50_95")
# Values a trainer may leave unreported (None); the mAPs and fitness decide selection and must be there.
OPTIONAL_FIELDS = ("precision", "recall", "box_loss", "obj_loss", "cls_loss")
CHECKED_FIELDS = (*UNIT_FIELDS, "box_loss", "obj_loss", "cls_loss", "fitness")
# What is kept of each data set of a trial on several (``Metrics.per_data``), and averaged over them.
PART_FIELDS = (*UNIT_FIELDS, "box_loss", "obj_loss", "cls_loss", "fitness")
REASON_CHARS = 300  # a reason is one line of the records, not a traceback


def fitness(map50: float, map50_95: float) -> float:
    """The single number evolution selects on: 0.1 * mAP50 + 0.9 * mAP50-95 (non-finite counts as 0)."""
    value = FITNESS_WEIGHTS[0] * float(map50) + FITNESS_WEIGHTS[1] * float(map50_95)
    return value if math.isfinite(value) else 0.0


def describe_weights(weights: tuple[float, ...] = DEFAULT_FITNESS_WEIGHTS) -> str:
    """``0.1 * mAP_0.5 + 0.9 * mAP_0.5:0.95``: the fitness formula in the records' column names."""
    names = ("metrics/precision", "metrics/recall", "mAP_0.5", "mAP_0.5:0.95")
    return " + ".join(f"{w:g} * {n}" for w, n in zip(weights, names) if w) or "0"


@dataclass
class Metrics:
    """Validation metrics and mean validation losses of one trial, plus how it ended.

    ``status`` is ``ok`` (finished), ``diverged`` (non-finite loss), ``failed`` (raised, out of memory,
    timed out, or returned metrics that make no sense) or ``stopped`` (ended early by a scheduler; the
    metrics are those it reached). ``reason`` says why a trial failed (empty otherwise). ``per_data``
    holds, for a trial on several data sets, each one's ``PART_FIELDS`` by data-set name.
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
    reason: str = ""
    per_data: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Metrics.status must be one of {STATUSES}, got {self.status!r}")

    def with_fitness(self) -> "Metrics":
        """Return self with ``fitness`` recomputed from the mAPs (0 for a run that did not finish well)."""
        self.fitness = fitness(self.map50, self.map50_95) if self.status in ("ok", "stopped") else 0.0
        return self

    def reweighted(self, weights: tuple[float, ...]) -> "Metrics":
        """Self with ``fitness`` = weights . (precision, recall, mAP50, mAP50-95) when the run finished
        or was stopped (``--fitness-weights``); a failed run keeps 0. The default weights change nothing."""
        if tuple(weights) != DEFAULT_FITNESS_WEIGHTS and self.status in ("ok", "stopped"):
            parts = (self.precision, self.recall, self.map50, self.map50_95)
            value = sum(float(w) * float(p) for w, p in zip(weights, parts))
            self.fitness = value if math.isfinite(value) else 0.0
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_any(cls, value: Any) -> "Metrics":
        """Accept these Metrics, an object whose ``to_dict()`` has their fields (another package's
        Metrics, such as the detector's), or a mapping with at least ``map50`` and ``map50_95``."""
        if isinstance(value, Metrics):
            return value
        if not isinstance(value, Mapping) and callable(getattr(value, "to_dict", None)):
            value = value.to_dict()
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


def mean_metrics(parts: Mapping[str, Metrics]) -> Metrics:
    """One trial's result from its results per data set (in training order): ``PART_FIELDS`` averaged,
    epochs and seconds summed, the worst status (failed or diverged, then stopped, then ok) and its reason
    named by data set; each part kept in ``per_data``."""
    if not parts:
        raise ValueError("no per-data-set results to average")
    rank = {"failed": 0, "diverged": 0, "stopped": 1, "ok": 2}
    name, worst = min(parts.items(), key=lambda kv: rank[kv[1].status])
    out = Metrics(**{f: sum(float(getattr(m, f) or 0.0) for m in parts.values()) / len(parts) for f in PART_FIELDS},
                  epochs=sum(int(m.epochs) for m in parts.values()),
                  seconds=sum(float(m.seconds) for m in parts.values()), status=worst.status,
                  reason=one_line(f"data {name}: {worst.reason}") if worst.reason else "",
                  per_data={n: {f: float(getattr(m, f) or 0.0) for f in PART_FIELDS} for n, m in parts.items()})
    return sanitised(out)


def one_line(text: Any) -> str:
    """A reason as it is recorded: one line, at most ``REASON_CHARS`` characters."""
    line = " ".join(str(text or "").split())
    return line if len(line) <= REASON_CHARS else line[:REASON_CHARS - 3] + "..."


def invalid_reason(metrics: Metrics) -> str:
    """Why a finished or stopped trial's metrics cannot be believed ("" when they can).

    Every checked value must be a finite number, the fractions (mAPs, precision, recall) within [0, 1];
    precision, recall and the losses may be left unreported (None).
    """
    for name in CHECKED_FIELDS:
        value = getattr(metrics, name)
        if value is None and name in OPTIONAL_FIELDS:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"invalid result: {name} is not a number ({value!r})"
        if not math.isfinite(number):
            return f"invalid result: {name} is {number}"
        if name in UNIT_FIELDS and not 0.0 <= number <= 1.0:
            return f"invalid result: {name} {number:g} outside [0, 1]"
    return ""


def sanitised(metrics: Metrics) -> Metrics:
    """The result as the evolution believes it: a failed or diverged trial, or one whose metrics make no
    sense (``invalid_reason``, then ``failed`` with that reason), is worth exactly 0."""
    if metrics.status not in FAILED_STATUSES:
        reason = invalid_reason(metrics)
        if reason:
            metrics = copy.copy(metrics)
            metrics.status, metrics.reason = "failed", reason
    if metrics.status in FAILED_STATUSES and metrics.fitness != 0.0:
        metrics = copy.copy(metrics)
        metrics.fitness = 0.0
    return metrics


def standing(metrics: Metrics) -> tuple[int, float]:
    """(tier, fitness) to compare trials by: tier 2 finished, 1 stopped, 0 failed or diverged.

    A trial stopped early by ASHA never competes as a finished trial of the fitness it had reached,
    and still beats one that failed. A non-finite fitness counts as -inf within its tier.
    """
    tier = {"ok": 2, "stopped": 1}.get(metrics.status, 0)
    try:
        value = float(metrics.fitness)
    except (TypeError, ValueError):
        value = math.nan
    return tier, value if math.isfinite(value) else -math.inf


def selection_value(metrics: Metrics) -> float:
    """The number the GA selects on: ``3 + fitness`` finished (ok), ``1 + fitness`` stopped, 0 failed.

    Fitness lies in [0, 1], so the tiers [3, 4], [1, 2] and 0 never meet (``standing`` in one number).
    """
    tier, value = standing(metrics)
    if tier == 0:
        return 0.0
    return 2.0 * tier - 1.0 + min(1.0, max(0.0, value))


__all__ = ["DEFAULT_FITNESS_WEIGHTS", "FAILED_STATUSES", "FITNESS_WEIGHTS", "Metrics", "STATUSES",
           "TrialConfig", "describe_weights", "fitness", "invalid_reason", "mean_metrics", "one_line", "sanitised",
           "selection_value", "standing"]
