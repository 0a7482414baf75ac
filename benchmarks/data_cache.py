"""Start-up time of a trial to its first training batch, with a cold and a warm decoded-image cache.

A detector trial starts by building its training and validation data sets and pulling the first batch
from the training DataLoader. With a cold cache (the first trial on a node) that means decoding and
resizing every image of both splits into the shared ``.npy`` file; with a warm one (every later trial on
the node) it means opening that file as a memory map. Each measurement runs in a fresh Python process, as
a new trial's worker would (only the data work is timed, not the interpreter or torch start-up):

- cold: a new, empty cache folder;
- warm: the same folder again, right after the cold run (the file is in the page cache, as it is for the
  trials that follow the first one on a node).

The embedded data set (512 train / 128 val images, 256 px) is used at 256 px, batch 16, with the
training augmentation on, like a default trial.

    python benchmarks/data_cache.py                 # 3 repeats of each
    python benchmarks/data_cache.py --repeats 5 --workers 0
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness  # first of the project's imports: puts the clone on sys.path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="cold/warm pairs, each with a new cache folder")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (TrainConfig's default is 2)")
    p.add_argument("--measure", metavar="CACHE_DIR", help=argparse.SUPPRESS)  # the child process's job
    return p.parse_args(argv)


def measure(cache_dir: str, imgsz: int, batch: int, workers: int) -> dict[str, Any]:
    """Time what a trial does before training: both data sets and the first training batch."""
    from detector import cache
    from detector.data import YoloDataset, build_dataloader, load_data_config
    from detector.hyp import load_hyp
    from detector.synthetic import make_synthetic

    harness.pin_threads(1)  # a trial with --cpus-per-trial 1
    data = load_data_config(make_synthetic())
    hyp = load_hyp()
    folder = Path(cache_dir)
    start = time.perf_counter()
    train_set = YoloDataset(data.train, data.nc, imgsz, hyp=hyp, augment=True, cache_dir=folder)
    YoloDataset(data.val, data.nc, imgsz, augment=False, cache_dir=folder)
    datasets = time.perf_counter()
    loader, _ = build_dataloader(train_set, batch, workers, shuffle=True)
    imgs, _, _ = next(iter(loader))
    end = time.perf_counter()
    return {"seconds": end - start, "datasets": datasets - start, "first_batch": end - datasets,
            "decodes": cache.DECODES, "images": len(data.train) + len(data.val),
            "batch_shape": list(imgs.shape)}


def run_child(cache_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", str(cache_dir), "--imgsz",
           str(args.imgsz), "--batch", str(args.batch), "--workers", str(args.workers)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.imgsz, args.batch, args.workers)))
        return 0
    from detector.synthetic import make_synthetic

    data_yaml = make_synthetic()  # generated once, before any timing
    print(harness.machine_header())
    print(f"data: {data_yaml}; {args.imgsz} px, batch {args.batch}, "
          f"{args.workers} DataLoader workers, {args.repeats} repeats, one fresh process per measurement")
    print(f"{'repeat':>6} {'cache':>5} {'datasets s':>10} {'1st batch s':>11} {'total s':>8} {'decodes':>8}")
    cold: list[float] = []
    warm: list[float] = []
    base = Path(tempfile.mkdtemp(prefix="yolo-evolve-cache-bench-"))
    try:
        for r in range(args.repeats):
            folder = base / f"r{r}"
            for kind, times in (("cold", cold), ("warm", warm)):
                m = run_child(folder, args)
                times.append(m["seconds"])
                print(f"{r:>6} {kind:>5} {m['datasets']:>10.3f} {m['first_batch']:>11.3f} "
                      f"{m['seconds']:>8.3f} {m['decodes']:>5}/{m['images']}", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"start-up to first batch (median of {args.repeats}): cold cache {c:.3f} s, warm cache {w:.3f} s, "
          f"{c / w:.1f}x faster warm ({c - w:.2f} s saved per trial after the first on a node)")
    print(f"load average after: {harness.load_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
