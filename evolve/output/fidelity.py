"""How far a run's trials can be trusted, recorded as the run goes: ``fidelity.csv`` and ``fidelity.yaml``.

``fidelity.csv`` has one row per trial that ended, appended and fsync'd the moment it ends, before its row
in ``evolve.csv``: the epochs it trained, its status and final fitness, and its fitness at each ASHA rung
epoch it reached (``fitness_epoch{E}``, empty where it never got there). It is the source of the run's
**trial-epochs spent** (the sum of its ``epochs`` column), so strategies can be compared at equal compute;
a resumed run reads it back and goes on counting. A trial run twice (its driver died between the two
files) counts twice: both runs were paid for.

**Rung-to-final agreement**: for each rung epoch, Spearman's rank correlation between the fitness a trial
had there and its final fitness, over the trials that finished (status ``ok``) and reported that rung,
once ``MIN_PAIRS`` of them have. It tells whether judging trials at that rung is sound; below ``POOR`` a
warning is logged during the run, once each time it turns poor. Only survivors reach the final length,
so the trials it spans are the better ones: a restricted range, where even a sound rung shows a lower
correlation than over all trials.

``fidelity.yaml`` is the summary (fidelity, target length, rungs, trials, trial-epochs, agreement per
rung), rewritten atomically after every trial.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from evolve.contract import Metrics
from evolve.errors import ConfigError
from evolve.output.rundir import atomic_write_text
from evolve.output.verdict_stats import spearman

LOGGER = logging.getLogger(__name__)

CSV_NAME = "fidelity.csv"
SUMMARY_NAME = "fidelity.yaml"
MIN_PAIRS = 5  # finished trials with a rung's fitness before its agreement is reported
POOR = 0.3  # agreement below this is warned about


def read_summary(run_dir: str | Path) -> dict:
    """A run's ``fidelity.yaml`` as written by ``FidelityRecords.write_summary``; {} when it has none."""
    path = Path(run_dir) / SUMMARY_NAME
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def rung_column(epoch: int) -> str:
    return f"fitness_epoch{epoch}"


def fidelity_columns(rungs: Sequence[int]) -> list[str]:
    return ["trial_id", "status", "epochs", "fitness", *(rung_column(e) for e in rungs)]


@dataclass(frozen=True)
class Agreement:
    """Spearman between fitness at rung ``epoch`` and final fitness, over ``n`` finished trials."""

    epoch: int
    spearman: float
    n: int

    def text(self) -> str:
        rho = f"{self.spearman:+.2f}" if math.isfinite(self.spearman) else "undefined"
        return f"epoch {self.epoch} Spearman {rho} (n {self.n})"

    @property
    def poor(self) -> bool:
        return not math.isfinite(self.spearman) or self.spearman < POOR


@dataclass
class _Row:
    trial_id: str
    status: str
    epochs: int
    fitness: float
    at: dict[int, float]  # rung epoch -> fitness there


class FidelityRecords:
    """The fidelity records of one run folder: per-epoch fitness in, ``fidelity.csv``/``.yaml`` out."""

    def __init__(self, run_dir: str | Path, fidelity: str, target: int, rungs: Sequence[int]) -> None:
        self.run_dir = Path(run_dir)
        self.fidelity = fidelity
        self.target = int(target)
        self.rungs = sorted(int(e) for e in rungs)
        self.csv_path = self.run_dir / CSV_NAME
        self.summary_path = self.run_dir / SUMMARY_NAME
        self.columns = fidelity_columns(self.rungs)
        self._rows: list[_Row] = self._read() if self.csv_path.is_file() else []
        self._curves: dict[str, dict[int, float]] = {}  # running trial id -> rung epoch -> fitness
        self._poor: set[int] = set()  # rungs warned about, until they recover

    # Reading back ------------------------------------------------------------------------------------
    def _read(self) -> list[_Row]:
        text = self.csv_path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # the writer was killed in the middle of a row
            text = text[: text.rfind("\n") + 1]
            LOGGER.warning("%s: dropping an incomplete last line (its writer was killed)", self.csv_path)
            atomic_write_text(self.csv_path, text)
        lines = list(csv.reader(io.StringIO(text)))
        if not lines:
            return []
        if lines[0] != self.columns:
            raise ConfigError(f"{self.csv_path}: columns {','.join(lines[0])} are not those of this run "
                              f"({','.join(self.columns)}); move the file away or use another run folder")
        out = []
        for number, cells in enumerate(lines[1:], start=2):
            row = dict(zip(self.columns, cells))
            try:
                if len(cells) != len(self.columns):
                    raise ValueError(f"{len(cells)} fields, expected {len(self.columns)}")
                at = {e: float(row[rung_column(e)]) for e in self.rungs if row[rung_column(e)] != ""}
                out.append(_Row(row["trial_id"], row["status"], int(row["epochs"]), float(row["fitness"]),
                                at))
            except ValueError as exc:
                raise ConfigError(f"{self.csv_path}: line {number}: {exc}") from None
        return out

    # As trials run -----------------------------------------------------------------------------------
    def epoch(self, trial_id: str, epoch: int, metrics: Metrics) -> None:
        """A running trial's report of ``epoch``, judged in the worker (``trial_metrics``): its fitness is kept
        if the epoch is a rung."""
        if epoch in self.rungs:
            self._curves.setdefault(trial_id, {})[epoch] = float(metrics.fitness)

    def finished(self, trial_id: str, metrics: Metrics) -> None:
        """A trial ended, its result judged by ``JobSource.on_result``: append its row, rewrite the summary,
        warn if a rung's agreement turned poor."""
        at = self._curves.pop(trial_id, {})
        epochs = int(metrics.epochs or max(at, default=0))
        row = _Row(str(trial_id), metrics.status, epochs, float(metrics.fitness), at)
        cells = [row.trial_id, row.status, str(row.epochs), repr(row.fitness),
                 *(repr(at[e]) if e in at else "" for e in self.rungs)]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if not self.csv_path.is_file() or self.csv_path.stat().st_size == 0:
            writer.writerow(self.columns)
        writer.writerow(cells)
        with self.csv_path.open("a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        self._rows.append(row)
        self._check(self.agreement())
        self.write_summary()

    # Figures -----------------------------------------------------------------------------------------
    @property
    def trial_epochs(self) -> int:
        """Epochs trained by every trial of the run so far, stopped and failed ones included."""
        return sum(r.epochs for r in self._rows)

    @property
    def trials(self) -> int:
        return len(self._rows)

    def agreement(self) -> list[Agreement]:
        """Agreement of each rung reached by at least ``MIN_PAIRS`` finished trials, lowest rung first."""
        last = {r.trial_id: r for r in self._rows}  # a trial run again counts once, with its last result
        finished = [r for r in last.values() if r.status == "ok"]
        out = []
        for epoch in self.rungs:
            pairs = [(r.at[epoch], r.fitness) for r in finished if epoch in r.at]
            if len(pairs) >= MIN_PAIRS:
                rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
                out.append(Agreement(epoch, rho, len(pairs)))
        return out

    def history(self) -> dict[int, list[float]]:
        """Rung epoch -> the fitness each trial on record had there (its last run), for a resumed ASHA."""
        last = {r.trial_id: r for r in self._rows}
        return {e: [r.at[e] for r in last.values() if e in r.at] for e in self.rungs}

    def _check(self, agreement: list[Agreement]) -> None:
        for a in agreement:
            if a.poor and a.epoch not in self._poor:
                self._poor.add(a.epoch)
                LOGGER.warning("rung-to-final agreement is poor at %s: trials judged at epoch %d are stopped "
                               "on weak evidence; a later rung (--grace-epochs) or --fidelity compressed may "
                               "serve better", a.text(), a.epoch)
            elif not a.poor:
                self._poor.discard(a.epoch)

    def note(self) -> str:
        """A few words for the progress line: the lowest rung's agreement, once it is known."""
        agreement = self.agreement()
        return f"rung~final {agreement[0].text()}" if agreement else ""

    def summary(self) -> dict:
        return {"fidelity": self.fidelity, "target_epochs": self.target, "rungs": list(self.rungs),
                "trials": self.trials, "trial_epochs": self.trial_epochs,
                "agreement": [{"epoch": a.epoch, "spearman": round(a.spearman, 4) if math.isfinite(a.spearman)
                               else None, "n": a.n} for a in self.agreement()]}

    def write_summary(self) -> None:
        header = "# Fidelity of this run's trials (evolve.output.fidelity); per trial in fidelity.csv\n"
        atomic_write_text(self.summary_path, header + yaml.safe_dump(self.summary(), sort_keys=False))

    def line(self) -> str:
        """The run's closing line: trial-epochs spent and rung-to-final agreement."""
        text = (f"trial-epochs spent: {self.trial_epochs} over {self.trials} trials (--fidelity "
                f"{self.fidelity}, trials of {self.target} epochs)")
        agreement = self.agreement()
        if agreement:
            text += "; rung-to-final agreement: " + ", ".join(a.text() for a in agreement)
        elif self.rungs:
            text += f"; rung-to-final agreement: fewer than {MIN_PAIRS} finished trials per rung"
        return text

