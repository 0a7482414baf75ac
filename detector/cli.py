"""Command line of the detector: ``python -m detector train ...`` and ``python -m detector val ...``.

Bad input (a missing data/hyp/weights file, a malformed label, an unknown hyp key, an impossible flag
value) prints one line naming the file, key or flag on stderr and exits with status 2, without a
traceback. A run that diverged or failed exits with 1; a finished run with 0 and its metrics as one JSON
line on stdout.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields
from typing import Any, Optional, Sequence

from detector.config import MODEL_SIZES, OPTIMIZER_CHOICES, TrainConfig
from detector.errors import DataError, HypError

LOGGER = logging.getLogger("detector")
EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


class BadInput(ValueError):
    """A flag value that cannot work, found before any training starts."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data YAML (YOLOv5 format); default: the embedded synthetic data set")
    p.add_argument("--imgsz", type=int, help="square network input in pixels, a multiple of 32 "
                   "(default: 256 for the embedded set, 640 otherwise; for val: the checkpoint's)")
    p.add_argument("--batch", type=int, help="total batch size over all processes (default 16)")
    p.add_argument("--device", help="'' = CUDA when available else CPU; 'cpu', '0', 'cuda:1'")
    p.add_argument("--workers", type=int, help="data-loading worker processes per rank (default 2)")
    p.add_argument("--threads", type=int, help="torch threads per rank, fixed (default: the CPUs this "
                   "process may use, from affinity, cgroup quota and OMP_NUM_THREADS, fewer while the "
                   "machine is busy)")
    p.add_argument("--cache-dir", help="decoded-image cache folder (default: $YOLO_EVOLVE_CACHE, else "
                   "~/.cache/yolo-evolve/images)")
    p.add_argument("--conf-thres", type=float, help="validation score threshold (default 0.001)")
    p.add_argument("--iou-thres", type=float, help="validation NMS IoU threshold (default 0.6)")
    p.add_argument("--max-det", type=int, help="detections kept per image (default 300)")
    p.add_argument("--max-images", type=int, help="use only the first N train and val images")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only, no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m detector",
        description="Train or validate the compact YOLO detector.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,val}")

    t = sub.add_parser("train", help="train a detector", description="Train a detector. Under "
                       "'torchrun --nproc_per_node N' the same command trains with DDP.")
    _add_common(t)
    t.add_argument("--hyp", help="hyperparameter YAML (YOLOv5 key set); default hyps/hyp.scratch-adamw.yaml "
                   "(hyps/hyp.scratch-low.yaml with --optimizer SGD), "
                   "or the checkpoint's hyps with --resume")
    t.add_argument("--model", choices=MODEL_SIZES, help="model size (default n)")
    t.add_argument("--epochs", type=int, help="epochs to train (default 100)")
    t.add_argument("--seed", type=int, help="seed of python, numpy and torch (default 0)")
    t.add_argument("--project", help="parent folder of run folders (default runs/train)")
    t.add_argument("--name", help="run folder name; name2, name3, ... when taken (default exp)")
    t.add_argument("--exist-ok", action="store_true", default=None, help="reuse project/name if it exists")
    t.add_argument("--resume", metavar="LAST_PT", help="continue a run from its weights/last.pt, with its "
                   "settings unless flags override them")
    t.add_argument("--optimizer", choices=OPTIMIZER_CHOICES, help="optimizer (default auto: AdamW for "
                   "runs of "
                   "under 10000 planned steps of 64 images, else SGD with Nesterov momentum)")
    t.add_argument("--cos-lr", action="store_true", default=None, help="cosine learning-rate decay")
    t.add_argument("--nbs", type=int, help="nominal batch: images per optimizer step, reached by gradient "
                   "accumulation, or under Adam and AdamW by splitting a larger batch (default 64 under SGD; "
                   "under Adam and AdamW at most 8 on a CPU, the batch size on CUDA)")
    t.add_argument("--val-every", type=int, help="validate every N epochs; 0 = only after the last "
                   "(default 1)")
    t.add_argument("--no-save", dest="save_weights", action="store_false", default=None,
                   help="do not write weights/last.pt and best.pt")
    t.add_argument("--sync-bn", action="store_true", default=None, help="synchronised BatchNorm under DDP "
                   "(CUDA only)")
    t.add_argument("--no-autoanchor", dest="autoanchor", action="store_false", default=None,
                   help="keep the default anchors even when they fit the labels poorly")
    t.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                   help="train and validate in fp32 (default: fp16 on CUDA, bf16 training on CPUs with AMX "
                   "or AVX512-BF16)")

    v = sub.add_parser("val", help="validate a checkpoint", description="Validate the EMA weights of a "
                       "checkpoint on the val split of a data set.")
    _add_common(v)
    v.add_argument("--weights", required=True, help="checkpoint (best.pt or last.pt)")
    return parser


def _config_from_args(args: argparse.Namespace, base: dict[str, Any]) -> TrainConfig:
    """TrainConfig from ``base`` (defaults, or a resumed run's settings) overridden by the given flags."""
    values = dict(base)
    for f in fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    if args.quiet:
        values["progress"] = False
    known = {f.name for f in fields(TrainConfig)}
    try:
        return TrainConfig(**{k: v for k, v in values.items() if k in known})
    except ValueError as exc:
        raise BadInput(str(exc)) from exc


def _check_flags(args: argparse.Namespace) -> None:
    from detector.dist import parse_device

    for name in ("batch", "epochs", "max_images", "max_det", "nbs", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("workers", "val_every"):
        value = getattr(args, name, None)
        if value is not None and value < 0:
            raise BadInput(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.device is not None and "LOCAL_RANK" not in os.environ:
        try:
            parse_device(args.device)
        except ValueError as exc:
            raise BadInput(f"--device: {exc}") from exc
    for name in ("data", "hyp", "resume", "weights"):
        path = getattr(args, name, None)
        if path is not None and not os.path.isfile(path):
            raise BadInput(f"{path}: --{name} file not found")


def _train(args: argparse.Namespace) -> int:
    import detector.hyp as hyps
    from detector.train import train

    base: dict[str, Any] = TrainConfig().to_dict()
    hyp: Optional[dict[str, Any]] = None
    if args.resume:
        from detector.checkpoint import load_checkpoint

        ckpt = load_checkpoint(args.resume)
        base.update({k: v for k, v in (ckpt.get("cfg") or {}).items() if k != "resume"})
        hyp = ckpt.get("hyp")
    cfg = _config_from_args(args, base)
    if args.hyp is not None or hyp is None:
        hyp = hyps.load_hyp(args.hyp or hyps.default_hyp_path(cfg.optimizer))
    else:
        hyp = hyps.validate_hyp(hyp, source=f"{args.resume} (hyp)")
    metrics = train(hyp, cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics.to_dict()))
    return 0 if metrics.status in ("ok", "stopped") else EXIT_RUN_FAILED


def _val(args: argparse.Namespace) -> int:
    import torch

    from detector.threads import cpu_budget
    from detector.val import run_val

    torch.set_num_threads(cpu_budget(args.threads))

    defaults = TrainConfig()
    opt = {k: getattr(args, k) for k in ("batch", "device", "workers", "conf_thres", "iou_thres", "max_det")}
    opt = {k: (getattr(defaults, k) if v is None else v) for k, v in opt.items()}
    if args.imgsz is not None and (args.imgsz < 32 or args.imgsz % 32):
        raise BadInput(f"--imgsz must be a multiple of 32 and >= 32, got {args.imgsz}")
    metrics = run_val(args.weights, data=args.data, imgsz=args.imgsz, max_images=args.max_images,
                      cache_dir=args.cache_dir, **opt)
    print(json.dumps(metrics.to_dict()))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    level = logging.WARNING if (args.quiet or rank != 0) else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _check_flags(args)
        return _train(args) if args.command == "train" else _val(args)
    except (DataError, HypError, BadInput) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"error: {message}\n")
        return EXIT_BAD_INPUT
