"""Plots of an evolution read from its ``evolve.csv``: ``evolve.png`` (one panel per hyp, value vs fitness)
and ``fitness.png`` (best and median fitness per generation).

Figures are drawn on an explicit Agg canvas, so plotting never changes the pyplot backend or state of the
process that calls it (the driver may be a notebook).
"""
from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from evolve.errors import ConfigError
from evolve.output.records import LEAD_COLUMNS, TAIL_COLUMNS
from evolve.output.rundir import atomic_write_bytes

DPI = 150
PANEL_INCHES = 2.2
MAX_COLUMNS = 6
DENSITY_BINS = 30
# A hyp whose positive values span this ratio or more is drawn on a log axis (lr0 runs 1e-5..1e-1).
LOG_AXIS_RATIO = 100.0
REQUIRED_COLUMNS = ("generation", "status", "fitness")


def _read(csv_path: str | Path) -> pd.DataFrame:
    path = Path(csv_path)
    if not path.is_file():
        raise ConfigError(f"{path}: evolve CSV not found")
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: column '{missing[0]}' missing; not an evolve.csv")
    df["fitness"] = pd.to_numeric(df["fitness"], errors="coerce")
    return df


def _valid(df: pd.DataFrame) -> pd.Series:
    """Rows that count as results: ``ok``, or ``stopped`` when no trial finished (same rule as best)."""
    status = df["status"].astype(str)
    ok = (status == "ok") & df["fitness"].notna()
    if ok.any():
        return ok
    return (status == "stopped") & df["fitness"].notna()


def _best_index(df: pd.DataFrame, valid: pd.Series) -> int | None:
    """Label of the best valid row; the earliest wins ties, as in hyp_evolve.yaml."""
    if not valid.any():
        return None
    return int(df.loc[valid, "fitness"].idxmax())


def _density(x: np.ndarray, y: np.ndarray, bins: int = DENSITY_BINS) -> np.ndarray:
    """Number of points sharing each point's cell of a ``bins`` x ``bins`` grid over the data's extent."""
    def cells(v: np.ndarray) -> np.ndarray:
        lo, hi = float(np.min(v)), float(np.max(v))
        if not hi > lo:  # a constant column: every point in one cell
            return np.zeros(len(v), dtype=int)
        return np.clip(((v - lo) / (hi - lo) * bins).astype(int), 0, bins - 1)

    ix, iy = cells(x), cells(y)
    counts = np.zeros((bins, bins), dtype=int)
    np.add.at(counts, (ix, iy), 1)
    return counts[ix, iy]


def _use_log(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    if not len(finite) or float(finite.min()) <= 0:
        return False
    return float(finite.max()) / float(finite.min()) >= LOG_AXIS_RATIO


def _save(fig: Figure, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    # Replaced atomically: the plots are refreshed during a run while someone may have them open.
    return atomic_write_bytes(out, buf.getvalue())


def _select_keys(df: pd.DataFrame, csv_path: str | Path, keys: Sequence[str] | None) -> list[str]:
    # The trainer's key set, in its order: the columns between the lead ones and the tail (reason, the
    # per-data-set metrics); a named choice (the optimizer) is plotted by category.
    columns = list(df.columns)
    end = columns.index(TAIL_COLUMNS[0]) if TAIL_COLUMNS[0] in columns else len(columns)
    hyp_cols = [k for k in columns[:end] if k not in LEAD_COLUMNS]
    if keys is not None:
        keys = list(keys)
        if not keys:
            raise ConfigError(f"{csv_path}: no hyperparameter keys given to plot")
        for key in keys:
            if key not in df.columns:
                raise ConfigError(f"{csv_path}: no column '{key}' to plot")
        return keys
    varying = [k for k in hyp_cols if df[k].nunique(dropna=True) > 1]
    # Before anything varies (one row, or a run of clones) every hyp is shown so the figure is not empty.
    return varying or hyp_cols


def plot_evolve(csv_path: str | Path, out_path: str | Path, keys: Sequence[str] | None = None) -> Path:
    """Draw one panel per hyp (value on x, fitness on y) and write it to ``out_path`` as PNG.

    ``keys`` defaults to the hyp columns whose values vary. Points of ``ok`` trials are coloured by how
    many trials lie near them (yellow = dense: where the population has converged); failed, diverged and
    (when ok trials exist) stopped trials are drawn as faint grey crosses; the best trial is a large black
    '+', and each panel's title gives its value.
    """
    df = _read(csv_path)
    keys = _select_keys(df, csv_path, keys)
    valid = _valid(df)
    best = _best_index(df, valid)
    n = max(len(keys), 1)
    ncols = min(MAX_COLUMNS, n)
    nrows = math.ceil(n / ncols)
    width = PANEL_INCHES * ncols
    title = textwrap.fill(_summary(df, valid, best), width=max(30, int(width * 11)))
    title_inches = 0.3 + 0.16 * (title.count("\n") + 1)
    height = PANEL_INCHES * nrows + title_inches
    fig = Figure(figsize=(width, height))
    # Fixed margins in inches: a constrained layout costs seconds at 30 panels and gains nothing here.
    fig.subplots_adjust(left=0.5 / width, right=1 - 0.15 / width, bottom=0.3 / height,
                        top=1 - (title_inches + 0.1) / height, wspace=0.3, hspace=0.45)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fitness = df["fitness"].to_numpy(dtype=float)
    for i, ax in enumerate(axes.flat):
        if i >= len(keys):
            ax.set_visible(False)
            continue
        key = keys[i]
        x, names = _positions(df[key])
        log_x = not names and _use_log(x)
        good = valid.to_numpy() & np.isfinite(x)
        faint = ~valid.to_numpy() & np.isfinite(x) & np.isfinite(fitness)
        if faint.any():
            ax.scatter(x[faint], fitness[faint], s=10, marker="x", c="0.6", alpha=0.6, linewidths=0.6)
        if good.any():
            gx, gy = x[good], fitness[good]
            dens = _density(np.log10(gx) if log_x else gx, gy)
            order = np.argsort(dens, kind="stable")  # dense points last, so they stay visible
            ax.scatter(gx[order], gy[order], c=dens[order], cmap="viridis", s=7, linewidths=0,
                       vmin=1, vmax=max(int(dens.max()), 2))
        bx = float(x[df.index.get_loc(best)]) if best is not None else math.nan
        if math.isfinite(bx):
            ax.plot([bx], [float(df.at[best, "fitness"])], "k+", markersize=14, markeredgewidth=2)
            ax.set_title(f"{key} = {names[int(bx)] if names else format(bx, '.3g')}", fontsize=8)
        else:
            ax.set_title(key, fontsize=8)
        if log_x:
            ax.set_xscale("log")
        if names:
            ax.set_xticks(range(len(names)), names)
            ax.set_xlim(-0.5, len(names) - 0.5)
        ax.tick_params(labelsize=6)
        ax.grid(True, alpha=0.3, linewidth=0.5)
        if i % ncols == 0:
            ax.set_ylabel("fitness", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, out_path)


def _positions(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """A hyp column as x positions: numbers as they are; a categorical gene's names (the optimizer) as
    category positions 0, 1, ... in sorted order, with the names for the tick labels."""
    if pd.api.types.is_numeric_dtype(column):
        return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float), []
    names = sorted(column.dropna().astype(str).unique())
    where = {name: float(i) for i, name in enumerate(names)}
    return np.array([where.get(str(v), math.nan) if pd.notna(v) else math.nan for v in column]), names


def _summary(df: pd.DataFrame, valid: pd.Series, best: int | None) -> str:
    bad = int((~df["status"].astype(str).isin(["ok", "stopped"])).sum())
    text = f"{len(df)} trial{'' if len(df) == 1 else 's'} ({bad} failed or diverged)"
    if best is None:
        return text + ": no successful trial yet"
    row = df.loc[best]
    return (f"{text}; best fitness {float(row['fitness']):.4g} "
            f"(generation {row['generation']}, trial {row.get('trial_id', '?')})")


def fitness_by_generation(df: pd.DataFrame) -> pd.DataFrame:
    """Per generation: ``best_so_far``, ``best`` and ``median`` fitness of the valid trials (NaN where a
    generation has none; ``best_so_far`` carries over such generations)."""
    valid = _valid(df)
    generation = pd.to_numeric(df["generation"], errors="coerce")
    gens = sorted(generation.dropna().unique())
    groups = df.loc[valid, "fitness"].groupby(generation[valid])
    best = groups.max().reindex(gens)
    return pd.DataFrame({
        "generation": gens,
        "best_so_far": best.cummax().ffill().to_numpy(dtype=float),
        "best": best.to_numpy(dtype=float),
        "median": groups.median().reindex(gens).to_numpy(dtype=float),
    })


def plot_fitness(csv_path: str | Path, out_path: str | Path) -> Path:
    """Draw best-so-far, best-of-generation and median fitness per generation and write it as PNG.

    Only ``ok`` trials count (``stopped`` ones when no trial finished), as for the best hyps.
    """
    df = _read(csv_path)
    valid = _valid(df)
    table = fitness_by_generation(df)
    gens = table["generation"].to_numpy(dtype=float)

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    if len(gens):
        ax.plot(gens, table["best_so_far"], "o-", color="tab:blue", markersize=4, label="best so far")
        ax.plot(gens, table["best"], "^", color="tab:green", markersize=4, alpha=0.7,
                label="best of generation")
        ax.plot(gens, table["median"], "s--", color="tab:orange", markersize=3, label="median of generation")
        ax.legend(fontsize=7, loc="best")
    if not valid.any():
        ax.text(0.5, 0.5, "no successful trial yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (0.1 mAP@0.5 + 0.9 mAP@0.5:0.95)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(gens) == 1:  # otherwise the axis spans +/-0.05 of a generation with fractional ticks
        ax.set_xlim(gens[0] - 1, gens[0] + 1)
    ax.grid(True, alpha=0.3)
    ax.set_title(_summary(df, valid, _best_index(df, valid)), fontsize=8)
    return _save(fig, out_path)
