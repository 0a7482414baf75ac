"""Which fidelity selects hyps that hold at the target length: each strategy at one equal trial-epoch budget.

Runs one evolution per ``--fidelity`` strategy from the same base hyp, data and seed, each validated the
same way (the top ``--validate-top`` distinct hyps, ``--validate-sentinels`` from lower in the ranking and
the base, on the same ``--validate-seeds`` new seeds of ``--target`` epochs), and prints per strategy the
transfer coefficient (Spearman between the trials' selection score and validated fitness over every
validated hyp, with n and its permutation p), the best candidate's paired gain over the base with its 95%
interval, the verdict, the trial-epochs spent and the wall time.

The budget is made equal by construction: the ``prefix`` run goes first (``--prefix-trials`` trials of
``--target`` epochs judged at ASHA rungs), and the ``compressed`` run then gets as many trials of
``--compressed-epochs`` as fit the trial-epochs the ``prefix`` run spent (rounded to whole generations of
``--population``). Both runs use the async loop, so every trial counts.

    python benchmarks/fidelity_transfer.py --data ../shared/data/bccd/data.yaml --target 20 \\
        --compressed-epochs 7 --prefix-trials 16
    python benchmarks/fidelity_transfer.py --data ../shared/data/bccd/data.yaml -- --hyp hyps/hyp.scratch-low.yaml \\
        --optimizer SGD          # the power check: a base known to be poor for the data
    python benchmarks/fidelity_transfer.py --data my.yaml --strategies compressed --budget 120

Extra flags after ``--`` go to both runs' orchestrate.py unchanged.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import harness  # first of the project's imports: puts the clone on sys.path
import real_gain

STRATEGIES = ("prefix", "compressed")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data YAML (YOLOv5 format)")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, run in this order")
    p.add_argument("--target", type=int, default=15, help="target length: validation epochs, prefix trials")
    p.add_argument("--compressed-epochs", type=int, default=5, help="epochs of a compressed trial")
    p.add_argument("--prefix-trials", type=int, default=16)
    p.add_argument("--budget", type=int, default=0,
                   help="trial-epochs for compressed when prefix is not run (0: from the prefix run)")
    p.add_argument("--population", type=int, default=4)
    p.add_argument("--grace-epochs", type=int, default=4,
                   help="first rung of prefix trials (4: the epoch after the default hyps' 3-epoch warmup)")
    p.add_argument("--reduction-factor", type=float, default=3.0)
    p.add_argument("--imgsz", type=int, default=192)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-images", type=int, default=0, help="first N train/val images (0: all)")
    p.add_argument("--validate-top", type=int, default=3)
    p.add_argument("--validate-sentinels", type=int, default=2)
    p.add_argument("--validate-seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default="runs/bench-fidelity")
    argv, extra = harness.split_passthrough(argv)
    args = p.parse_args(argv)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(args.strategies) - set(STRATEGIES))
    if unknown or not args.strategies:
        p.error(f"--strategies takes {', '.join(STRATEGIES)}, got {','.join(unknown) or 'none'}")
    if "prefix" not in args.strategies and "compressed" in args.strategies and args.budget <= 0:
        p.error("--budget is needed for compressed when prefix is not run")
    return args, extra


def generations_for(budget: int, epochs: int, population: int) -> int:
    """Whole generations of ``population`` trials of ``epochs`` closest to ``budget`` trial-epochs (>= 1)."""
    return max(1, round(budget / (epochs * population)))


def strategy_argv(args: argparse.Namespace, strategy: str, generations: int, extra: list[str]) -> list[str]:
    """orchestrate.py's flags for one strategy's run."""
    epochs = args.target if strategy == "prefix" else args.compressed_epochs
    argv = ["--data", args.data, "--mode", "async", "--fidelity", strategy, "--generations", str(generations),
            "--population", str(args.population), "--epochs", str(epochs), "--imgsz", str(args.imgsz),
            "--batch", str(args.batch), "--validate-top", str(args.validate_top),
            "--validate-sentinels", str(args.validate_sentinels), "--validate-seeds", str(args.validate_seeds),
            "--validate-epochs", str(args.target), "--seed", str(args.seed), "--project", args.project,
            "--name", strategy, "--exist-ok"]
    if strategy == "prefix":
        argv += ["--grace-epochs", str(args.grace_epochs), "--reduction-factor", str(args.reduction_factor)]
    if args.max_images:
        argv += ["--max-images", str(args.max_images)]
    return argv + extra


def spent(run_dir: Path) -> int:
    """The trial-epochs a run spent, from its fidelity.yaml."""
    from evolve.output.fidelity import read_summary

    return int(read_summary(run_dir)["trial_epochs"])


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    from evolve.config import config_from_argv
    from evolve.driver import run
    from evolve.output.console import setup_console

    setup_console()
    print(harness.machine_header(), flush=True)
    budget = args.budget
    results: list[tuple[str, Path, float, int]] = []
    for strategy in args.strategies:
        if strategy == "prefix":
            generations = max(1, -(-args.prefix_trials // args.population))
        else:
            generations = generations_for(budget, args.compressed_epochs, args.population)
        load = harness.load_average()
        start = time.monotonic()
        run_dir = run(config_from_argv(strategy_argv(args, strategy, generations, extra)))
        seconds = time.monotonic() - start
        used = spent(run_dir)
        if strategy == "prefix" and not args.budget:
            budget = used
        results.append((strategy, run_dir, seconds, used))
        print(f"== {strategy} ==", *real_gain.report(run_dir, seconds, load), sep="\n", flush=True)
    print("\nstrategy    trial-epochs  wall min  (equal budget: compressed rounded to whole generations)")
    for strategy, run_dir, seconds, used in results:
        print(f"{strategy:<11} {used:>12}  {seconds / 60:8.1f}  {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
