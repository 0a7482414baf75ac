"""Training data pipeline alone, in images/s: the per-image path against the batched tensor path.

- per-image: ``YoloDataset(augment=True)`` samples (numpy and Pillow, ``detector.augment``) collated into
  batches, as one DataLoader worker does it;
- batched, CPU: ``YoloDataset(batch_augment=True)`` letterboxed samples collated, then
  ``BatchAugmenter`` on CPU (what ``AugmentingCollate`` does in a worker);
- batched, CUDA (only when torch sees a GPU): the same collated uint8 batch copied to the GPU and
  augmented there, as the trainer does; and the augmentation alone on a batch already on the GPU.

Both CPU paths run with one torch thread in this process, interleaved (old, new, old, new, ...) so that
load from other processes hits both alike; the figure is the median over repeats and the ratio is
new / old. The load average is printed before and after. Two hyp sets: the defaults
(``hyps/hyp.scratch-low.yaml``) and every key on.

    python benchmarks/data_pipeline.py
    python benchmarks/data_pipeline.py --imgsz 640 --batch 32 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import harness  # first of the project's imports: puts the clone on sys.path

ALL_ON = {"degrees": 10.0, "shear": 2.0, "perspective": 0.0005, "flipud": 0.5, "mixup": 0.5, "copy_paste": 0.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=6, help="batches per timed CPU measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cuda-batch", type=int, default=64, help="batch size of the CUDA measurements")
    return p.parse_args(argv)


def images_per_s(fn: Callable[[], Any], images: int, sync: Callable[[], None] = lambda: None) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return images / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from detector.data import YoloDataset, load_data_config
    from detector.hyp import load_hyp
    from detector.synthetic import make_synthetic

    harness.pin_threads(1)
    data = load_data_config(make_synthetic())
    print(harness.machine_header())
    print(f"{len(data.train)} images at {args.imgsz} px, batch {args.batch}, {args.batches} batches x {args.repeats} repeats")
    for name, extra in (("defaults", {}), ("all keys on", ALL_ON)):
        hyp = {**load_hyp(), **extra}
        old = YoloDataset(data.train, data.nc, args.imgsz, hyp=hyp, augment=True)
        new = YoloDataset(data.train, data.nc, args.imgsz, hyp=hyp, augment=True, batch_augment=True)

        cpu_figures(old, new, name, args)
        if torch.cuda.is_available():
            cuda_figures(new, name, args)
    if not torch.cuda.is_available():
        print("CUDA: skipped (torch sees no GPU); the batched path above is the same code the GPU runs")
    print(f"load average after: {harness.load_text()}")
    return 0


def cpu_figures(old: Any, new: Any, name: str, args: argparse.Namespace) -> None:
    """Per-image against batched on CPU, interleaved; prints medians and the ratio per repeat."""
    from detector.data import YoloDataset

    n, b = len(old), args.batch

    def batches(j: int) -> list[list[int]]:
        first = j * args.batches * b
        return [[(first + k * b + i) % n for i in range(b)] for k in range(args.batches)]

    def run_old(j: int) -> None:
        for idx in batches(j):
            YoloDataset.collate_fn([old[i] for i in idx])

    def run_new(j: int) -> None:
        for idx in batches(j):
            imgs, targets, _, info = YoloDataset.collate_fn([new[i] for i in idx])
            new.augment_batch(imgs, targets, info)

    run_old(0), run_new(0)  # warm the page cache and torch's kernels
    olds, news = [], []
    for r in range(1, args.repeats + 1):
        olds.append(images_per_s(lambda j=r: run_old(j), args.batches * b))
        news.append(images_per_s(lambda j=r: run_new(j), args.batches * b))
    o, w = statistics.median(olds), statistics.median(news)
    print(f"CPU, {name:<11}: per-image {o:7.1f} img/s, batched {w:7.1f} img/s, batched/per-image "
          f"{w / o:.2f}x (per repeat: {', '.join(f'{x / y:.2f}' for x, y in zip(news, olds))})")


def cuda_figures(ds: Any, name: str, args: argparse.Namespace) -> None:
    """Images/s on the GPU: gather + copy + augment (what a trial sees), and augmentation alone."""
    import torch

    from detector.data import YoloDataset

    dev = torch.device("cuda")
    b, n = args.cuda_batch, len(ds)
    idx = [i % n for i in range(b)]
    imgs, targets, _, info = YoloDataset.collate_fn([ds[i] for i in idx])
    on_gpu = imgs.pin_memory().to(dev), targets.to(dev), info

    def augment_only(reps: int) -> None:
        for _ in range(reps):
            ds.augment_batch(*on_gpu)

    def full(reps: int) -> None:
        for r in range(reps):
            im, t, _, inf = YoloDataset.collate_fn([ds[(i + r * b) % n] for i in range(b)])
            ds.augment_batch(im.pin_memory().to(dev, non_blocking=True), t.to(dev), inf)

    augment_only(2)
    sync = torch.cuda.synchronize
    alone = statistics.median(images_per_s(lambda: augment_only(10), 10 * b, sync) for _ in range(3))
    whole = statistics.median(images_per_s(lambda: full(3), 3 * b, sync) for _ in range(3))
    print(f"CUDA ({torch.cuda.get_device_name(0)}), {name:<11}, batch {b}: augmentation alone {alone:8.0f} "
          f"img/s; with CPU gather + copy in this process {whole:7.0f} img/s; peak memory "
          f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
