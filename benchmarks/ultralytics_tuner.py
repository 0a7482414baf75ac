"""Our evolution with --trainer ultralytics against Ultralytics' own ``model.tune()``, same budget.

Both search the same model on the same data for the same number of trials of the same epochs, image size
and batch, with SGD named so that lr0 and momentum are live in both. Printed for each: the best fitness by
our formula (0.1 * mAP50 + 0.9 * mAP50-95 of the last epoch's validation; Ultralytics' tuner itself
ranks by its own number), the wall time and the most trials that ran at once.

Then each tuner's winner (our ``hyp_evolve.yaml``, Ultralytics' ``best_hyperparameters.yaml`` over its
defaults) and the base hyp both started from are validated the same way: trained again on the same new
seeds (1..``--validate-seeds``) for ``--validate-epochs``, each through the trial adapter of
``--trainer ultralytics``, two at a time on one CPU each, and every winner's paired difference to the base
is printed with its 95% t interval (``evolve.output.verdict_stats``).

    python benchmarks/ultralytics_tuner.py --data ../shared/data/bccd/data.yaml --trials 6 --epochs 12 --imgsz 160

The data set is copied to a temporary folder first: Ultralytics writes label caches beside the images.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import harness  # first of the project's imports: puts the clone on sys.path
import pandas as pd
import yaml

os.environ.setdefault("YOLO_OFFLINE", "1")


def copy_data(data: str | None, into: Path) -> Path:
    """A copy of the data set under ``into`` with an absolute ``path`` (the embedded set when None)."""
    from evolve.execution.ultralytics_inputs import load_data

    if data is None:
        from evolve.execution.detector_trainer import embedded_data

        data = embedded_data()
    content = load_data(data)
    root = into / "data"
    shutil.copytree(content["path"], root, ignore=shutil.ignore_patterns("*.cache"))
    content["path"] = str(root)
    out = into / "data.yaml"
    out.write_text(yaml.safe_dump(content, sort_keys=False))
    return out


def ours(args: argparse.Namespace, data: Path, project: Path) -> dict:
    from evolve.config import config_from_argv
    from evolve.driver import run

    # Two generations without elites: every individual is trained, trials = 2 x population, each to its last
    # epoch as model.tune()'s are (compressed: no rung stops one). No winner validation after them:
    # model.tune() has none, and the wall time compares the tuning alone.
    population = max(2, args.trials // 2)
    argv = ["--trainer", "ultralytics", "--fidelity", "compressed", "--model", args.model, "--data", str(data),
            "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--workers", "0", "--population",
            str(population), "--generations", "2", "--elite", "0,0", "--validate-top", "0",
            "--seed", str(args.seed), "--project", str(project), "--name", "ours", "--cpus-per-trial",
            str(args.cpus_per_trial)]
    cfg = config_from_argv(argv)
    start = time.time()
    run_dir = run(cfg)
    wall = time.time() - start
    df = pd.read_csv(run_dir / "evolve.csv")
    return {"trials": len(df), "best_fitness": float(df["fitness"].max()), "wall_s": wall,
            "at_once": _overlap(run_dir), "dir": run_dir}


def _overlap(run_dir: Path) -> int:
    """Most trials whose [start, end] intervals overlap, from Ray Tune's per-trial result records."""
    spans = []
    for result in run_dir.glob("ray/*/*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows and "start_time" in rows[0]:
            spans.append((rows[0]["start_time"], rows[-1].get("end_time", rows[0]["start_time"])))
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def theirs(args: argparse.Namespace, data: Path, project: Path) -> dict:
    from ultralytics import YOLO

    start = time.time()
    YOLO(args.model).tune(data=str(data), epochs=args.epochs, iterations=args.trials, imgsz=args.imgsz,
                          batch=args.batch, workers=0, device="cpu", optimizer="SGD", plots=False, save=False,
                          val=False, seed=args.seed, project=str(project), name="theirs")
    wall = time.time() - start
    scores = their_fitnesses(project / "theirs")
    return {"trials": len(scores), "best_fitness": max(scores, default=0.0), "wall_s": wall, "at_once": 1,
            "dir": project / "theirs"}


def their_fitnesses(tune_dir: Path) -> list[float]:
    """Our fitness of every trial of Ultralytics' tuner, from the validation metrics in its NDJSON
    records (its own ``fitness`` field is its formula, not ours)."""
    out = []
    for line in (tune_dir / "tune_results.ndjson").read_text().splitlines():
        for metrics in json.loads(line).get("datasets", {}).values():
            out.append(0.1 * float(metrics.get("metrics/mAP50(B)", 0.0))
                       + 0.9 * float(metrics.get("metrics/mAP50-95(B)", 0.0)))
    return out


def winners(ours_dir: Path, theirs_dir: Path) -> dict[str, dict]:
    """The hyps to validate: the base both tuners start from (our Ultralytics hyp file, Ultralytics'
    defaults), our winner, and Ultralytics' winner (its tuned keys over the base), SGD in all three."""
    import hyps

    base = yaml.safe_load(hyps.path(hyps.HYP_ULTRALYTICS).read_text())
    ours_hyp = yaml.safe_load((ours_dir / "hyp_evolve.yaml").read_text())
    theirs_hyp = yaml.safe_load((theirs_dir / "best_hyperparameters.yaml").read_text()) or {}
    out = {"base": base, "ours": {**base, **ours_hyp}, "theirs": {**base, **theirs_hyp}}
    return {name: {**hyp, "optimizer": "SGD"} for name, hyp in out.items()}


def validate(hyp_sets: dict[str, dict], args: argparse.Namespace, data: Path, project: Path,
             workers: int = 2) -> dict[str, dict[int, float]]:
    """{name: {seed: fitness}}: every hyp trained on seeds 1..``args.validate_seeds`` for
    ``args.validate_epochs``, ``workers`` runs at a time in fresh processes of one thread each."""
    import torch

    from evolve.execution.ultralytics_trainer import train

    seeds = range(1, args.validate_seeds + 1)
    jobs = {(name, seed): {"model": args.model, "data": str(data), "epochs": args.validate_epochs,
                           "imgsz": args.imgsz, "batch": args.batch, "workers": 0, "seed": seed,
                           "val_every": 0, "project": str(project), "name": f"{name}-seed{seed}"}
            for seed in seeds for name in hyp_sets}
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = {key: pool.submit(train, hyp_sets[key[0]], trial) for key, trial in jobs.items()}
        out: dict[str, dict[int, float]] = {name: {} for name in hyp_sets}
        for (name, seed), future in futures.items():
            metrics = future.result()
            out[name][seed] = metrics.fitness if metrics.status == "ok" else 0.0
    return out


def verdict_lines(fitness: dict[str, dict[int, float]]) -> list[str]:
    """A line per hyp: validated fitness (mean +- sd over seeds) and, for a winner, its paired gain over
    the base with the 95% t interval."""
    import numpy as np

    from evolve.output.verdict_stats import paired_difference

    lines = []
    for name, by_seed in fitness.items():
        values = np.array(list(by_seed.values()), dtype=float)
        sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        line = f"{name:8s} {values.mean():.4f} +- {sd:.4f} ({len(values)} seeds)"
        if name != "base":
            d = paired_difference(by_seed, fitness["base"])
            line += f"   gain {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]"
        lines.append(line)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="data YAML (default: the embedded data set)")
    p.add_argument("--model", default="yolov8n.yaml")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--imgsz", type=int, default=192)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validate-seeds", type=int, default=3, help="new seeds per winner (0: no validation)")
    p.add_argument("--validate-epochs", type=int, default=None, help="epochs of a validation run (default: --epochs)")
    p.add_argument("--keep", default=None, help="folder to keep both runs in (default: a temporary one)")
    args = p.parse_args()
    args.validate_epochs = args.validate_epochs or args.epochs
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.keep or tempfile.mkdtemp(prefix="ultralytics-tuner-"))
    work.mkdir(parents=True, exist_ok=True)
    data = copy_data(args.data, work)
    print(harness.machine_header())
    results = {"ours (--trainer ultralytics)": ours(args, data, work / "runs"),
               "Ultralytics model.tune()": theirs(args, data, work / "runs")}
    print(f"load average at end: {harness.load_text()}")
    print(f"{args.model}, {args.trials} trials x {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}")
    print(f"{'':30s} {'trials':>6s} {'best fitness':>12s} {'wall s':>8s} {'at once':>7s}")
    for name, r in results.items():
        print(f"{name:30s} {r['trials']:6d} {r['best_fitness']:12.5f} {r['wall_s']:8.1f} {r['at_once']:7d}")
    if args.validate_seeds > 0:
        start = time.time()
        ours_r, theirs_r = results.values()
        fitness = validate(winners(ours_r["dir"], theirs_r["dir"]), args, data, work / "runs" / "validation")
        print(f"\nvalidated: {args.validate_seeds} new seeds x {args.validate_epochs} epochs, "
              f"{time.time() - start:.0f} s, load average {harness.load_text()}")
        print("\n".join(verdict_lines(fitness)))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
