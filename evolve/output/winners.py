"""The records of a winner validation: ``validation.csv`` (one row per validated seed), the summary of those
rows (per hyp its mean and sd, and the paired difference to the base over the same seeds with its 95% t
interval; over all hyps the transfer coefficient, Spearman between trial and validated fitness, with n and
its permutation p), written as ``validation_summary.csv``, the verdict line, and ``hyp_validated.yaml``:
the top candidate whose interval lies above 0 (the largest paired gain among them), else the base hyp.

``validation.csv`` is appended and fsync'd one row at a time, like ``evolve.csv``, so a validation killed
at any moment resumes from it: a (candidate, seed) with a row is never trained again. The summary is
derived from it and rewritten whole. Nothing here writes any record of the evolution itself.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml

from evolve.contract import Metrics
from evolve.errors import ConfigError
from evolve.output.records import (METRIC_COLUMNS, METRIC_FIELDS, data_columns, number_cell, per_data_cells,
                                   read_per_data, use_line)
from evolve.output.rundir import atomic_write_text
from evolve.output.verdict_stats import LEVEL, Paired, paired_difference, spearman, spearman_p
from evolve.search.keyset import KeySet

CSV_NAME = "validation.csv"
HYP_NAME = "hyp_validated.yaml"
PLOT_NAME = "validation.png"
SUMMARY_NAME = "validation_summary.csv"
BASE = "base"  # the candidate label of the base hyp
TOP = "top"  # top1, top2, ...: the best distinct hyps of the run, the candidates for hyp_validated.yaml
SENTINEL = "sentinel"  # sentinel1, ...: hyps from lower in the ranking, there to calibrate the transfer
COLUMNS = ["candidate", "source_trial_id", "seed", "epochs", "status", *METRIC_COLUMNS, "fitness", "seconds"]


def validation_columns(data: Sequence[str] = ()) -> list[str]:
    """The columns of validation.csv; a run on several data sets adds evolve.csv's per-data-set columns
    (``<name>/fitness``, ``<name>/metrics/...``), so a winner's validated gain can be read per data set."""
    return [*COLUMNS, *data_columns(data)]


SUMMARY_COLUMNS = ["candidate", "role", "rank", "source_trial_id", "trial_fitness", "epochs", "seeds", "mean",
                   "sd", "diff_mean", "diff_low", "diff_high", "pairs", "above_base", "chosen",
                   "transfer_spearman", "transfer_n", "transfer_p"]


@dataclass
class Candidate:
    """A hyp to validate: its label, the trial it was selected by (if any), that trial's fitness and its
    place among the run's distinct hyps ranked as the GA ranks them (1 the best; 0 for the base)."""

    label: str
    hyp: dict[str, float]
    source_trial_id: str = ""
    trial_fitness: float = math.nan
    rank: int = 0
    # The trial's place in the GA's order as one number (``selection_value``: a finished trial above every
    # stopped one); the transfer ranks by it, so a rung fitness never passes for a finished one.
    score: float = math.nan

    @property
    def role(self) -> str:
        """``base``, ``top`` or ``sentinel``: the label without its number."""
        return self.label.rstrip("0123456789")


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
    """The validated fitness of one candidate over its seeds, and its paired difference to the base."""

    candidate: Candidate
    by_seed: dict[int, float]
    paired: Optional[Paired] = None  # candidate - base over their common seeds; None for the base itself

    @property
    def values(self) -> list[float]:
        return [self.by_seed[s] for s in sorted(self.by_seed)]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.by_seed else math.nan

    @property
    def sd(self) -> float:
        # The sample sd: with two seeds, their half-difference times sqrt(2).
        return float(np.std(self.values, ddof=1)) if len(self.by_seed) > 1 else 0.0


@dataclass
class Summary:
    """What a validation found: every candidate's standing, the verdict (``winner``: a top candidate whose
    paired interval lies above 0, else the base) and the transfer over all validated hyps."""

    standings: list[Standing]
    seeds: int
    epochs: int
    winner: Standing = field(init=False)
    base: Standing = field(init=False)

    def __post_init__(self) -> None:
        self.base = next(s for s in self.standings if s.candidate.label == BASE)
        for s in self.standings:
            if s is not self.base:
                s.paired = paired_difference(s.by_seed, self.base.by_seed)
        # Only a top candidate is handed over, and only when the whole interval is above 0: the base is the
        # answer whenever the seeds cannot tell them apart. Among several, the largest paired gain wins.
        above = [s for s in self.standings if s.candidate.role == TOP and s.paired and s.paired.above_zero]
        self.winner = max(above, key=lambda s: (s.paired.mean, -s.candidate.rank), default=self.base)

    @property
    def gain(self) -> float:
        """Relative gain of the winner's mean over the base's (0.1 is +10%; 0 when the base is the winner)."""
        base = self.base.mean
        return (self.winner.mean - base) / base if base > 0 else math.nan

    @property
    def beats_base(self) -> bool:
        return self.winner is not self.base

    @property
    def tops(self) -> list[Standing]:
        return [s for s in self.standings if s.candidate.role == TOP]

    @property
    def pairs(self) -> int:
        """The fewest seeds any candidate shares with the base (the n of the verdict's intervals)."""
        return min((s.paired.n for s in self.standings if s.paired is not None), default=0)

    def _transfer_points(self) -> tuple[list[float], list[float]]:
        pairs = [(_selection_score(s.candidate), s.mean) for s in self.standings
                 if math.isfinite(_selection_score(s.candidate)) and math.isfinite(s.mean)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    @property
    def transfer(self) -> float:
        """Spearman rank correlation of the trials' selection score and mean validated fitness over every
        validated hyp with a trial (base, top candidates and sentinels). The score is the trial fitness,
        with finished trials above stopped ones (``--fidelity prefix``), as selection ranks them."""
        return spearman(*self._transfer_points())

    @property
    def transfer_n(self) -> int:
        return len(self._transfer_points()[0])

    @property
    def transfer_p(self) -> float:
        """One-sided permutation p of ``transfer``: how often trials with no ranking power look this good."""
        return spearman_p(*self._transfer_points())


def _selection_score(candidate: Candidate) -> float:
    return candidate.score if math.isfinite(candidate.score) else candidate.trial_fitness


def summarise(candidates: Sequence[Candidate], rows: Sequence[ValidationRow], seeds: int,
              epochs: int) -> Summary:
    """The summary of ``rows`` for ``candidates`` (a failed seed counts with fitness 0: failure is data).
    A row counts for a candidate when both its label and its source trial match, so rows of an earlier
    validation that ranked the hyps otherwise are not mixed in."""
    by_key: dict[tuple[str, str], dict[int, float]] = {(c.label, c.source_trial_id): {} for c in candidates}
    for row in rows:
        values = by_key.get((row.candidate, row.source_trial_id))
        if values is not None:
            value = row.metrics.fitness
            values[int(row.seed)] = float(value) if math.isfinite(value) else 0.0
    return Summary([Standing(c, by_key[(c.label, c.source_trial_id)]) for c in candidates], seeds, epochs)


def _interval(p: Optional[Paired]) -> str:
    return "-" if p is None else f"{p.mean:+.4f} [{p.low:+.4f}, {p.high:+.4f}]"


def transfer_text(summary: Summary) -> str:
    """``transfer: Spearman +0.83 between trial and validated fitness over 6 hyps (one-sided permutation
    p 0.029)``, with guidance when it is poor or not yet told apart from chance."""
    rho, n = summary.transfer, summary.transfer_n
    if not math.isfinite(rho):
        return f"transfer: Spearman undefined over {n} hyps (it needs 3 with a trial, and no tie on one side)"
    p = summary.transfer_p
    text = (f"transfer: Spearman {rho:+.2f} between trial and validated fitness over {n} hyps (one-sided "
            f"permutation p {p:.3f})")
    if rho < 0.5:
        text += ("; the trials ranked the hyps poorly: give them more epochs (--epochs; with --fidelity "
                 "prefix a later first rung, --grace-epochs) or try the other --fidelity")
    elif p > 1 - LEVEL:
        text += (f"; with {n} hyps that is not yet told apart from chance: raise --validate-sentinels or "
                 "--validate-top")
    return text


def summary_line(summary: Summary) -> str:
    """The verdict a user reads: which hyp ``hyp_validated.yaml`` holds and why, with every top candidate's
    paired difference to the base and its 95% interval."""
    w = summary.winner
    of = f"{summary.pairs} paired seed{'s' if summary.pairs != 1 else ''} of {summary.epochs} epochs"
    if summary.beats_base:
        p = w.paired
        others = ", ".join(f"{s.candidate.label} {_interval(s.paired)}" for s in summary.tops if s is not w)
        return (f"validated: {w.candidate.label} beats the base hyp by {p.mean:+.4f} fitness "
                f"({summary.gain * 100:+.1f}%), {LEVEL:.0%} CI [{p.low:+.4f}, {p.high:+.4f}] over {of}; "
                f"{HYP_NAME} is {w.candidate.label}" + (f" ({others})" if others else ""))
    tops = ", ".join(f"{s.candidate.label} {_interval(s.paired)}" for s in summary.tops) or "no candidate"
    return (f"validated: no candidate's {LEVEL:.0%} interval of the paired difference is above the base hyp "
            f"over {of} ({tops}); {HYP_NAME} is the base hyp")


def write_summary(run_dir: Path, summary: Summary) -> Path:
    """``validation_summary.csv``: one row per validated hyp (base, top candidates, sentinels), rewritten
    whole from the rows of validation.csv; the transfer figures repeat on every row."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(SUMMARY_COLUMNS)
    transfer = [number_cell(summary.transfer), summary.transfer_n, number_cell(summary.transfer_p)]
    for s in summary.standings:
        c, p = s.candidate, s.paired
        diff = [number_cell(p.mean), number_cell(p.low), number_cell(p.high), p.n] if p else ["nan"] * 3 + [0]
        out.writerow([c.label, c.role, c.rank, c.source_trial_id, number_cell(c.trial_fitness),
                      summary.epochs, len(s.by_seed), number_cell(s.mean), number_cell(s.sd), *diff,
                      int(bool(p and p.above_zero)), int(s is summary.winner), *transfer])
    return atomic_write_text(Path(run_dir) / SUMMARY_NAME, buf.getvalue())


def write_validated_hyp(run_dir: Path, summary: Summary, keyset: KeySet) -> Path:
    """``hyp_validated.yaml``: the verdict's hyp (a top candidate whose paired interval is above 0, else the
    base), full key set, under a header that says which and why."""
    w, b = summary.winner, summary.base
    path = Path(run_dir) / HYP_NAME
    of = f"over {summary.pairs} paired seeds of {summary.epochs} epochs"
    if summary.beats_base:
        p = w.paired
        verdict = (f"# Verdict: {w.candidate.label} (trial_id {w.candidate.source_trial_id}) beats the base "
                   f"hyp: paired difference {p.mean:+.6g}, {LEVEL:.0%} CI [{p.low:+.6g}, {p.high:+.6g}] {of}")
    else:
        verdict = (f"# Verdict: the base hyp. No candidate's {LEVEL:.0%} interval of the paired difference "
                   f"is above 0 {of}")
    lines = [
        f"# Validated hyperparameters of the evolution in {run_dir}",
        verdict,
        f"# fitness: {w.mean:.6g} +- {w.sd:.6g} (mean +- sd; trial fitness {w.candidate.trial_fitness:.6g})",
        f"# base hyp: {b.mean:.6g} +- {b.sd:.6g}",
        f"# gain over the base: {summary.gain * 100:+.2f}%" if summary.beats_base else
        "# gain over the base: none (the hyps below are the base's)",
        *(f"#   {s.candidate.label}: {_interval(s.paired)}" for s in summary.tops),
        f"# {transfer_text(summary)}",
        f"# Details: {Path(run_dir) / SUMMARY_NAME}",
        use_line(keyset.name, path),
    ]
    hyp = keyset.validate(w.candidate.hyp, source=f"validated {w.candidate.label} hyp")
    body = yaml.safe_dump({k: hyp[k] for k in keyset.keys}, sort_keys=False, default_flow_style=False)
    return atomic_write_text(path, "\n".join(lines) + "\n" + body)
