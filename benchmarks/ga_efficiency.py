"""GA efficiency: best fitness after a fixed trial budget on many landscape families, ours vs. baselines.

Every scheme gets the same budget of trained trials (300 by default) on each landscape instance (one per
seed) and is scored by the noise-free fitness of the hyp it would hand to the user (its best observed
trial) and by the regret to the landscape's known optimum. Medians over seeds are printed as Markdown,
with on how many seeds ours scored higher than each scheme. Our GA runs with its defaults, as a user
with this budget would run it: population 50 and ``generations = budget // population``; elites carried
over and repeated genomes are not retrained, so it may use slightly fewer trials than the budget.

Baselines: the YOLOv5 and Ultralytics mutation schemes and random search (``evolve.search.baselines``),
Optuna's multivariate TPE and CMA-ES, sequential and at our parallelism (``benchmarks/ga_baselines.py``,
the ``[bench]`` extra). Families: the surrogate trainer's four and ``ga_families.TUNING`` may be used to
choose defaults, on seeds 100 and up only; ``ga_families.HELD_OUT`` never is. Tables report seeds 0-9.

    python benchmarks/ga_efficiency.py                  # 10 seeds x 300 trials, every scheme and family
    python benchmarks/ga_efficiency.py --ablation       # also our GA with one idea changed at a time
    python benchmarks/ga_efficiency.py --ga surrogate=0 drift=0   # try other settings
    python benchmarks/ga_efficiency.py --async-slots 1 4 8         # the steady-state loop vs TPE

Results of every (scheme, family, seed) but ours are cached in ``--cache`` (a JSON file), so a change to
the GA reruns only the GA. ``--cache-ours`` caches ours and the async loop's too, so that one long
measurement can be run a family at a time (``--landscapes FAMILY``) and printed whole at the end; clear
the cache (or use another ``--cache``) after changing the GA.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

import harness  # first of the project's imports: puts the clone on sys.path
from ga_families import HELD_OUT, TUNING, space_for
from evolve.config import GAConfig, SurrogateOptions, TrialConfig
from evolve.search import surrogate
from evolve.search.baselines import (
    Objective,
    Trial,
    ga_search,
    random_search,
    ultralytics_tuner,
    yolov5_classic,
)
from evolve.search.space import SearchSpace

OURS = "ours (GA defaults)"
SCHEMES: dict[str, Callable[..., list[Trial]]] = {
    OURS: ga_search,
    "YOLOv5 classic": yolov5_classic,
    "Ultralytics tuner": ultralytics_tuner,
    "random search": random_search,
}
try:  # the [bench] extra; without it the table has the project's own baselines only
    from ga_baselines import cma, cma_batched, tpe, tpe_batched

    SCHEMES.update({"TPE seq.": tpe, "TPE 50 at a time": tpe_batched, "CMA-ES seq.": cma,
                    "CMA-ES pop 50": cma_batched})
except ImportError:
    pass
ABLATIONS: dict[str, dict[str, Any]] = {
    "ours, screen 1 (no pre-screen)": {"screen": 1},
    "ours, drift 0": {"drift": 0.0},
    "ours, covariance 0": {"covariance": 0.0},
    "ours, init spread": {"init": "spread"},
    "ours, screen 1, covariance 0 (previous defaults)": {"screen": 1, "covariance": 0.0},
    "ours, crossover one_point": {"crossover": "one_point"},
}
FAMILIES = {**{name: None for name in surrogate.LANDSCAPES}, **TUNING, **HELD_OUT}


def problem(space: SearchSpace, landscape: str, seed: int) -> tuple[Objective, Objective, float]:
    """(observed objective, noise-free score, optimum fitness) of one landscape instance."""
    if FAMILIES.get(landscape) is not None:
        family = FAMILIES[landscape](space, seed)
        return family.observe, family.fitness, family.best()
    cfg = TrialConfig(epochs=1, surrogate=SurrogateOptions(landscape=landscape, seed=seed))

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


class Cache:
    """Best noise-free fitness per (scheme, family, seed, budget), kept in a JSON file between runs."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, float] = json.loads(path.read_text()) if path and path.is_file() else {}

    def get(self, *key: Any) -> float | None:
        return self.data.get(repr(key))

    def put(self, value: float, *key: Any) -> None:
        self.data[repr(key)] = value
        if self.path:
            self.path.write_text(json.dumps(self.data, indent=0, sort_keys=True))


def run(schemes: dict[str, Callable[..., list[Trial]]], landscapes: list[str], seeds: list[int],
        budget: int, cache: Cache | None = None, cached: set[str] = frozenset(),
        verbose: bool = True) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (landscape, scheme): the noise-free best fitness per seed, the optimum per seed, trials used.

    Schemes named in ``cached`` read and write ``cache``.
    """
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for landscape in landscapes:
        space = space_for(FAMILIES.get(landscape))
        problems = [problem(space, landscape, seed) for seed in seeds]
        for name, scheme in schemes.items():
            start = time.perf_counter()
            best, opts = [], []
            for seed, (observe, score, opt) in zip(seeds, problems):
                value = cache.get(name, landscape, seed, budget) if cache and name in cached else None
                if value is None:
                    # The algorithm's seed differs from the landscape's so the two are not correlated.
                    trials = scheme(space, observe, budget, seed=1000 + seed)
                    value = score(max(trials, key=lambda t: t[1])[0])
                    if cache and name in cached:
                        cache.put(value, name, landscape, seed, budget)
                best.append(value)
                opts.append(opt)
            results[(landscape, name)] = {"best": best, "opt": opts}
            if verbose:
                print(f"  {landscape:28s} {name:34s} median {statistics.median(best):.4f} "
                      f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return results


def table(results: dict, landscapes: list[str], names: list[str], ours: str = OURS) -> str:
    """Markdown: one row per family, median best fitness per scheme (the best in bold), then on how many
    seeds ``ours`` scored higher than each other scheme."""
    short = [n.replace("ours, ", "") for n in names]
    lines = ["| family | " + " | ".join(short) + " |", "|---|" + "---:|" * len(names)]
    for landscape in landscapes:
        meds = [statistics.median(results[(landscape, n)]["best"]) for n in names]
        cells = [f"**{m:.3f}**" if m == max(meds) else f"{m:.3f}" for m in meds]
        lines.append(f"| {landscape} | " + " | ".join(cells) + " |")
    lines += ["", f"Seeds on which {ours} scored higher:", "",
              "| family | " + " | ".join(s for n, s in zip(names, short) if n != ours) + " |",
              "|---|" + "---:|" * (len(names) - 1)]
    for landscape in landscapes:
        a = results[(landscape, ours)]["best"]
        wins = [f"{sum(x > y for x, y in zip(a, results[(landscape, n)]['best']))}/{len(a)}"
                for n in names if n != ours]
        lines.append(f"| {landscape} | " + " | ".join(wins) + " |")
    return "\n".join(lines)


def async_table(results: dict, landscapes: list[str], slots: list[str], others: list[str],
                rivals: tuple[str, ...] = ("TPE seq.", "CMA-ES seq.", OURS)) -> str:
    """Markdown: median best fitness of the async loop per slot count beside the other schemes, then on
    how many seeds each slot count scored higher than each of ``rivals`` (those that were run)."""
    text = table(results, landscapes, [*slots, *others], ours=slots[0]).split("\n\n")[0]
    rivals = tuple(r for r in rivals if r in others)
    pairs = [(a, r) for r in rivals for a in slots]
    head = [f"{a.replace('ours async, ', '')} vs {r.replace(' (GA defaults)', ' generational')}"
            for a, r in pairs]
    lines = ["", "Seeds on which the async loop scored higher:", "",
             "| family | " + " | ".join(head) + " |", "|---|" + "---:|" * len(pairs)]
    for landscape in landscapes:
        cells = []
        for a, r in pairs:
            x, y = results[(landscape, a)]["best"], results[(landscape, r)]["best"]
            cells.append(f"{sum(p > q for p, q in zip(x, y))}/{len(x)}")
        lines.append(f"| {landscape} | " + " | ".join(cells) + " |")
    if "TPE seq." in others:
        tpe = {ls: statistics.median(results[(ls, "TPE seq.")]["best"]) for ls in landscapes}
        counts = [f"{a.replace('ours async, ', '')}: "
                  f"{sum(statistics.median(results[(ls, a)]['best']) >= tpe[ls] for ls in landscapes)}"
                  f"/{len(landscapes)}" for a in slots]
        lines += ["", "Families where the async loop's median >= sequential TPE's: " + ", ".join(counts)]
    return text + "\n" + "\n".join(lines)


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
    parser.add_argument("--first-seed", type=int, default=0,
                        help="first landscape seed; defaults are tuned on seeds 100 and up, reported on 0-9")
    parser.add_argument("--landscapes", nargs="+", default=list(FAMILIES), choices=list(FAMILIES),
                        metavar="FAMILY")
    parser.add_argument("--schemes", nargs="*", default=list(SCHEMES), metavar="SCHEME",
                        help="which of the schemes to run (default all; none: the async loop alone)")
    parser.add_argument("--ga", nargs="*", default=[], metavar="KEY=VALUE",
                        help="change our GA's settings (GAConfig fields), e.g. mutation_sigma=0.1")
    parser.add_argument("--ablation", action="store_true", help="also run our GA with each idea removed")
    parser.add_argument("--async-slots", nargs="*", type=int, default=[], metavar="N",
                        help="also run our steady-state loop with N trials in flight (random durations)")
    parser.add_argument("--async-ga", nargs="*", default=[], metavar="KEY=VALUE",
                        help="change the steady-state loop's settings (GAConfig fields), e.g. age=100")
    parser.add_argument("--cache", type=Path, default=Path("runs/ga_efficiency_cache.json"),
                        help="JSON cache of the baselines' results ('' for none)")
    parser.add_argument("--cache-ours", action="store_true",
                        help="also cache our GA's and the async loop's results (only while the GA code and "
                             "settings stay the same: to split one long measurement into several runs)")
    parser.add_argument("--write", type=Path, help="also write the tables (Markdown) to this file")
    args = parser.parse_args(argv)
    schemes = {n: SCHEMES[n] for n in args.schemes}
    if args.ga:
        schemes[OURS] = ga_with(parse_overrides(args.ga), args.budget)
    cache = Cache(args.cache if str(args.cache) not in ("", ".") else None)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    start = time.perf_counter()
    cached = set(schemes) if args.cache_ours and not args.ga else set(schemes) - {OURS}
    results = run(schemes, args.landscapes, seeds, args.budget, cache, cached)
    names = list(schemes)
    if args.async_slots:
        from ga_async import async_scheme

        tag = "".join(f", {item}" for item in args.async_ga)  # a changed loop caches under its own name
        overrides = parse_overrides(args.async_ga)
        extra = {f"ours async, {n} slot{'s' if n != 1 else ''}{tag}": async_scheme(n, overrides)
                 for n in args.async_slots}
        results.update(run(extra, args.landscapes, seeds, args.budget, cache,
                           set(extra) if args.cache_ours else set()))
    text = table(results, args.landscapes, names) if names else ""
    if args.async_slots:
        text += "\n\nThe async (steady-state) loop, random trial durations (median best fitness):\n\n"
        text += async_table(results, args.landscapes, list(extra), names)
    if args.ablation:
        extra = {name: ga_with(ov, args.budget) for name, ov in ABLATIONS.items()}
        results.update(run(extra, args.landscapes, seeds, args.budget))
        text += "\n\nAblation (our GA, one idea removed or changed):\n\n"
        text += table(results, args.landscapes, [OURS, *extra])
    elapsed = time.perf_counter() - start
    lead = [ls for ls in args.landscapes if names
            and max(names, key=lambda n: statistics.median(results[(ls, n)]["best"])) == OURS]
    footer = (f"\n\nseeds {seeds[0]}-{seeds[-1]} x {args.budget} trials; ours has the best median on "
              f"{len(lead)}/{len(args.landscapes)} families; {elapsed:.0f} s (cached results not timed)\n"
              f"{harness.machine_header()}")
    text = text.lstrip("\n")
    print(text + footer)
    if args.write:
        args.write.write_text(text + footer + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
