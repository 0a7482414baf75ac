"""What an evolution gains over the default hyps on a real data set, measured by validation.

Runs one evolution with the built-in detector on ``--data`` at a stated budget (generations x population
trials of ``--epochs`` epochs), then validates the top ``--validate-top`` distinct hyps and the base hyp
with ``--validate-seeds`` new seeds of ``--validate-epochs`` epochs, exactly as ``orchestrate.py`` does
(its parser and ``evolve.run``). Prints the base's validated fitness, the winner's, the gain with its
seed spread, the Spearman rank correlation between trial and validated fitness (how well the short
trials ranked the hyps), and the wall time. The figures are read back from the run's
``validation.csv`` and ``evolve.csv``.

    python benchmarks/real_gain.py --data ../shared/data/bccd/data.yaml        # the first recorded run, 34 min
    python benchmarks/real_gain.py --data ../shared/data/bccd/data.yaml --generations 2 --population 4 \
        --epochs 6 --imgsz 256 --batch 16 --max-images 0 --validate-epochs 10  # 16 min
    python benchmarks/real_gain.py --data ../shared/data/bccd/data.yaml --generations 3 --population 8 \
        --epochs 10 --imgsz 256 --batch 16 --max-images 0 --validate-epochs 30  # the latest, 46 min
    python benchmarks/real_gain.py --data my.yaml --generations 6 --population 8 --epochs 30 --imgsz 640 \\
        --max-images 0 --batch 16 --validate-epochs 100 -- --gpus-per-trial 0.25   # a GPU budget

The defaults are the budget recorded in docs/benchmarks.md, sized for 2 shared CPU cores: 3 generations
of 4 (10 trials) of 4 epochs on the first 160 training images at 128 px, batch 8; the top 3 and the base
validated with 2 seeds of 8 epochs.

Extra flags after ``--`` go to orchestrate.py unchanged (``-- --address auto``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import harness  # first of the project's imports: puts the clone on sys.path


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data YAML (YOLOv5 format)")
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--population", type=int, default=4)
    p.add_argument("--epochs", type=int, default=4, help="epochs of every evolution trial")
    p.add_argument("--fidelity", default="compressed", help="--fidelity of the evolution (compressed: short "
                   "trials, validated longer)")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-images", type=int, default=160, help="first N train/val images (0: all)")
    p.add_argument("--validate-top", type=int, default=3)
    p.add_argument("--validate-seeds", type=int, default=2)
    p.add_argument("--validate-epochs", type=int, default=8, help="epochs of a validation run (0: the fidelity's "
                   "target length, 3x --epochs under compressed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default="runs/bench-real-gain")
    p.add_argument("--name", default="exp")
    argv, extra = harness.split_passthrough(argv)
    return p.parse_args(argv), extra


def orchestrate_argv(args: argparse.Namespace, extra: list[str]) -> list[str]:
    argv = ["--data", args.data, "--fidelity", args.fidelity, "--generations", str(args.generations),
            "--population", str(args.population), "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch", str(args.batch),
            "--validate-top", str(args.validate_top), "--validate-seeds", str(args.validate_seeds),
            "--seed", str(args.seed), "--project", args.project, "--name", args.name]
    if args.max_images:
        argv += ["--max-images", str(args.max_images)]
    if args.validate_epochs:
        argv += ["--validate-epochs", str(args.validate_epochs)]
    return argv + extra


def report(run_dir: Path, seconds: float, load: tuple[float, float, float]) -> list[str]:
    """The benchmark's lines, from the run's records."""
    import pandas as pd

    from evolve.config import config_from_argv
    from evolve.loops.plan import prepare
    from evolve.loops.winners import choose_candidates
    from evolve.output.fidelity import read_summary
    from evolve.output.records import RunRecords
    from evolve.output.winners import (
        ValidationRecords,
        summarise,
        summary_line,
        transfer_text,
    )

    plan = prepare(config_from_argv(["--resume", str(run_dir)]))
    rows = RunRecords(run_dir, plan.space.keyset).rows()
    validated = ValidationRecords(run_dir).rows()
    labels = {r.candidate for r in validated}
    top = sum(label.startswith("top") for label in labels)
    sentinels = sum(label.startswith("sentinel") for label in labels)
    candidates, _ = choose_candidates(rows, plan.space, top, sentinels)
    seeds = len({r.seed for r in validated})
    epochs = validated[0].epochs if validated else 0
    summary = summarise(candidates, validated, seeds, epochs)
    trials = pd.read_csv(run_dir / "evolve.csv")
    base, winner = summary.base, summary.winner
    fidelity = read_summary(run_dir)
    intervals = ", ".join(f"{s.candidate.label} [{s.paired.low:+.4f}, {s.paired.high:+.4f}]"
                          for s in summary.tops if s.paired is not None)
    return [
        f"run: {run_dir} ({len(trials)} trials of {plan.cfg.train.epochs} epochs at "
        f"{plan.cfg.train.imgsz} px, then {len(candidates)} hyps x {seeds} seeds x {epochs} epochs)",
        f"trial-epochs spent {fidelity.get('trial_epochs', '?')} (--fidelity {fidelity.get('fidelity', '?')})",
        f"best trial fitness {trials['fitness'].max():.4f}; "
        f"base hyp's trial {base.candidate.trial_fitness:.4f}",
        f"base validated fitness   {base.mean:.4f} +- {base.sd:.4f}",
        f"winner ({winner.candidate.label}, {winner.candidate.source_trial_id or 'base'}) {winner.mean:.4f} "
        f"+- {winner.sd:.4f}",
        f"gain {summary.gain * 100:+.1f}% (handed over: "
        f"{'a candidate' if summary.beats_base else 'the base'}; paired 95% intervals {intervals})",
        summary_line(summary),
        transfer_text(summary),
        f"wall time {seconds / 60:.1f} min; load average at the start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, at the end "
        + harness.load_text(),
    ]


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    from evolve.config import config_from_argv
    from evolve.driver import run
    from evolve.output.console import setup_console

    setup_console()
    print(harness.machine_header(), flush=True)
    load = harness.load_average()
    start = time.monotonic()
    run_dir = run(config_from_argv(orchestrate_argv(args, extra)))
    seconds = time.monotonic() - start
    print("\n".join(report(run_dir, seconds, load)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
