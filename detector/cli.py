"""Command line of the detector: ``python -m detector train ...`` and ``python -m detector val ...``.

The flags are generated from the ``TrainConfig`` fields (``detector/config.py``), which declare each
one's default, help, choices and range: a flag is added by adding a field there. Only ``--hyp``,
``--weights`` and ``--quiet`` are not settings of a run and are declared here.

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

from detector.config import Flag, TrainConfig, check_setting, flagged_fields
from detector.errors import DataError, HypError

LOGGER = logging.getLogger("detector")
EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


class BadInput(ValueError):
    """A flag value that cannot work, found before any training starts."""


def _shown(spec: Flag, default: Any) -> str:
    """The help of a flag, ending in the field's default unless the help says it in words."""
    if spec.parse is bool or default is None or "(default" in spec.help:
        return spec.help
    return f"{spec.help} (default: {default})"


def _add_settings(p: argparse.ArgumentParser, command: str) -> None:
    """The flags of ``command``, generated from the ``TrainConfig`` fields that declare one.

    Every default is None, so a flag left out is told from one given: a resumed run keeps its own
    settings for the flags not given (``_config_from_args``)."""
    for f, spec in flagged_fields():
        if command not in spec.commands:
            continue
        if spec.parse is bool:
            action = "store_false" if f.default else "store_true"
            p.add_argument(spec.flag, dest=f.name, action=action, default=None, help=spec.help)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "help": _shown(spec, f.default), "metavar": spec.metavar}
        if spec.choices is not None:
            kwargs["choices"] = spec.choices
        elif spec.parse is not str:
            kwargs["type"] = spec.parse
        p.add_argument(spec.flag, **kwargs)
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only, no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m detector",
        description="Train or validate the compact YOLO detector.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,val}")

    t = sub.add_parser("train", help="train a detector", description="Train a detector. Under "
                       "'torchrun --nproc_per_node N' the same command trains with DDP.")
    t.add_argument("--hyp", help="hyperparameter YAML (YOLOv5 key set); default hyps/hyp.scratch-adamw.yaml "
                   "(hyps/hyp.scratch-low.yaml with --optimizer SGD), "
                   "or the checkpoint's hyps with --resume")
    _add_settings(t, "train")

    v = sub.add_parser("val", help="validate a checkpoint", description="Validate the EMA weights of a "
                       "checkpoint on the val split of a data set.")
    v.add_argument("--weights", required=True, help="checkpoint (best.pt or last.pt)")
    _add_settings(v, "val")
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
    from detector.precision import cpu_bf16_allowed

    try:
        cpu_bf16_allowed()  # the environment's precision setting, checked before anything is written
    except ValueError as exc:
        raise BadInput(str(exc)) from exc

    for f, spec in flagged_fields():
        try:
            check_setting(spec.flag, spec, getattr(args, f.name, None))
        except ValueError as exc:
            raise BadInput(str(exc)) from exc
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

    # run_val's own defaults are TrainConfig's: pass only the flags given
    opt = {k: getattr(args, k) for k in ("batch", "device", "workers", "conf_thres", "iou_thres", "max_det")}
    opt = {k: v for k, v in opt.items() if v is not None}
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
