"""``validation.png``: on the left the validated fitness of every hyp, one point per seed, beside the trial
fitness it was selected with; on the right each hyp's paired difference to the base (the same seeds) with
its 95% t interval, the verdict's figure.

Read the left panel left to right: the base first (grey band: its mean +- sd over the seeds), then the top
candidates in the order the evolution ranked them, then the sentinels from lower in the ranking (orange).
A trial marker far above its seeds is a hyp that was selected on a lucky short run; the order of the
markers against the order of the dots is the transfer. On the right, an interval wholly above the zero
line is a candidate that beats the base; the hyp handed over is green.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evolve.output.rundir import atomic_write_bytes
from evolve.output.verdict_stats import LEVEL
from evolve.output.winners import BASE, PLOT_NAME, SENTINEL, Standing, Summary, transfer_text

DPI = 150


def _colour(s: Standing, summary: Summary) -> str:
    if s.candidate.label == BASE:
        return "0.35"
    if s is summary.winner:
        return "tab:green"
    return "tab:orange" if s.candidate.role == SENTINEL else "tab:blue"


def _label(s: Standing) -> str:
    rank = f" #{s.candidate.rank}" if s.candidate.rank else ""
    return f"{s.candidate.label}\n{s.candidate.source_trial_id}{rank}".strip()


def _fitness_panel(ax, summary: Summary) -> None:
    standings, base = summary.standings, summary.base
    if math.isfinite(base.mean):
        ax.axhspan(base.mean - base.sd, base.mean + base.sd, color="0.85", zorder=0,
                   label=f"base: {base.mean:.4f} +- {base.sd:.4f}")
        ax.axhline(base.mean, color="0.5", lw=1, zorder=1)
    for x, s in enumerate(standings):
        colour = _colour(s, summary)
        offsets = np.linspace(-0.08, 0.08, len(s.values)) if len(s.values) > 1 else np.zeros(len(s.values))
        ax.scatter(x + offsets, s.values, color=colour, s=28, zorder=3,
                   label="validated, one point per seed" if x == 0 else None)
        if s.values:
            ax.hlines(s.mean, x - 0.18, x + 0.18, color=colour, lw=2, zorder=3)
        if math.isfinite(s.candidate.trial_fitness):
            ax.scatter([x + 0.3], [s.candidate.trial_fitness], marker="x", color="tab:red", s=36, zorder=3,
                       label="trial fitness (selection)" if not any(
                           math.isfinite(t.candidate.trial_fitness) for t in standings[:x]) else None)
    ax.set_xticks(range(len(standings)), [_label(s) for s in standings], fontsize=7)
    ax.set_xlim(-0.6, len(standings) - 0.4)
    ax.set_ylabel("fitness")
    transfer = transfer_text(summary).split(";")[0]
    ax.set_title(f"{summary.seeds} new seed(s) x {summary.epochs} epochs\n{transfer}", fontsize=8)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="y", alpha=0.3)


def _paired_panel(ax, summary: Summary) -> None:
    others = [s for s in summary.standings if s.paired is not None]
    ax.axhline(0.0, color="0.35", lw=1, zorder=1)
    for x, s in enumerate(others):
        p = s.paired
        if not math.isfinite(p.mean):
            continue
        colour = _colour(s, summary)
        if math.isfinite(p.low):
            ax.errorbar([x], [p.mean], yerr=[[p.mean - p.low], [p.high - p.mean]], fmt="o", color=colour,
                        capsize=4, zorder=3)
        else:
            ax.scatter([x], [p.mean], color=colour, zorder=3)
        ax.annotate(f"{p.mean:+.4f}", (x, p.mean), textcoords="offset points", xytext=(6, 0), fontsize=6,
                    va="center")
    ax.set_xticks(range(len(others)), [_label(s) for s in others], fontsize=7)
    ax.set_xlim(-0.6, max(len(others), 1) - 0.4)
    ax.set_ylabel("candidate - base (same seeds)")
    verdict = summary.winner.candidate.label if summary.beats_base else "the base hyp"
    ax.set_title(f"paired difference, {LEVEL:.0%} t interval over {summary.pairs} seed(s)\n"
                 f"handed over: {verdict}", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot_validation(summary: Summary, run_dir: Path) -> Path:
    """Draw ``validation.png`` in ``run_dir`` (atomically) and return its path."""
    n = len(summary.standings)
    fig = Figure(figsize=(max(8.0, 1.1 * (2 * n - 1) + 2.5), 4.4), dpi=DPI)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [n, max(n - 1, 1)]})
    _fitness_panel(left, summary)
    _paired_panel(right, summary)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(Path(run_dir) / PLOT_NAME, buf.getvalue())
