"""Resident memory of one Ray worker across many sequential trials (a leak check for reused workers).

Tune reuses a finished trial's worker for the next trial, so whatever a trial leaves behind accumulates
over an evolution of hundreds of trials. This benchmark runs, in ONE Ray actor, the trial function that
Tune runs (``evolve.execution.trainable.run_trial``: trial config, per-trial log handler, trainer,
reports), with ``ray.tune.report`` replaced by a counter since no Tune session exists around it:

1. warm-up: one surrogate trial and one detector trial (imports, torch's allocator, first model build:
   paid once per worker, not growth);
2. 100 surrogate trials (30 epochs each, a different hyp each time);
3. 10 tiny detector trials (model n, 64 px, 16 train / 8 val synthetic images, 1 epoch, batch 8).

It prints the worker's resident set size (VmRSS from /proc) after each phase and the growth from the end
of the warm-up to the end. Target: growth under 200 MB.

    python benchmarks/memory.py
    python benchmarks/memory.py --surrogate-trials 300 --detector-trials 30
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness  # first of the project's imports: puts the clone on sys.path

TARGET_MB = 200.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--surrogate-trials", type=int, default=100)
    p.add_argument("--detector-trials", type=int, default=10)
    p.add_argument("--surrogate-epochs", type=int, default=30)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the detector trials")
    return p.parse_args(argv)


def rss_mb() -> dict[str, float]:
    """This process's current and peak resident set size in MB, from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024.0
    return out


class TrialWorker:
    """A Ray actor running trials one after another, as a reused Tune trial worker does."""

    def __init__(self, run_dir: str, cache_root: str):
        import os

        import ray.tune

        os.environ["YOLO_EVOLVE_CACHE"] = cache_root  # the detector's image cache, in the benchmark's tmp
        self.run_dir = run_dir
        self.reports = 0
        self.last: dict[str, Any] = {}

        def report(row: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            self.reports += 1
            self.last = row

        ray.tune.report = report  # no Tune session here; run_trial looks the function up per call

    def rss(self) -> dict[str, float]:
        return rss_mb()

    def run(self, trainer: str, train_cfg: Any, hyps: list[dict[str, float]], prefix: str
            ) -> dict[str, Any]:
        """Run one trial per hyp; return statuses, RSS after each trial and the time taken."""
        from evolve.config.trial import TrialSpec
        from evolve.execution.trainable import run_trial

        # as TrialRunner builds it for a one-process trial on one CPU
        spec = TrialSpec(trainer=trainer, cfg=train_cfg, run_dir=self.run_dir, nproc=1, cpus_per_trial=1.0)
        statuses: dict[str, int] = {}
        rss_after: list[float] = []
        start = time.perf_counter()
        for i, hyp in enumerate(hyps):
            run_trial({"trial_id": f"{prefix}{i}", "generation": 0, "individual": i, "hyp": hyp}, spec)
            assert self.last.get("final"), "a trial ended without its final report"
            status = str(self.last.get("status"))
            statuses[status] = statuses.get(status, 0) + 1
            rss_after.append(rss_mb()["VmRSS"])
        return {"statuses": statuses, "rss_after": rss_after, "seconds": time.perf_counter() - start,
                "reports": self.reports, "fitness": float(self.last.get("fitness", 0.0))}


def surrogate_hyps(n: int, seed: int) -> list[dict[str, float]]:
    import random

    from evolve.search.space import SearchSpace

    space = SearchSpace.load()
    rng = random.Random(seed)
    return [space.decode(space.random_genome(rng)) for _ in range(n)]


def slope(values: list[float]) -> float:
    """Least-squares MB per trial (0 for fewer than two points)."""
    n = len(values)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(values) / n
    return sum((i - mx) * (v - my) for i, v in enumerate(values)) / sum((i - mx) ** 2 for i in range(n))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    from detector.hyp import DEFAULT_HYP
    from detector.synthetic import make_synthetic
    from evolve.config.trial import TrialConfig

    print(harness.machine_header(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="yolo-evolve-memory-"))
    # "local": a Ray of its own even where a cluster started with 'ray start' runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        data = make_synthetic(root=tmp / "data", n_train=16, n_val=8, imgsz=64)
        # save_weights as the detector's own runs do (and as this benchmark measured before)
        sur_cfg = TrialConfig(epochs=args.surrogate_epochs, save_weights=True)
        det_cfg = TrialConfig(data=str(data), epochs=1, imgsz=64, batch=8, workers=args.workers,
                              save_weights=True)
        det_hyps = [dict(DEFAULT_HYP, lr0=0.004 + 0.0005 * i) for i in range(args.detector_trials + 1)]
        worker = ray.remote(num_cpus=1)(TrialWorker).remote(str(tmp / "run"), str(tmp / "image-cache"))
        t0 = time.perf_counter()
        start = ray.get(worker.rss.remote())
        rows = [("worker started", start["VmRSS"], "")]
        warm_s = ray.get(worker.run.remote("surrogate", sur_cfg, surrogate_hyps(1, 1), "warm-s"))
        after_s = ray.get(worker.rss.remote())["VmRSS"]
        rows.append(("warm-up: 1 surrogate trial", after_s, _statuses(warm_s)))
        warm_d = ray.get(worker.run.remote("detector", det_cfg, det_hyps[:1], "warm-d"))
        base = ray.get(worker.rss.remote())["VmRSS"]
        rows.append(("warm-up: 1 detector trial", base, _statuses(warm_d)))
        sur = ray.get(worker.run.remote("surrogate", sur_cfg, surrogate_hyps(args.surrogate_trials, 2), "s"))
        per_trial_ms = 1000 * sur["seconds"] / max(args.surrogate_trials, 1)
        rows.append((f"+ {args.surrogate_trials} surrogate trials", sur["rss_after"][-1],
                     f"{_statuses(sur)}, {per_trial_ms:.0f} ms/trial"))
        det = ray.get(worker.run.remote("detector", det_cfg, det_hyps[1:], "d"))
        end = ray.get(worker.rss.remote())
        rows.append((f"+ {args.detector_trials} detector trials", end["VmRSS"],
                     f"{_statuses(det)}, {det['seconds'] / max(args.detector_trials, 1):.1f} s/trial"))
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"one Ray actor, trials run by evolve.execution.trainable.run_trial; wall {wall:.0f} s")
    print(f"{'after':<32} {'RSS MB':>8}  trials")
    for name, mb, note in rows:
        print(f"{name:<32} {mb:>8.1f}  {note}")
    growth = end["VmRSS"] - base
    sur_growth = sur["rss_after"][-1] - base
    det_growth = end["VmRSS"] - sur["rss_after"][-1]
    print(f"one-time cost of the warm-up (imports, first model): {base - start['VmRSS']:.1f} MB; "
          f"peak RSS {end['VmHWM']:.1f} MB")
    print(f"growth after warm-up: {growth:.1f} MB in total ({sur_growth:.1f} MB over the surrogate trials, "
          f"{det_growth:.1f} MB over the detector trials; trend {slope(sur['rss_after']) * 1000:.1f} kB per "
          f"surrogate trial, {slope(det['rss_after']):.2f} MB per detector trial)")
    ok = growth < TARGET_MB and sur["statuses"].get("ok") == args.surrogate_trials \
        and det["statuses"].get("ok") == args.detector_trials
    print(f"target growth < {TARGET_MB:.0f} MB with every trial ok: {'met' if ok else 'NOT met'}")
    print(f"load average after: {harness.load_text()}")
    return 0 if ok else 1


def _statuses(result: dict[str, Any]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(result["statuses"].items()))


if __name__ == "__main__":
    sys.exit(main())
