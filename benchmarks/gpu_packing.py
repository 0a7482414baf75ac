"""Real detector trials packed on one GPU: do they all run at once, and how fast is each?

Runs one generation of ``--population`` detector trials with ``--gpus-per-trial`` (default 0.25: four
trials share one GPU) exactly as ``orchestrate.py`` would, then reads Ray Tune's own per-trial records
(start and end time, GPU ids) back: how many trials ran at the same time on each GPU, and each trial's
training images/s (epochs x training images / trial seconds, validation included). For comparison it
first trains one trial alone on the GPU with the same settings.

Needs CUDA; on a machine without it, it says so and exits 0.

    python benchmarks/gpu_packing.py
    python benchmarks/gpu_packing.py --population 8 --gpus-per-trial 0.125 --epochs 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness  # first of the project's imports: puts the clone on sys.path

from benchmarks.orchestration import evolve_run, max_overlap, read_tune_records  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--population", type=int, default=4)
    p.add_argument("--gpus-per-trial", type=float, default=0.25)
    p.add_argument("--cpus-per-trial", type=float, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-images", type=int, default=512)
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_packing: no CUDA device here; skipped (run it on a machine with a GPU)")
        return 0
    project = Path(tempfile.mkdtemp(prefix="gpu-packing-"))
    print(harness.machine_header())
    print(f"device: {torch.cuda.get_device_name(0)}; {args.population} detector trials at "
          f"--gpus-per-trial {args.gpus_per_trial}, {args.epochs} epochs of {args.max_images} images at "
          f"{args.imgsz} px, batch {args.batch}")
    common = ["--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch", str(args.batch),
              "--max-images", str(args.max_images), "--cpus-per-trial", str(args.cpus_per_trial),
              "--generations", "1", "--validate-top", "0",  # the figures are the evolution's trials,
              "--fidelity", "compressed"]  # each trained to its last epoch (images/s counts them all)
    start = time.time()
    alone = read_tune_records(evolve_run([*common, "--population", "1", "--gpus-per-trial", "1"], project,
                                         "alone"))
    alone_ips = args.epochs * args.max_images / (alone[0].end - alone[0].start)
    print(f"one trial alone on the GPU: {alone_ips:.0f} training images/s "
          f"({alone[0].end - alone[0].start:.1f} s)")
    packed = read_tune_records(evolve_run([*common, "--population", str(args.population), "--gpus-per-trial",
                                           str(args.gpus_per_trial)], project, "packed"))
    per_gpu: dict[str, list[tuple[float, float]]] = {}
    for t in packed:
        for g in t.gpus:
            per_gpu.setdefault(g, []).append((t.start, t.end))
    ips = [args.epochs * args.max_images / (t.end - t.start) for t in packed]
    together = len(packed) * args.epochs * args.max_images
    wall = max(t.end for t in packed) - min(t.start for t in packed)
    print(f"packed: {len(packed)} trials, statuses {sorted({t.status for t in packed})}, at most "
          f"{max_overlap([(t.start, t.end) for t in packed])} running at once; per GPU at once: "
          f"{ {g: max_overlap(v) for g, v in per_gpu.items()} }")
    print(f"packed: per-trial training images/s median {statistics.median(ips):.0f} (min {min(ips):.0f}, "
          f"max {max(ips):.0f}); together {together / wall:.0f} images/s "
          f"over the {wall:.1f} s wall = {together / wall / alone_ips:.2f}x "
          "one trial alone")
    print(f"total {time.time() - start:.0f} s; runs in {project}; load average after {harness.load_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
