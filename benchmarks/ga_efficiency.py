"""GA efficiency: best fitness after a fixed trial budget on the surrogate landscapes, ours vs. baselines.

Every scheme gets the same budget of trained trials (300 by default) on each landscape instance (one per
seed) and is scored by the noise-free fitness of the hyp it would hand to the user (its best observed
trial) and by the regret to the landscape's known optimum. Medians over seeds are printed as Markdown.
Our GA runs with its defaults, as a user with this budget would run it: population 50 and
``generations = budget // population``; elites carried over and repeated genomes are not retrained, so
it may use slightly fewer trials than the budget (column ``trials``).

A held-out landscape family (Gaussian peaks scattered around the base hyp, defined only here and never
used to tune the GA) checks that the ordering is not an artefact of the four tuned-on landscapes.

    python benchmarks/ga_efficiency.py                  # 10 seeds x 300 trials, 4 schemes, 5 landscapes
    python benchmarks/ga_efficiency.py --ablation       # also our GA with each crossover / mutation
    python benchmarks/ga_efficiency.py --ga mutation_sigma=0.1 crossover=one_point   # try other settings
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detector.config import TrainConfig
from evolve import surrogate
from evolve.baselines import (
    Objective,
    Trial,
    ga_search,
    random_search,
    ultralytics_tuner,
    yolov5_classic,
)
from evolve.ga import GAConfig
from evolve.space import SearchSpace

OURS = "ours (GA defaults)"
SCHEMES: dict[str, Callable[..., list[Trial]]] = {
    OURS: ga_search,
    "YOLOv5 classic": yolov5_classic,
    "Ultralytics tuner": ultralytics_tuner,
    "random search": random_search,
}
HELD_OUT = "peaks (held out)"
ABLATIONS: dict[str, dict[str, Any]] = {
    "ours, crossover one_point": {"crossover": "one_point"},
    "ours, crossover uniform": {"crossover": "uniform"},
    "ours, mutation polynomial": {"mutation": "polynomial"},
    "ours, init random": {"init": "random"},
}


class Peaks:
    """Held-out family: Gaussian peaks around the base hyp; the highest one is the global optimum."""

    def __init__(self, space: SearchSpace, seed: int, n_peaks: int = 6) -> None:
        rng = np.random.default_rng([seed, 777])
        self.space = space
        base = np.array(space.encode(space.base))
        n = len(space)
        # The highest peak lies near the base (good defaults sit near good hyps); the others are
        # scattered further to act as decoys.
        spread = np.array([[0.12]] + [[0.25]] * (n_peaks - 1))
        self.centres = np.clip(base + rng.normal(0.0, 1.0, size=(n_peaks, n)) * spread, 0.02, 0.98)
        self.heights = np.concatenate([[1.0], rng.uniform(0.55, 0.85, n_peaks - 1)])
        # Per-peak, per-key widths: a peak is narrow along some keys and broad along others.
        self.widths = rng.uniform(0.25, 0.6, size=(n_peaks, n))

    def fitness(self, hyp: dict[str, float]) -> float:
        u = np.array(self.space.encode(hyp))
        z = ((u - self.centres) / self.widths) ** 2
        # 0.632 is the surrogate's best fitness, so both families read on the same scale.
        return 0.632 * float(np.max(self.heights * np.exp(-0.5 * z.sum(axis=1))))

    def best(self) -> float:
        return max(self.fitness(self.space.decode(c.tolist())) for c in self.centres)


def problem(space: SearchSpace, landscape: str, seed: int) -> tuple[Objective, Objective, float]:
    """(observed objective, noise-free score, optimum fitness) of one landscape instance."""
    if landscape == HELD_OUT:
        peaks = Peaks(space, seed)
        return peaks.fitness, peaks.fitness, peaks.best()
    cfg = TrainConfig(epochs=1, extra={"surrogate": {"landscape": landscape, "seed": seed}})

    def observe(hyp: dict[str, float]) -> float:
        return surrogate.train(hyp, cfg).fitness

    def score(hyp: dict[str, float]) -> float:
        return surrogate.true_fitness(hyp, landscape, seed)

    return observe, score, surrogate.optimum(landscape, space, seed)[1]


def ga_with(overrides: dict[str, Any], budget: int) -> Callable[..., list[Trial]]:
    """Our GA with some settings changed, otherwise exactly as ``ga_search`` runs it by default."""

    def scheme(space: SearchSpace, objective: Objective, budget_: int, seed: int = 0) -> list[Trial]:
        cfg = GAConfig(**{"generations": max(1, budget // GAConfig().population), "seed": seed, **overrides})
        return ga_search(space, objective, budget_, cfg=cfg)

    return scheme


def run(schemes: dict[str, Callable[..., list[Trial]]], landscapes: list[str], seeds: int,
        budget: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (landscape, scheme): the noise-free best fitness per seed, the optimum per seed, trials used."""
    space = SearchSpace.load()
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for landscape in landscapes:
        problems = [problem(space, landscape, seed) for seed in range(seeds)]
        for name, scheme in schemes.items():
            best, opts, used = [], [], []
            for seed, (observe, score, opt) in enumerate(problems):
                # The algorithm's seed differs from the landscape's so the two are not correlated.
                trials = scheme(space, observe, budget, seed=1000 + seed)
                best.append(score(max(trials, key=lambda t: t[1])[0]))
                opts.append(opt)
                used.append(len(trials))
            results[(landscape, name)] = {"best": best, "opt": opts, "trials": max(used)}
    return results


def table(results: dict, landscapes: list[str], names: list[str], mark: bool = True) -> str:
    """Markdown: medians (the headline), means, and on how many seeds ours beat each scheme."""
    header = ("| landscape | scheme | median best fitness | median regret | mean best fitness "
              "| ours better on | trials |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|"]
    for landscape in landscapes:
        top = max(statistics.median(results[(landscape, n)]["best"]) for n in names)
        ours = results[(landscape, OURS)]["best"]
        for name in names:
            r = results[(landscape, name)]
            med = statistics.median(r["best"])
            regret = statistics.median(o - b for o, b in zip(r["opt"], r["best"]))
            wins = "" if name == OURS else f"{sum(a > b for a, b in zip(ours, r['best']))}/{len(ours)}"
            label = f"**{name}**" if mark and med == top else name
            lines.append(f"| {landscape} | {label} | {med:.4f} | {regret:.4f} | "
                         f"{statistics.fmean(r['best']):.4f} | {wins} | {r['trials']} |")
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    known = {f.name for f in fields(GAConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"--ga: expected KEY=VALUE with KEY a GAConfig field, got {item!r}")
        parsed = yaml.safe_load(value)
        out[key] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=300, help="trained trials per run")
    parser.add_argument("--seeds", type=int, default=10, help="landscape instances (and algorithm seeds)")
    parser.add_argument("--landscapes", nargs="+", default=[*surrogate.LANDSCAPES, HELD_OUT])
    parser.add_argument("--ga", nargs="*", default=[], metavar="KEY=VALUE",
                        help="change our GA's settings (GAConfig fields), e.g. mutation_sigma=0.1")
    parser.add_argument("--ablation", action="store_true", help="also run our GA with each operator choice")
    parser.add_argument("--write", type=Path, help="also write the tables (Markdown) to this file")
    args = parser.parse_args(argv)
    schemes = dict(SCHEMES)
    if args.ga:
        schemes[OURS] = ga_with(parse_overrides(args.ga), args.budget)
    start = time.perf_counter()
    results = run(schemes, args.landscapes, args.seeds, args.budget)
    text = table(results, args.landscapes, list(schemes))
    if args.ablation:
        extra = {name: ga_with(ov, args.budget) for name, ov in ABLATIONS.items()}
        results.update(run(extra, args.landscapes, args.seeds, args.budget))
        text += "\n\nAblation (our GA, one setting changed from the defaults):\n\n"
        text += table(results, args.landscapes, [OURS, *extra], mark=False)
    elapsed = time.perf_counter() - start
    wins = [ls for ls in args.landscapes
            if max(SCHEMES, key=lambda n: statistics.median(results[(ls, n)]["best"])) == OURS]
    footer = (f"\n\n{args.seeds} seeds x {args.budget} trials; ours has the best median on {len(wins)}/"
              f"{len(args.landscapes)} landscapes; {elapsed:.0f} s on "
              f"{platform.processor() or platform.machine()}"
              f", Python {platform.python_version()}")
    print(text + footer)
    if args.write:
        args.write.write_text(text + footer + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
