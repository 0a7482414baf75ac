"""Training speed and accuracy of the detector on the embedded data set, on whatever machine runs it.

Three figures:

1. the data pipeline alone: images/s out of the DataLoader with training augmentation;
2. the training step alone: images/s of forward + loss + backward + optimizer step on one fixed batch,
   in the precision training uses (``detector.precision``: fp16 on CUDA, bf16 on a CPU with AMX or
   AVX512-BF16) and, when that is not fp32, in fp32 too, with the ratio of the two;
3. a real training run of model n at 256 px, batch 16, on the embedded set (512 train / 128 val
   images) within a wall-clock budget: per-epoch mAP50, mAP50-95, training images/s and wall time.

With ``--sizes 256,224,192``, a fourth figure: the CPU seconds per training image at each image size, a
whole step (one augmented batch built in the process, as a trial with no loader workers builds it,
forward, loss, backward, optimizer, EMA) in fp32, sizes measured in turn and the minimum of
``--cost-rounds`` kept, with each size's cost relative to the first. CPU time of this process, not
wall time, so the ratios hold on a busy machine too; this is the cost model behind the choice of README
command 1's image size (docs/benchmarks.md).

Comparing 1 and 2 says whether the data or the model bounds the speed. Without ``--epochs`` the number
of epochs is planned from 2 so that the run fits ``--minutes`` (the learning-rate schedule then ends
with the budget); a run that still overruns is stopped at the first epoch past the budget.

The run trains at the defaults of ``python -m detector train`` (hyps/hyp.scratch-adamw.yaml, optimizer
``auto``: AdamW stepping every 8 images on CPU for a run this short; ``--no-amp`` for fp32);
``--yolov5-recipe`` trains with YOLOv5's SGD and nominal batch 64 instead. On CUDA the run also prints
the peak GPU memory.

    python benchmarks/train_speed.py                  # 10-minute budget
    python benchmarks/train_speed.py --minutes 2 --skip-profile --epochs 3
    python benchmarks/train_speed.py --profile-only
    python benchmarks/train_speed.py --profile-only --skip-profile --sizes 256,224,192 --threads 1
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import harness  # first of the project's imports: puts the clone on sys.path

import torch  # noqa: E402

import detector.train as train_module  # noqa: E402
from detector.config import OPTIMIZER_CHOICES, TrainConfig  # noqa: E402
from detector.dist import parse_device  # noqa: E402
from detector.data import YoloDataset, build_dataloader, load_data_config  # noqa: E402
from detector.hyp import default_hyp_path, load_hyp, validate_hyp  # noqa: E402
from detector.loss import DetectionLoss  # noqa: E402
from detector.model import Model  # noqa: E402
from detector.optim import ModelEMA, build_optimizer  # noqa: E402
from detector.precision import autocast, autocast_dtype, describe, grad_scaler  # noqa: E402
from detector.synthetic import make_synthetic  # noqa: E402
from detector.threads import cpu_budget  # noqa: E402

YOLOV5_OPTIMIZER, YOLOV5_NBS = "SGD", 64


class OutOfTime(Exception):
    """Raised from the per-epoch report when the budget is spent."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of the training run")
    p.add_argument("--epochs", type=int, help="epochs to train (default: planned to fit --minutes)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--model", default="n", choices=("n", "s", "m"))
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, help="torch threads, fixed (default: the detector's own choice, "
                   "detector/threads.py)")
    p.add_argument("--device", default="", help="'' = CUDA when available, else CPU")
    p.add_argument("--hyp", help="base hyp YAML (default: python -m detector train's, detector.hyp."
                   "default_hyp_path)")
    p.add_argument("--yolov5-recipe", action="store_true", help="SGD and nbs 64 (YOLOv5's recipe) instead "
                   "of the detector's defaults")
    p.add_argument("--nbs", type=int, help="nominal batch size (default: the detector's)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override hyps, e.g. lr0=0.02")
    p.add_argument("--optimizer", choices=OPTIMIZER_CHOICES, help="default: the detector's (auto)")
    p.add_argument("--cos-lr", action="store_true")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="fp32 everywhere (default: fp16 on "
                   "CUDA, bf16 on CPUs with native bf16, detector/precision.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default=str(harness.ROOT / "runs" / "benchmarks"))
    p.add_argument("--profile-batches", type=int, default=12, help="batches timed in each profile")
    p.add_argument("--profile-only", action="store_true", help="print the two profiles, do not train")
    p.add_argument("--skip-profile", action="store_true", help="train only (needs --epochs)")
    p.add_argument("--sizes", help="image sizes whose fp32 CPU cost per training image to compare, e.g. "
                   "256,224,192")
    p.add_argument("--cost-rounds", type=int, default=5, help="rounds over --sizes; the minimum is kept")
    return p.parse_args(argv)


def profile_data(files: list[Path], nc: int, imgsz: int, hyp: dict[str, float], batch: int, workers: int,
                 batches: int) -> float:
    """Images/s delivered by the training DataLoader (augmentation on), after a warm-up batch."""
    dataset = YoloDataset(files, nc, imgsz, hyp=hyp, augment=True, seed=0)
    loader, _ = build_dataloader(dataset, batch, workers, shuffle=True, seed=0)
    it = iter(loader)
    next(it)  # worker start-up and the first decode are not steady state
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            imgs, _, _ = next(it)
        except StopIteration:
            break
        n += imgs.shape[0]
    seconds = time.perf_counter() - start
    del it, loader
    return n / seconds


def profile_step(files: list[Path], nc: int, imgsz: int, hyp: dict[str, float], batch: int, size: str,
                 steps: int, device: torch.device, amp: bool = True) -> float:
    """Images/s of forward + loss + backward + SGD step on one fixed augmented batch, in the precision
    training uses on ``device`` (``detector.precision``; fp32 with ``amp=False``)."""
    dataset = YoloDataset(files, nc, imgsz, hyp=hyp, augment=True, seed=0)
    imgs, targets, _ = YoloDataset.collate_fn([dataset[i] for i in range(batch)])[:3]
    x = (imgs.to(device).float() / 255.0).contiguous(memory_format=torch.channels_last)
    targets = targets.to(device)
    model = Model(nc=nc, size=size).train().to(device, memory_format=torch.channels_last)  # as train() does
    loss_fn = DetectionLoss(model, hyp)
    opt = build_optimizer(model, "SGD", 0.001, hyp["momentum"], 0.0)
    dtype = autocast_dtype(device, amp)
    scaler = grad_scaler(device, dtype)

    def step() -> None:
        with autocast(device, dtype):
            loss, _ = loss_fn(model(x), targets)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # first call allocates
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch / (time.perf_counter() - start)


def cpu_cost_by_size(files: list[Path], nc: int, sizes: list[int], hyp: dict[str, float], batch: int,
                     size: str, steps: int, rounds: int) -> dict[int, float]:
    """CPU seconds per image of a whole fp32 training step at each image size (module docstring): the
    sizes are measured in turn, ``rounds`` times, and each keeps its minimum."""
    setups = {}
    for imgsz in sizes:
        dataset = YoloDataset(files, nc, imgsz, hyp=hyp, augment=True, seed=0)
        torch.manual_seed(0)
        model = Model(nc=nc, size=size).train().to(memory_format=torch.channels_last)
        opt = build_optimizer(model, "AdamW", 0.001, hyp["momentum"], 0.0)
        setups[imgsz] = (dataset, model, DetectionLoss(model, hyp), opt, ModelEMA(model))

    def run(imgsz: int, start: int) -> None:
        dataset, model, loss_fn, opt, ema = setups[imgsz]
        for k in range(steps):
            first = (start + k) * batch % len(dataset)
            items = [dataset[(first + i) % len(dataset)] for i in range(batch)]
            imgs, targets = YoloDataset.collate_fn(items)[:2]
            x = (imgs.float() / 255.0).contiguous(memory_format=torch.channels_last)
            loss, _ = loss_fn(model(x), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update(model)

    best = {imgsz: math.inf for imgsz in sizes}
    for imgsz in sizes:
        run(imgsz, 0)  # first calls allocate and pick kernels
    for r in range(rounds):
        for imgsz in sizes:
            start = time.process_time()
            run(imgsz, (r + 1) * steps)
            best[imgsz] = min(best[imgsz], (time.process_time() - start) / (steps * batch))
    return best


def parse_sizes(text: str | None) -> list[int] | None:
    """``--sizes`` as a list (empty when not given); None when it is not multiples of 32 by commas."""
    if not text:
        return []
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        return None
    return sizes if all(v >= 32 and v % 32 == 0 for v in sizes) else None


def plan_epochs(budget_s: float, step_ips: float, n_train: int, n_val: int) -> int:
    """Epochs that fit the budget: a training epoch at the step's speed (plus 5% for data and EMA) and a
    validation at about three times that speed plus a fixed 2 s for NMS and mAP. The margin is small
    because an overrun is cut at the next epoch end anyway."""
    epoch_s = 1.05 * n_train / step_ips + n_val / (3 * step_ips) + 2.0
    return max(1, int(0.97 * budget_s / epoch_s))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = parse_sizes(args.sizes)
    if sizes is None:
        print(f"error: --sizes {args.sizes}: expected multiples of 32 separated by commas", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    harness.pin_threads(cpu_budget(args.threads))  # for the two profiles; training governs its own
    if args.yolov5_recipe:
        args.optimizer, args.nbs = args.optimizer or YOLOV5_OPTIMIZER, args.nbs or YOLOV5_NBS
    args.optimizer = args.optimizer or "auto"
    args.hyp = args.hyp or str(default_hyp_path(args.optimizer))  # as python -m detector train chooses
    hyp = load_hyp(args.hyp)
    try:
        for item in args.set:
            key, _, value = item.partition("=")
            hyp[key] = float(value)
        hyp = validate_hyp(hyp, source="--set")
    except ValueError as exc:  # HypError is a ValueError too
        print(f"error: --set {' '.join(args.set)}: {exc}", file=sys.stderr)
        return 2
    data_yaml = make_synthetic()
    data = load_data_config(data_yaml)
    print(harness.machine_header())
    print(f"training threads: {args.threads or f'up to {cpu_budget()}'}; data: {data_yaml} "
          f"({len(data.train)} train / {len(data.val)} val images)")

    step_ips = None
    if not args.skip_profile:
        data_ips = profile_data(data.train, data.nc, args.imgsz, hyp, args.batch, args.workers,
                                args.profile_batches)
        device = parse_device(args.device)
        steps = max(args.profile_batches // 3, 2)
        dtype = autocast_dtype(device, args.amp)
        step_ips = profile_step(data.train, data.nc, args.imgsz, hyp, args.batch, args.model, steps, device,
                                args.amp)
        bound = "the data pipeline" if data_ips < step_ips else "the training step (model compute)"
        print(f"data pipeline alone: {data_ips:7.1f} images/s ({args.workers} workers, augmentation on)")
        print(f"training step alone: {step_ips:7.1f} images/s (model {args.model}, {args.imgsz} px, "
              f"batch {args.batch}, {describe(dtype)})")
        if dtype is not None:  # the same step in fp32, measured in the same run: the precision's speed-up
            fp32_ips = profile_step(data.train, data.nc, args.imgsz, hyp, args.batch, args.model, steps,
                                    device, amp=False)
            print(f"training step in fp32: {fp32_ips:7.1f} images/s; {describe(dtype)} is "
                  f"{step_ips / fp32_ips:.2f}x as fast")
        note = " (workers share the cores with the training step, so expect less)" if args.workers else ""
        print(f"speed is bounded by {bound}; the run can reach at most {min(data_ips, step_ips):.1f} "
              f"images/s{note}")
    if sizes:
        costs = cpu_cost_by_size(data.train[:256], data.nc, sizes, hyp, min(args.batch, 8), args.model,
                                 max(args.profile_batches // 3, 2), args.cost_rounds)
        print(f"fp32 CPU cost of a training step with augmentation in the process (model {args.model}, batch "
              f"{min(args.batch, 8)}, {torch.get_num_threads()} threads, min of {args.cost_rounds} rounds):")
        for imgsz, cost in costs.items():
            print(f"  {imgsz:>4} px: {cost * 1000:7.1f} ms CPU per image, {cost / costs[sizes[0]]:.2f}x the "
                  f"{sizes[0]} px cost")
    if args.profile_only:
        return 0
    if args.epochs is None and step_ips is None:
        print("error: --skip-profile needs --epochs", file=sys.stderr)
        return 2
    epochs = args.epochs or plan_epochs(args.minutes * 60, step_ips, len(data.train), len(data.val))
    changed = {k: v for k, v in hyp.items() if v != load_hyp(args.hyp)[k]}
    print(f"training {epochs} epochs (budget {args.minutes:g} min), {args.optimizer}, nbs {args.nbs}, "
          f"hyps {'as in the file' if not changed else f'as in the file except {changed}'}")
    return run_training(args, hyp, epochs, len(data.train))


def run_training(args: argparse.Namespace, hyp: dict[str, float], epochs: int, n_train: int) -> int:
    cfg = TrainConfig(data=None, model=args.model, epochs=epochs, imgsz=args.imgsz, batch=args.batch,
                      workers=args.workers, seed=args.seed, project=args.project, name="train_speed",
                      nbs=args.nbs, optimizer=args.optimizer, cos_lr=args.cos_lr, progress=False,
                      threads=args.threads, device=args.device, amp=args.amp)
    val_seconds: list[float] = []
    real_validate = train_module.validate

    def timed_validate(*a: Any, **kw: Any) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            return real_validate(*a, **kw)
        finally:
            val_seconds.append(time.perf_counter() - start)

    train_module.validate = timed_validate  # to separate training from validation time per epoch
    budget = args.minutes * 60
    start = time.perf_counter()
    last = [start]
    rows: list[tuple[int, float, float, float, float]] = []
    print(f"{'epoch':>5} {'mAP50':>7} {'mAP50-95':>9} {'train img/s':>11} {'val s':>6} {'wall s':>7}")

    def report(epoch: int, m: Any) -> None:
        now = time.perf_counter()
        val_s = val_seconds[-1] if val_seconds else 0.0
        ips = n_train / max(now - last[0] - val_s, 1e-9)
        last[0] = now
        rows.append((epoch, m.map50, m.map50_95, ips, now - start))
        print(f"{epoch:>5} {m.map50:>7.4f} {m.map50_95:>9.4f} {ips:>11.1f} {val_s:>6.1f} {now - start:>7.1f}",
              flush=True)
        if now - start > budget and epoch < epochs:
            raise OutOfTime(f"budget of {args.minutes:g} min spent after epoch {epoch}")

    status = "ok"
    try:
        final = train_module.train(hyp, cfg, report=report)
        status = final.status
    except OutOfTime as exc:
        status = f"stopped ({exc})"
    finally:
        train_module.validate = real_validate
    wall = time.perf_counter() - start
    if not rows:
        print(f"no epoch finished; status {status}")
        return 1
    best = max(rows, key=lambda r: r[1])
    mean_ips = sum(r[3] for r in rows) / len(rows)
    print(f"summary: {len(rows)} epochs in {wall:.1f} s wall ({wall / 60:.2f} min), status {status}; "
          f"training {mean_ips:.1f} images/s on average; final mAP50 {rows[-1][1]:.4f} mAP50-95 "
          f"{rows[-1][2]:.4f}; best mAP50 {best[1]:.4f} at epoch {best[0]}")
    if torch.cuda.is_available() and parse_device(args.device).type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated, "
              f"{torch.cuda.max_memory_reserved() / 2**20:.0f} MiB reserved")
    target_met = rows[-1][1] >= 0.6 and wall <= budget * 1.0001
    print(f"target mAP50 >= 0.6 within {args.minutes:g} min: {'met' if target_met else 'not met'}")
    return 0 if math.isfinite(rows[-1][1]) else 1


if __name__ == "__main__":
    sys.exit(main())
