"""How well one evolution keeps a cluster busy: slot utilisation, orchestration overhead, early stopping.

Everything runs on one embedded Ray that declares 8 logical GPUs (and 8 logical CPUs, whatever the
machine has), with the surrogate trainer standing in for training, so a plan for an 8-GPU node is
measured on a laptop. Evolutions are run exactly as ``orchestrate.py`` runs them (its parser and
``evolve.run``); all figures are read back from Ray Tune's own per-trial records (``result.json`` under
the run's ``ray/`` storage folder: ``start_time``, ``end_time``, ``pid``, ``gpu_ids``, ``epoch``) and from
``evolve.csv``.

1. Utilisation, generational vs async: ``--gpus-per-trial 1`` (8 slots), simulated trial durations
   spread 3x (``--surrogate-seconds S --surrogate-spread 0.5``: 0.5 S .. 1.5 S), the same budget
   (population x generations individuals) in both modes. Slot utilisation = busy trial-seconds / slots /
   wall, where busy trial-seconds is the sum of the trials' (end - start). Two windows: the whole run
   (first trial's start to last trial's end) and the steady state (from the moment every slot has
   started a trial to the start of the last trial: no start-up ramp, no final drain). The gap is the time
   a worker sits between the end of one trial and the start of its next one: the orchestration overhead
   per trial as a slot sees it.
2. Orchestration overhead with trials that take no time (async): trials per second through the driver
   and slot-time per trial = wall x workers used / trials.
3. Early stopping: async, 10 epochs per trial, ``--early-stop asha`` vs none at the same number of
   trials, over a few seeds: compute saved = 1 - epochs trained with ASHA / epochs without (epochs read
   from the trials' reports), and the best finished fitness with ASHA relative to without.

Targets: async utilisation >= 0.95 and >= 1.2x generational; overhead <= 1 s per trial; compute saved
>= 40% with best fitness within 1% of no stopping (medians over the seeds).

    python benchmarks/orchestration.py                      # everything: 7-10 minutes on 2 shared cores
    python benchmarks/orchestration.py --parts utilisation --seconds 6 --keep runs/bench-orch
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness  # first of the project's imports: puts the clone on sys.path

SLOTS = 8
PARTS = ("utilisation", "overhead", "early-stop")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS))
    p.add_argument("--seconds", type=float, default=4.0, help="mean simulated trial duration (part 1)")
    p.add_argument("--spread", type=float, default=0.5,
                   help="durations span (1 - spread)..(1 + spread) x the mean")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--generations", type=int, default=10, help="budget = population x generations trials")
    p.add_argument("--overhead-trials", type=int, default=64, help="0-second trials of part 2")
    p.add_argument("--es-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4], help="seeds of part 3")
    p.add_argument("--es-generations", type=int, default=4, help="budget of part 3: population x this")
    p.add_argument("--es-epochs", type=int, default=10)
    p.add_argument("--es-seconds", type=float, default=1.5, help="mean trial duration in part 3")
    p.add_argument("--grace-epochs", type=int, default=1)
    p.add_argument("--reduction-factor", type=float, default=3.0)
    p.add_argument("--keep", metavar="DIR", help="keep the run folders under DIR (default: a temp folder)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the evolutions' own logs")
    return p.parse_args(argv)


@dataclass
class Trial:
    """One trial as Ray Tune recorded it."""

    trial_id: str
    start: float
    end: float
    pid: int
    gpus: tuple[str, ...]
    epochs: int
    final: bool
    status: str
    fitness: float


def read_tune_records(run_dir: Path) -> list[Trial]:
    """Every trial of a run from Ray Tune's ``result.json`` files (one JSON report per line)."""
    trials = []
    for path in sorted((run_dir / "ray").glob("*/*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        first, last = rows[0], rows[-1]
        trials.append(Trial(
            trial_id=str(last.get("trial_id", path.parent.name)), start=float(first["start_time"]),
            end=float(last["end_time"]), pid=int(last["pid"]),
            gpus=tuple(str(g) for g in last.get("gpu_ids", [])),
            epochs=max(int(r.get("epoch", 0) or 0) for r in rows), final=bool(last.get("final")),
            status=str(last.get("status", "")), fitness=float(last.get("fitness", 0.0))))
    return trials


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an interval ending exactly when another starts does not count)."""
    # at equal times ends (-1) sort before starts (+1)
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def utilisation(trials: list[Trial], slots: int) -> dict[str, Any]:
    """Slot utilisation, wall window, per-worker gaps and GPU placement of a run's trials."""
    start, end = min(t.start for t in trials), max(t.end for t in trials)
    busy = sum(t.end - t.start for t in trials)
    gaps = []
    by_pid: dict[int, list[Trial]] = {}
    for t in trials:
        by_pid.setdefault(t.pid, []).append(t)
    for runs in by_pid.values():
        runs.sort(key=lambda t: t.start)
        gaps += [b.start - a.end for a, b in itertools.pairwise(runs)]
    per_gpu: dict[str, list[tuple[float, float]]] = {}
    for t in trials:
        for g in t.gpus:
            per_gpu.setdefault(g, []).append((t.start, t.end))
    # Steady state: from the moment every slot has started a trial to the start of the last trial (after
    # it the run only drains). Actor start-up and the final drain are costs of a finite run, not of the
    # scheduling policy; barriers between generations fall inside the window and count.
    first_on_slot = [min(s for s, _ in v) for v in per_gpu.values()]
    t_a = max(first_on_slot) if len(first_on_slot) >= slots else start
    t_b = max(t.start for t in trials)
    steady = float("nan")
    if t_b > t_a:
        inside = sum(max(0.0, min(t.end, t_b) - max(t.start, t_a)) for t in trials)
        steady = inside / slots / (t_b - t_a)
    return {"trials": len(trials), "wall": end - start, "busy": busy, "util": busy / slots / (end - start),
            "steady": steady, "steady_window": t_b - t_a, "ramp": t_a - start,
            "gap_mean": statistics.fmean(gaps) if gaps else float("nan"),
            "gap_median": statistics.median(gaps) if gaps else float("nan"),
            "workers": len(by_pid), "gpus_used": len(per_gpu),
            "max_per_gpu": max((max_overlap(v) for v in per_gpu.values()), default=0),
            "max_running": max_overlap([(t.start, t.end) for t in trials])}


def evolve_run(flags: list[str], project: Path, name: str) -> Path:
    """Run one evolution in this process exactly as ``orchestrate.py`` would with ``flags``."""
    import evolve

    # The figures are read from the evolution's own trials: no validation runs after it.
    return evolve.run(evolve.config_from_argv([*flags, "--validate-top", "0", "--project", str(project),
                                               "--name", name]))


def common_flags(args: argparse.Namespace, mode: str, seconds: float, seed: int, epochs: int,
                 generations: int | None = None) -> list[str]:
    flags = ["--trainer", "surrogate", "--surrogate-landscape", "smooth", "--surrogate-seconds", str(seconds),
             "--surrogate-spread", str(args.spread), "--epochs", str(epochs), "--seed", str(seed),
             "--population", str(args.population), "--generations", str(generations or args.generations),
             "--gpus-per-trial", "1", "--cpus-per-trial", "1", "--num-gpus", str(SLOTS),
             "--num-cpus", str(SLOTS), "--mode", mode, "--fidelity", "compressed"]
    # compressed: whole trials of --epochs, stopped only where a part asks for --early-stop asha itself.
    return flags


def part_utilisation(args: argparse.Namespace, project: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for mode in ("generational", "async"):
        t0 = time.perf_counter()
        run_dir = evolve_run(common_flags(args, mode, args.seconds, 0, 1), project, f"util-{mode}")
        driver_wall = time.perf_counter() - t0
        stats = utilisation(read_tune_records(run_dir), SLOTS)
        stats["driver_wall"] = driver_wall
        stats["rows"] = count_rows(run_dir)
        out[mode] = stats
    print_utilisation(args, out)
    return out


def count_rows(run_dir: Path) -> int:
    import pandas as pd

    return len(pd.read_csv(run_dir / "evolve.csv"))


def print_utilisation(args: argparse.Namespace, out: dict[str, dict[str, Any]]) -> None:
    lo, hi = args.seconds * (1 - args.spread), args.seconds * (1 + args.spread)
    print(f"\n1. slot utilisation: {SLOTS} logical GPUs, 1 GPU per trial, surrogate trials of "
          f"{lo:g}..{hi:g} s, {args.population} x {args.generations} trials")
    print(f"{'mode':<13} {'trials':>6} {'rows':>5} {'wall s':>7} {'busy s':>7} {'util':>6} {'steady':>6} "
          f"{'ramp s':>6} {'gap ms':>6} {'workers':>7} {'GPUs':>4} {'max/GPU':>7} {'driver s':>8}")
    for mode, s in out.items():
        print(f"{mode:<13} {s['trials']:>6} {s['rows']:>5} {s['wall']:>7.1f} {s['busy']:>7.1f} "
              f"{s['util']:>6.3f} {s['steady']:>6.3f} {s['ramp']:>6.1f} {1000 * s['gap_median']:>6.0f} "
              f"{s['workers']:>7} {s['gpus_used']:>4} {s['max_per_gpu']:>7} {s['driver_wall']:>8.1f}")
    if "async" in out and "generational" in out:
        a, g = out["async"], out["generational"]
        ratio = a["steady"] / g["steady"]
        met = a["steady"] >= 0.95 and ratio >= 1.2
        print(f"steady state: async {a['steady']:.3f}, {ratio:.2f}x generational; "
              f"target async >= 0.95 and >= 1.2x: {'met' if met else 'NOT met'}")
        # The ramp and the drain cost a few trial lengths per slot once per run, whatever the policy: for a
        # run of this size they weigh a few percent, for an evolution of thousands of trials nothing.
        print(f"whole run (with the start-up ramp and the final drain): async {a['util']:.3f}, "
              f"{a['util'] / g['util']:.2f}x generational")
        print(f"orchestration overhead per trial, async (mean gap between trials on a worker): "
              f"{1000 * a['gap_mean']:.0f} ms; target <= 1000 ms: "
              f"{'met' if a['gap_mean'] <= 1.0 else 'NOT met'}")


def part_overhead(args: argparse.Namespace, project: Path) -> dict[str, Any]:
    generations = max(1, args.overhead_trials // args.population)
    flags = common_flags(args, "async", 0.0, 0, 1, generations=generations)
    run_dir = evolve_run(flags, project, "overhead")
    s = utilisation(read_tune_records(run_dir), SLOTS)
    # With trials that take no time a worker is free again at once: a reused worker often takes the next
    # trial before the other workers have even started, so the slots actually used are the workers seen.
    per_trial = s["wall"] * s["workers"] / s["trials"]
    print(f"\n2. orchestration overhead: async, {s['trials']} trials of 0 s, {SLOTS} slots")
    print(f"wall {s['wall']:.1f} s on {s['workers']} worker(s): {s['trials'] / s['wall']:.1f} trials/s "
          f"through the driver; slot-time per trial (wall x workers / trials) {1000 * per_trial:.0f} ms, "
          f"median gap between trials on a worker {1000 * s['gap_median']:.0f} ms; target <= 1000 ms: "
          f"{'met' if per_trial <= 1.0 else 'NOT met'}")
    s["per_trial"] = per_trial
    return s


def part_early_stop(args: argparse.Namespace, project: Path) -> list[dict[str, Any]]:
    from evolve.output.records import RunRecords

    rows = []
    print(f"\n3. early stopping: async, {args.population} x {args.es_generations} trials of "
          f"{args.es_epochs} epochs, ASHA grace {args.grace_epochs} epoch(s), "
          f"reduction factor {args.reduction_factor:g}")
    print(f"{'seed':>4} {'epochs none':>11} {'epochs asha':>11} {'stopped tune/csv':>16} {'saved':>6} "
          f"{'best none':>9} {'best asha':>9} {'asha/none':>9}")
    for seed in args.es_seeds:
        res = {}
        for es in ("none", "asha"):
            flags = common_flags(args, "async", args.es_seconds, seed, args.es_epochs, args.es_generations)
            if es == "asha":
                flags += ["--early-stop", "asha", "--grace-epochs", str(args.grace_epochs),
                          "--reduction-factor", str(args.reduction_factor)]
            run_dir = evolve_run(flags, project, f"es-{es}-s{seed}")
            trials = read_tune_records(run_dir)
            best = RunRecords(run_dir).best()
            csv_stopped = sum(r.metrics.status == "stopped" for r in RunRecords(run_dir).rows())
            res[es] = {"epochs": sum(t.epochs for t in trials), "trials": len(trials),
                       "stopped": f"{sum(not t.final for t in trials)}/{csv_stopped}",
                       "best": best.metrics.fitness if best is not None else 0.0}
        row = {"seed": seed, "epochs_none": res["none"]["epochs"], "epochs_asha": res["asha"]["epochs"],
               "stopped": res["asha"]["stopped"], "saved": 1 - res["asha"]["epochs"] / res["none"]["epochs"],
               "best_none": res["none"]["best"], "best_asha": res["asha"]["best"]}
        row["ratio"] = row["best_asha"] / row["best_none"] if row["best_none"] else float("nan")
        rows.append(row)
        print(f"{seed:>4} {row['epochs_none']:>11} {row['epochs_asha']:>11} {row['stopped']:>16} "
              f"{row['saved']:>6.1%} {row['best_none']:>9.5f} {row['best_asha']:>9.5f} {row['ratio']:>9.4f}",
              flush=True)
    saved = statistics.median(r["saved"] for r in rows)
    ratio = statistics.median(r["ratio"] for r in rows)
    met = saved >= 0.40 and ratio >= 0.99
    print(f"median: compute saved {saved:.1%}, best fitness with ASHA {ratio:.4f} x without; "
          f"target saved >= 40% with best within 1%: {'met' if met else 'NOT met'}")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import ray

    # One Ray for every run: the runner reuses an initialised Ray. 8 logical CPUs on any machine: they are
    # only a count for the scheduler (the surrogate's trials sleep). "local" starts a new Ray even where a
    # cluster started with 'ray start' is running on this machine.
    ray.init(address="local", num_cpus=SLOTS, num_gpus=SLOTS, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    project = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="yolo-evolve-orch-"))
    start = time.perf_counter()
    print(harness.machine_header())
    print(f"Ray {ray.__version__} with {SLOTS} logical GPUs and "
          f"{SLOTS} logical CPUs; runs in {project}", flush=True)
    try:
        if "utilisation" in args.parts:
            part_utilisation(args, project)
        if "overhead" in args.parts:
            part_overhead(args, project)
        if "early-stop" in args.parts:
            part_early_stop(args, project)
    finally:
        ray.shutdown()
        if not args.keep:
            shutil.rmtree(project, ignore_errors=True)
    print(f"\nbenchmark wall time {time.perf_counter() - start:.0f} s; load average after {harness.load_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
