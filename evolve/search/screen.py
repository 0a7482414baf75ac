"""A cheap model of fitness over genomes, used to pre-screen bred children before any is trained.

Breeding is free and a trial can cost GPU-hours, so the GA breeds several candidates per child slot and
keeps the one this model rates highest (``GeneticAlgorithm`` with ``GAConfig.screen`` > 1). The model is
a Gaussian-process regression in plain numpy: a squared-exponential kernel on the normalised genome,
targets turned into normal scores of their ranks (so a failed trial at 0, a heavy tail or another fitness
scale does not distort it), the length scale and noise level chosen by marginal likelihood from a small
grid. It is refitted from scratch for every generation and is deterministic (no random numbers).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

LENGTH_SCALES = (0.02, 0.035, 0.06, 0.1, 0.17, 0.3)  # per-gene length scale, times sqrt(genes)
NOISE_LEVELS = (1e-3, 0.05, 0.2)  # noise variance relative to the (unit) signal variance
MAX_POINTS = 400  # fit on at most this many genomes: the best half and the most recent others
MIN_POINTS = 8  # fewer evaluated genomes than this: no model, candidates are taken as bred


def normal_scores(values: np.ndarray) -> np.ndarray:
    """Ranks mapped to standard normal quantiles; ties share the mean of their ranks."""
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for v in np.unique(values):  # average ranks of tied values
        tied = values == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    dist = NormalDist()
    return np.array([dist.inv_cdf((r + 0.5) / len(values)) for r in ranks])


class FitnessModel:
    """Gaussian-process posterior mean of (rank-transformed) fitness, fitted on evaluated genomes."""

    def __init__(self, genomes: Sequence[Sequence[float]], fitness: Sequence[float]) -> None:
        x = np.asarray(genomes, dtype=float)
        y = np.asarray(fitness, dtype=float)
        y = np.where(np.isfinite(y), y, np.nanmin(np.where(np.isfinite(y), y, np.nan)) if
                     np.isfinite(y).any() else 0.0)
        if len(x) > MAX_POINTS:
            # The best half says where the optimum is; the most recent others say what was tried lately.
            best = set(np.argsort(-y, kind="stable")[: MAX_POINTS // 2].tolist())
            recent = [i for i in range(len(x) - 1, -1, -1) if i not in best][: MAX_POINTS - len(best)]
            keep = sorted(best | set(recent))
            x, y = x[keep], y[keep]
        self.x = x
        self.ok = len(x) >= MIN_POINTS and np.ptp(y) > 0
        if not self.ok:
            return
        z = normal_scores(y)
        self.mean = float(z.mean())
        z = z - self.mean
        d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
        n, genes = x.shape
        best_lml, best = -math.inf, None
        for ls in LENGTH_SCALES:
            k = np.exp(-0.5 * d2 / (ls * ls * genes))
            for noise in NOISE_LEVELS:
                try:
                    chol = np.linalg.cholesky(k + (noise + 1e-8) * np.eye(n))
                except np.linalg.LinAlgError:
                    continue
                alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
                lml = -0.5 * float(z @ alpha) - float(np.log(np.diag(chol)).sum())
                if lml > best_lml:
                    best_lml, best = lml, (ls, alpha)
        if best is None:
            self.ok = False
            return
        self.length, self.alpha = best[0] * best[0] * genes, best[1]

    def predict(self, genomes: Sequence[Sequence[float]]) -> np.ndarray:
        """Predicted normal score of each genome (higher is better); zeros when there is no model."""
        c = np.asarray(genomes, dtype=float)
        if not self.ok:
            return np.zeros(len(c))
        d2 = ((c[:, None, :] - self.x[None, :, :]) ** 2).sum(axis=2)
        return self.mean + np.exp(-0.5 * d2 / self.length) @ self.alpha
