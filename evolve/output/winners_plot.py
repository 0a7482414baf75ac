"""``validation.png``: the validated fitness of every candidate, one point per seed, beside the trial
fitness it was selected with, the base hyp marked.

Read it left to right: the base first (grey band: its mean +- sd over the seeds), then the candidates in
the order the evolution ranked them. A candidate whose seeds sit above the band holds up when retrained;
a trial marker far above its seeds is a hyp that was selected on a lucky short run.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evolve.output.rundir import atomic_write_bytes
from evolve.output.winners import BASE, PLOT_NAME, Summary, transfer_text

DPI = 150


def plot_validation(summary: Summary, run_dir: Path) -> Path:
    """Draw ``validation.png`` in ``run_dir`` (atomically) and return its path."""
    standings = summary.standings
    fig = Figure(figsize=(max(5.0, 1.3 * len(standings) + 2.0), 4.2), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    base = summary.base
    if math.isfinite(base.mean):
        ax.axhspan(base.mean - base.sd, base.mean + base.sd, color="0.85", zorder=0,
                   label=f"base: {base.mean:.4f} +- {base.sd:.4f}")
        ax.axhline(base.mean, color="0.5", lw=1, zorder=1)
    for x, s in enumerate(standings):
        colour = "0.35" if s.candidate.label == BASE else ("tab:green" if s is summary.winner else "tab:blue")
        offsets = np.linspace(-0.08, 0.08, len(s.values)) if len(s.values) > 1 else np.zeros(len(s.values))
        ax.scatter(x + offsets, s.values, color=colour, s=28, zorder=3,
                   label="validated, one point per seed" if x == 0 else None)
        if s.values:
            ax.hlines(s.mean, x - 0.18, x + 0.18, color=colour, lw=2, zorder=3)
        if math.isfinite(s.candidate.trial_fitness):
            ax.scatter([x + 0.3], [s.candidate.trial_fitness], marker="x", color="tab:red", s=36, zorder=3,
                       label="trial fitness (selection)" if not any(
                           math.isfinite(t.candidate.trial_fitness) for t in standings[:x]) else None)
    labels = [f"{s.candidate.label}\n{s.candidate.source_trial_id}".strip() for s in standings]
    ax.set_xticks(range(len(standings)), labels, fontsize=7)
    ax.set_xlim(-0.6, len(standings) - 0.4)
    ax.set_ylabel("fitness")
    ax.set_title(f"validation: {summary.seeds} new seed(s) x {summary.epochs} epochs; winner "
                 f"{summary.winner.candidate.label}\n{transfer_text(summary).split(';')[0]}", fontsize=8)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(Path(run_dir) / PLOT_NAME, buf.getvalue())
