"""What ``report.html`` shows, read from a run folder: settings, base/best/validated hyps, the validation
verdict and the diagnostics (best-so-far curve and its area, genes at a bound, failures by reason, a
hyperparameter importance estimate). ``evolve.output.report`` turns it into the page.

Everything is read from the files a run writes (``evolve.csv``, ``checkpoint.pkl``, ``hyp_validated.yaml``,
``validation.csv``, the PNGs), never from a live driver, so a report can be made while the run goes on
(from whatever the files hold at that moment) or long after it. A piece that cannot be read becomes a
note on the page instead of an error: a half-written run still gets a report.
"""
from __future__ import annotations

import io
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evolve.config.run import EvolveConfig, flag_paths, get_setting
from evolve.config.trial import data_names
from evolve.contract import FAILED_STATUSES
from evolve.errors import ConfigError
from evolve.execution.trainers import trainer_for
from evolve.output import winners
from evolve.output.plots import _read, _valid
from evolve.output.records import CSV_NAME
from evolve.output.rundir import CHECKPOINT_NAME, load_checkpoint
from evolve.search.space import Gene, SearchSpace

LOGGER = logging.getLogger(__name__)

PLOTS = ("fitness.png", "evolve.png", winners.PLOT_NAME)
BOUND_EPS = 0.01  # a gene within 1% of its normalised range from an end sits at that bound
BOUND_SHARE = 0.3  # from this share of trials at one bound on (or the best trial there), hint to widen it
MIN_IMPORTANCE_TRIALS = 5  # fewer finished trials than this tell nothing about importance


@dataclass
class GeneBounds:
    """How often one numeric gene sat at each bound of its range, over the trials with a result."""

    key: str
    low: float
    high: float
    trials: int
    at_low: int
    at_high: int
    best_at: str = ""  # "low" / "high" when the best trial sat there

    def hint(self, meta: str) -> str:
        """The advice for this gene, empty when it did not press against a bound."""
        for side, count, value in (("low", self.at_low, self.low), ("high", self.at_high, self.high)):
            if self.best_at == side or (self.trials and count / self.trials >= BOUND_SHARE):
                best = "the best trial and " if self.best_at == side else ""
                return (f"{best}{count} of {self.trials} trials sat at the {side} bound {value:g}: widen "
                        f"'{self.key}' ({side}) in {meta}, unless {value:g} is a hard limit")
        return ""


@dataclass
class ReportData:
    """Everything on the page, as plain values; ``notes`` says what could not be read and why."""

    run_dir: Path
    trials: pd.DataFrame
    settings: list[tuple[str, str, bool]] = field(default_factory=list)  # flag, value, typed by the user
    meta: str = "meta.yaml"
    base: dict[str, Any] = field(default_factory=dict)
    evolved: list[str] = field(default_factory=list)
    best: dict[str, Any] | None = None
    best_row: dict[str, Any] | None = None
    validated: dict[str, Any] | None = None
    verdict: list[str] = field(default_factory=list)
    # label, source trial, trial fitness, validated mean, sd, seeds, paired difference to the base, chosen
    standings: list[tuple[str, str, float, float, float, int, Any, bool]] = field(default_factory=list)
    best_so_far: np.ndarray = field(default_factory=lambda: np.zeros(0))
    area: float = math.nan
    bounds: list[GeneBounds] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    reasons: list[tuple[str, int]] = field(default_factory=list)
    importance: dict[str, float] | None = None
    importance_note: str = ""
    images: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def check_run_dir(run_dir: str | Path, flag: str = "--report") -> Path:
    """The run folder as an absolute path; ConfigError naming ``flag`` unless it holds an evolution."""
    path = Path(run_dir).expanduser().absolute()
    if not path.is_dir():
        raise ConfigError(f"{flag} {run_dir}: no such run folder")
    if not (path / CSV_NAME).is_file():
        raise ConfigError(f"{flag} {run_dir}: not an evolution run folder (no {CSV_NAME})")
    return path


def gather(run_dir: str | Path) -> ReportData:
    """Read every piece of the report from ``run_dir``; ConfigError if it is no evolution's folder."""
    path = check_run_dir(run_dir)
    data = ReportData(path, _read(path / CSV_NAME))
    cfg, space = _config_and_space(path, data.notes)
    if cfg is not None:
        explicit = cfg.explicit
        data.settings = [(flag, _show(get_setting(cfg, p)), flag in explicit)
                         for p, flag in flag_paths().items()]
    if space is not None:
        data.base = dict(space.base)
        data.evolved = list(space.keys)
        data.meta = str(cfg.meta) if cfg is not None and cfg.meta else "hyps/meta.yaml (or your --meta)"
    df = data.trials
    valid = _valid(df)
    if valid.any():
        row = df.loc[int(df.loc[valid, "fitness"].idxmax())]
        data.best_row = {k: row[k] for k in ("generation", "trial_id", "status", "fitness") if k in row}
        keys = list(space.keyset.keys) if space is not None else [c for c in df.columns if c in data.base]
        data.best = {k: _plain(row[k]) for k in keys if k in row}
    data.best_so_far, data.area = best_so_far(df)
    if space is not None:
        data.bounds = gene_bounds(df, space)
    data.statuses, data.reasons = failures(df)
    data.importance, data.importance_note = importance(df, space)
    _read_validation(path, cfg, df, data)
    for name in PLOTS:
        if (path / name).is_file():
            data.images[name] = (path / name).read_bytes()
    if len(data.best_so_far):
        data.images["best_so_far.png"] = best_so_far_png(data.best_so_far, data.area)
    return data


def _config_and_space(run_dir: Path, notes: list[str]) -> tuple[EvolveConfig | None, SearchSpace | None]:
    """The run's saved configuration and its search space, or None (with a note) for each that is missing."""
    if not (run_dir / CHECKPOINT_NAME).is_file():
        notes.append(f"no {CHECKPOINT_NAME} yet: settings, base hyp and bounds are not shown")
        return None, None
    try:
        cfg = EvolveConfig.from_dict(load_checkpoint(run_dir)["config"],
                                     source=str(run_dir / CHECKPOINT_NAME))
    except (ConfigError, KeyError) as exc:
        notes.append(f"settings not shown: {exc}")
        return None, None
    try:
        space = trainer_for(cfg.trainer).space(cfg)
    except Exception as exc:  # a moved hyp/meta file, a user trainer not importable here
        notes.append(f"base hyp and bounds not shown: the run's search space cannot be loaded ({exc})")
        return cfg, None
    return cfg, space


def best_so_far(df: pd.DataFrame) -> tuple[np.ndarray, float]:
    """Best valid fitness after each trial in the order they finished (0 before the first valid one), and
    its area: the mean of that curve over the trials, 1.0 only if the first trial already had fitness 1.
    Runs of the same trial budget compare by it: a higher area found good hyps sooner."""
    if df.empty:
        return np.zeros(0), math.nan
    fitness = df["fitness"].where(_valid(df)).to_numpy(dtype=float)
    curve = np.fmax.accumulate(np.nan_to_num(fitness, nan=0.0))
    return curve, float(curve.mean())


def _bounded(gene: Gene, row: pd.Series, base: dict[str, Any]) -> Gene:
    if not gene.by:
        return gene
    return gene.within(row.get(gene.by, base.get(gene.by)))


def gene_bounds(df: pd.DataFrame, space: SearchSpace) -> list[GeneBounds]:
    """Per numeric evolved gene, how many trials with a result sat at its low and its high bound."""
    valid = df[_valid(df)]
    best = valid.loc[valid["fitness"].idxmax()] if len(valid) else None
    out = []
    for gene in space.genes:
        if gene.choices or gene.key not in df.columns:
            continue
        at = {"low": 0, "high": 0}
        best_at = ""
        for label, row in valid.iterrows():
            value = pd.to_numeric(row[gene.key], errors="coerce")
            if not math.isfinite(value):
                continue
            pos = _bounded(gene, row, space.base).encode(float(value))
            side = "low" if pos <= BOUND_EPS else "high" if pos >= 1 - BOUND_EPS else ""
            if side:
                at[side] += 1
                if best is not None and label == best.name:
                    best_at = side
        out.append(GeneBounds(gene.key, gene.low, gene.high, len(valid), at["low"], at["high"], best_at))
    return out


def failures(df: pd.DataFrame) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Trials per status, and the failed or diverged ones per reason (most frequent first)."""
    status = df["status"].astype(str)
    counts = {str(k): int(v) for k, v in status.value_counts().items()}
    bad = df[status.isin(FAILED_STATUSES)]
    if "reason" in df.columns:
        reasons = bad["reason"].fillna("").astype(str).str.strip()
    else:
        reasons = pd.Series([""] * len(bad), dtype=str)
    reasons = reasons.where(reasons != "", "(no reason recorded)")
    return counts, [(str(k), int(v)) for k, v in reasons.value_counts().items()]


def importance(df: pd.DataFrame, space: SearchSpace | None) -> tuple[dict[str, float] | None, str]:
    """Optuna's fANOVA importance of each evolved gene for fitness, fed with the trials that have a result;
    (None, why) when Optuna is not installed or there is too little to go on."""
    try:
        import optuna
    except ImportError:
        return None, ("Optuna is not installed, so no importance estimate: pip install -e \".[report]\" "
                      "and run: python orchestrate.py --report RUN_DIR")
    if space is None:
        return None, "no importance estimate: the run's search space could not be loaded"
    valid = df[_valid(df)]
    if len(valid) < MIN_IMPORTANCE_TRIALS:
        return None, (f"no importance estimate yet: {len(valid)} trial(s) with a result, "
                      f"{MIN_IMPORTANCE_TRIALS} needed")
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists: dict[str, Any] = {}
    for gene in space.genes:
        if gene.key not in df.columns:
            continue
        if gene.choices:
            dists[gene.key] = CategoricalDistribution(list(gene.choices))
        elif gene.integer and not gene.log:
            dists[gene.key] = IntDistribution(math.ceil(gene.low), math.floor(gene.high))
        else:
            dists[gene.key] = FloatDistribution(gene.low, gene.high, log=gene.log and gene.low > 0)
    trials = []
    for _, row in valid.iterrows():
        params = {k: _within(d, row[k]) for k, d in dists.items()}
        trials.append(optuna.trial.create_trial(params=params, distributions=dists,
                                                value=float(row["fitness"])))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        study.add_trials(trials)
        name, evaluator = _evaluator(optuna)
        scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as exc:  # too few distinct values and the like: the rest of the report stands
        return None, f"no importance estimate: Optuna could not compute one ({exc})"
    finally:
        optuna.logging.set_verbosity(verbosity)
    return ({k: float(v) for k, v in scores.items()},
            f"Optuna {optuna.__version__} {name} importance over {len(valid)} trials with a result")


def _evaluator(optuna: Any) -> tuple[str, Any]:
    """Optuna's default evaluator, fANOVA, where scikit-learn (its random forest) is installed; else
    PED-ANOVA, which needs nothing more. Seeded, so refreshing the report of the same trials gives the same
    numbers."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return "PED-ANOVA", optuna.importance.PedAnovaImportanceEvaluator()
    return "fANOVA", optuna.importance.FanovaImportanceEvaluator(seed=0)


def _within(dist: Any, value: Any) -> Any:
    """A recorded value as the distribution takes it: clipped into its range (a conditional gene's union)."""
    if hasattr(dist, "choices"):
        return value if value in dist.choices else dist.choices[0]
    number = min(dist.high, max(dist.low, float(value)))
    return int(round(number)) if type(dist).__name__ == "IntDistribution" else number


def _read_validation(run_dir: Path, cfg: EvolveConfig | None, df: pd.DataFrame, data: ReportData) -> None:
    """The validated hyp, the verdict lines and the per-candidate standings, where the run has them: the
    verdict is summed up by the validation's own ``summarise`` from the rows of validation.csv, for the
    candidates of validation_summary.csv (written when the validation ends) or, while it runs, of the rows."""
    hyp_path = run_dir / winners.HYP_NAME
    if hyp_path.is_file():
        try:
            loaded = yaml.safe_load(hyp_path.read_text(encoding="utf-8"))
            data.validated = dict(loaded) if isinstance(loaded, dict) else None
        except yaml.YAMLError as exc:
            data.notes.append(f"{hyp_path.name} not shown: {str(exc).splitlines()[0]}")
    if not (run_dir / winners.CSV_NAME).is_file():
        return
    try:
        rows = _validation_rows(run_dir, data_names(cfg.train.data) if cfg is not None else [])
        candidates = _summary_candidates(run_dir)
    except (ConfigError, KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        data.notes.append(f"verdict not shown: {exc}")
        return
    if candidates is None:  # the validation is under way: its candidates are those with a row so far
        fitness_of = dict(zip(df["trial_id"].astype(str), df["fitness"])) if "trial_id" in df.columns else {}
        candidates = {}
        for r in rows:
            candidates.setdefault((r.candidate, r.source_trial_id), winners.Candidate(
                r.candidate, {}, r.source_trial_id, float(fitness_of.get(r.source_trial_id, math.nan))))
        data.verdict = ["validation under way: the verdict below is of the seeds validated so far"]
    if not rows or not any(c.label == winners.BASE for c in candidates.values()):
        data.verdict = ["validation under way: the base hyp has no validated seed yet"]
        return
    summary = winners.summarise(list(candidates.values()), rows, len({r.seed for r in rows}), rows[0].epochs)
    data.verdict += [winners.summary_line(summary), winners.transfer_text(summary)]
    data.standings = [(s.candidate.label, s.candidate.source_trial_id, s.candidate.trial_fitness, s.mean,
                       s.sd, len(s.values), s.paired, s is summary.winner) for s in summary.standings]


def _summary_candidates(run_dir: Path) -> dict[tuple[str, str], winners.Candidate] | None:
    """The candidates of validation_summary.csv (with their rank among the run's hyps), None without it."""
    path = run_dir / winners.SUMMARY_NAME
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"source_trial_id": str}, keep_default_na=False)
    out = {}
    for _, row in table.iterrows():
        key = (str(row["candidate"]), str(row["source_trial_id"]))
        out[key] = winners.Candidate(key[0], {}, key[1], float(row["trial_fitness"]), int(row["rank"]))
    return out


def _validation_rows(run_dir: Path, names: list[str]) -> list[winners.ValidationRow]:
    """The rows of validation.csv, read without touching it: the validation may be appending to it right
    now, and ``ValidationRecords`` rewrites a file whose last line is torn, so it reads a copy of the whole
    lines."""
    text = (run_dir / winners.CSV_NAME).read_text(encoding="utf-8", errors="replace")
    with tempfile.TemporaryDirectory(prefix="report-") as folder:
        (Path(folder) / winners.CSV_NAME).write_text(text[:text.rfind("\n") + 1], encoding="utf-8")
        return winners.ValidationRecords(folder, names).rows()


def best_so_far_png(curve: np.ndarray, area: float) -> bytes:
    """The best-so-far curve over trials, as PNG bytes (drawn on its own Agg canvas, no pyplot state)."""
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    trials = np.arange(1, len(curve) + 1)
    ax.step(trials, curve, where="post", color="tab:blue")
    ax.fill_between(trials, curve, step="post", alpha=0.15, color="tab:blue")
    ax.set_xlabel("trials finished")
    ax.set_ylabel("best fitness so far")
    ax.set_title(f"area under the curve per trial: {area:.4f}", fontsize=9)
    ax.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _plain(value: Any) -> Any:
    """A CSV cell as a plain Python value (numpy scalars print as numbers, not as np.float64(...))."""
    return value.item() if hasattr(value, "item") else value


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)
