"""The records of a winner validation: ``validation.csv`` (one row per validated seed), the summary of those
rows (mean and sd per candidate, the gain over the base, the Spearman rank correlation between trial and
validated fitness) and ``hyp_validated.yaml`` (the candidate with the best mean validated fitness).

``validation.csv`` is appended and fsync'd one row at a time, like ``evolve.csv``, so a validation killed
at any moment resumes from it: a (candidate, seed) with a row is never trained again. Nothing here writes
any record of the evolution itself.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from evolve.contract import Metrics
from evolve.errors import ConfigError
from evolve.output.records import (METRIC_COLUMNS, METRIC_FIELDS, data_columns, number_cell, per_data_cells,
                                   read_per_data, use_line)
from evolve.output.rundir import atomic_write_text
from evolve.search.keyset import KeySet

CSV_NAME = "validation.csv"
HYP_NAME = "hyp_validated.yaml"
PLOT_NAME = "validation.png"
BASE = "base"  # the candidate label of the base hyp; the others are top1, top2, ...
COLUMNS = ["candidate", "source_trial_id", "seed", "epochs", "status", *METRIC_COLUMNS, "fitness", "seconds"]


def validation_columns(data: Sequence[str] = ()) -> list[str]:
    """The columns of validation.csv; a run on several data sets adds evolve.csv's per-data-set columns
    (``<name>/fitness``, ``<name>/metrics/...``), so a winner's validated gain can be read per data set."""
    return [*COLUMNS, *data_columns(data)]


@dataclass
class Candidate:
    """A hyp to validate: its label, the trial it was selected by (if any) and that trial's fitness."""

    label: str
    hyp: dict[str, float]
    source_trial_id: str = ""
    trial_fitness: float = math.nan


@dataclass
class ValidationRow:
    """One validation run of one candidate with one seed."""

    candidate: str
    source_trial_id: str
    seed: int
    epochs: int
    metrics: Metrics

    @property
    def key(self) -> tuple[str, str, int]:
        return self.candidate, self.source_trial_id, self.seed


def _line(row: ValidationRow, data: Sequence[str]) -> str:
    m = row.metrics
    values = [row.candidate, row.source_trial_id, int(row.seed), int(row.epochs), m.status,
              *(number_cell(getattr(m, METRIC_FIELDS[c])) for c in METRIC_COLUMNS), number_cell(m.fitness),
              number_cell(m.seconds), *per_data_cells(m, data)]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


class ValidationRecords:
    """``run_dir/validation.csv``: read back on open (a torn last line is dropped), appended per seed.
    ``data``: the names of the run's data sets when it trains on several (``evolve.config.trial.data_names``)."""

    def __init__(self, run_dir: str | Path, data: Sequence[str] = ()) -> None:
        self.path = Path(run_dir) / CSV_NAME
        self.data = list(data)
        self.columns = validation_columns(self.data)
        self._rows: list[ValidationRow] = []
        if self.path.is_file():
            self._rows = self._read()

    def _read(self) -> list[ValidationRow]:
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        torn = lines.pop()  # rows end with a newline: text after the last one is a killed writer's
        if not lines:
            return []
        if next(csv.reader([lines[0]])) != self.columns:
            raise ConfigError(f"{self.path}: header is not that of a validation.csv of this version and data "
                              "set(s); move it away to validate again")
        rows = []
        for number, cells in enumerate(csv.reader(lines[1:]), start=2):
            if not cells:
                continue
            if len(cells) != len(self.columns):
                raise ConfigError(f"{self.path}: line {number}: {len(cells)} fields, expected "
                                  f"{len(self.columns)}")
            values = dict(zip(self.columns, cells))
            try:
                per_data = read_per_data(values, self.data)
                metrics = Metrics(**{METRIC_FIELDS[c]: float(values[c]) for c in METRIC_COLUMNS},
                                  fitness=float(values["fitness"]), seconds=float(values["seconds"]),
                                  status=values["status"], per_data=per_data)
                rows.append(ValidationRow(values["candidate"], values["source_trial_id"], int(values["seed"]),
                                          int(values["epochs"]), metrics))
            except ValueError as exc:
                raise ConfigError(f"{self.path}: line {number}: {exc}") from None
        if torn:
            atomic_write_text(self.path, "".join(line + "\n" for line in lines))
        return rows

    def rows(self) -> list[ValidationRow]:
        return list(self._rows)

    def append(self, row: ValidationRow) -> None:
        text = _line(row, self.data)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            text = ",".join(self.columns) + "\n" + text
        with self.path.open("a", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        self._rows.append(row)


@dataclass
class Standing:
    """The validated fitness of one candidate over its seeds."""

    candidate: Candidate
    values: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def sd(self) -> float:
        # The sample sd: with two seeds, their half-difference times sqrt(2).
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0


@dataclass
class Summary:
    """What a validation found: every candidate's standing, the winner, the base and the transfer."""

    standings: list[Standing]
    seeds: int
    epochs: int
    winner: Standing = field(init=False)
    base: Standing = field(init=False)

    def __post_init__(self) -> None:
        self.base = next(s for s in self.standings if s.candidate.label == BASE)
        # The base wins ties: a candidate must do better than the defaults to be handed over.
        self.winner = max(self.standings, key=lambda s: (s.mean, s.candidate.label == BASE))

    @property
    def gain(self) -> float:
        """Relative gain of the winner's mean over the base's (0.1 is +10%)."""
        base = self.base.mean
        return (self.winner.mean - base) / base if base > 0 else math.nan

    @property
    def spread(self) -> float:
        """The seed spread a gain must exceed: the larger sd of the winner's and the base's seeds."""
        return max(self.winner.sd, self.base.sd)

    @property
    def beats_base(self) -> bool:
        return self.winner is not self.base and self.winner.mean - self.base.mean > self.spread

    @property
    def transfer(self) -> float:
        """Spearman rank correlation of trial fitness and mean validated fitness over the candidates."""
        pairs = [(s.candidate.trial_fitness, s.mean) for s in self.standings
                 if math.isfinite(s.candidate.trial_fitness) and math.isfinite(s.mean)]
        return spearman([p[0] for p in pairs], [p[1] for p in pairs])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan below 3 points or for a constant side."""
    if len(x) < 3 or len(x) != len(y):
        return math.nan
    rx, ry = pd.Series(list(x)).rank().to_numpy(), pd.Series(list(y)).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def summarise(candidates: Sequence[Candidate], rows: Sequence[ValidationRow], seeds: int,
              epochs: int) -> Summary:
    """The summary of ``rows`` for ``candidates`` (a failed seed counts with fitness 0: failure is data)."""
    by_label: dict[str, list[float]] = {c.label: [] for c in candidates}
    for row in rows:
        if row.candidate in by_label:
            value = row.metrics.fitness
            by_label[row.candidate].append(float(value) if math.isfinite(value) else 0.0)
    return Summary([Standing(c, by_label[c.label]) for c in candidates], seeds, epochs)


def transfer_text(summary: Summary) -> str:
    """``transfer: Spearman 0.80 between trial and validated fitness (4 hyps)`` with guidance when poor."""
    rho = summary.transfer
    n = len(summary.standings)
    if not math.isfinite(rho):
        return f"transfer: Spearman undefined ({n} hyps, or a tie on one side)"
    text = f"transfer: Spearman {rho:+.2f} between trial and validated fitness ({n} hyps)"
    if rho < 0.5:
        text += ("; the short trials ranked the hyps poorly: lengthen --epochs, or use --early-stop asha "
                 "with a longer --epochs")
    return text


def summary_line(summary: Summary) -> str:
    """The one line a user reads: the validated gain over the base, or plainly that there is none."""
    w, b = summary.winner, summary.base
    of = f"mean of {summary.seeds} seed{'s' if summary.seeds != 1 else ''}, {summary.epochs} epochs"
    if summary.beats_base:
        return (f"validated: {summary.gain * 100:+.1f}% fitness over the base hyp ({of}, sd {w.sd:.4f}): "
                f"{w.candidate.label} {w.mean:.4f} +- {w.sd:.4f} vs base {b.mean:.4f} +- {b.sd:.4f}")
    best = max((s for s in summary.standings if s is not b), key=lambda s: s.mean, default=None)
    other = f"best {best.candidate.label} {best.mean:.4f} +- {best.sd:.4f}" if best else "no candidate"
    return (f"validated: no candidate beats the base hyp by more than the seed spread ({of}): {other} vs "
            f"base {b.mean:.4f} +- {b.sd:.4f}")


def write_validated_hyp(run_dir: Path, summary: Summary, keyset: KeySet) -> Path:
    """``hyp_validated.yaml``: the winner's full key set under a header of its and the base's figures."""
    w, b = summary.winner, summary.base
    path = Path(run_dir) / HYP_NAME
    source = f"trial_id {w.candidate.source_trial_id}" if w.candidate.source_trial_id else "no trial"
    lines = [
        f"# Validated hyperparameters of the evolution in {run_dir}",
        f"# Winner: {w.candidate.label} ({source}), best mean fitness over {summary.seeds} new seeds of "
        f"{summary.epochs} epochs",
        f"# fitness: {w.mean:.6g} +- {w.sd:.6g} (mean +- sd; trial fitness {w.candidate.trial_fitness:.6g})",
        f"# base hyp: {b.mean:.6g} +- {b.sd:.6g}",
        f"# gain over the base: {summary.gain * 100:+.2f}%"
        + ("" if summary.beats_base else " (within the seed spread: no better than the base)"),
        f"# {transfer_text(summary)}",
        use_line(keyset.name, path),
    ]
    hyp = keyset.validate(w.candidate.hyp, source=f"validated {w.candidate.label} hyp")
    body = yaml.safe_dump({k: hyp[k] for k in keyset.keys}, sort_keys=False, default_flow_style=False)
    return atomic_write_text(path, "\n".join(lines) + "\n" + body)

