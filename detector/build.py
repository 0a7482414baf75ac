"""Construction of a training run's parts, one concern a function: the resumed checkpoint, the data sets,
the run folder, the model, the optimization (optimizer, EMA, schedule), the data loaders and the precision.

Each function takes what it needs as arguments and returns what it builds, so ``train._Trainer`` reads as
the list of steps in their order. The order matters and is the trainer's: every input is read and checked
(checkpoint, labels of both splits) before the run folder exists, and the model is initialised after the
seeds are set and before anything else draws from torch's generator.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Sampler

from detector import dist
from detector.checkpoint import load_checkpoint, model_from_checkpoint
from detector.config import TrainConfig
from detector.data import DataConfig, YoloDataset, build_dataloader
from detector.errors import DataError
from detector.model import Model
from detector.optim import (
    ModelEMA,
    Schedule,
    build_optimizer,
    choose_optimizer,
    ema_settings,
    nominal_accumulate,
    nominal_batch,
    scaled_weight_decay,
    step_batch,
    warmup_iterations,
)
from detector.precision import autocast_dtype, grad_scaler
from detector.run_files import increment_path

LOGGER = logging.getLogger(__name__)


@dataclass
class RunData:
    """The data sets of a run: the train set on every rank, the val set on rank 0 only."""

    config: DataConfig
    imgsz: int
    train_set: YoloDataset
    val_set: Optional[YoloDataset]
    val_files: list[Path]  # the val images used (also on ranks without a val set, for the log)
    batch_augment: bool  # augmentation of whole batches (detector.batch_augment), on device or in the loader
    augment_on_device: bool  # the trainer augments each batch on its device, not the DataLoader's workers


@dataclass
class Optimization:
    """The optimizer of a run and how many images make one of its steps."""

    name: str  # SGD, Adam or AdamW, after ``auto`` and the hyps' own choice
    step_batch: int  # images per forward/backward pass over all ranks
    accumulate: int  # passes per optimizer step (the nominal batch over step_batch)
    optimizer: torch.optim.Optimizer


def load_resume(cfg: TrainConfig, data_cfg: DataConfig) -> Optional[dict[str, Any]]:
    """The checkpoint ``cfg.resume`` names (None without one), checked against the data and epochs."""
    if not cfg.resume:
        return None
    ckpt = load_checkpoint(cfg.resume)
    if int(ckpt["nc"]) != data_cfg.nc:
        raise DataError(f"{cfg.resume}: trained with {ckpt['nc']} classes but "
                        f"{data_cfg.yaml_path} has {data_cfg.nc}")
    if int(ckpt["epoch"]) >= cfg.epochs:
        raise DataError(f"{cfg.resume}: already trained {ckpt['epoch']} of {cfg.epochs} "
                        "epochs; nothing to resume (raise --epochs to train further)")
    return ckpt


def build_datasets(cfg: TrainConfig, hyp: dict[str, float], data_cfg: DataConfig, imgsz: int,
                   device: torch.device, is_main: bool) -> RunData:
    """The train set (augmented with ``hyp``) and, on rank 0, the val set; their labels are read here."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else None
    train_files, val_files = data_cfg.train, data_cfg.val
    if cfg.max_images:
        train_files, val_files = train_files[:cfg.max_images], val_files[:cfg.max_images]
    batch_aug = device.type == "cuda" if cfg.batch_augment is None else cfg.batch_augment
    # On CPU with workers the DataLoader's workers augment (in parallel with training); else the trainer.
    on_device = batch_aug and (device.type != "cpu" or cfg.workers == 0)
    train_set = YoloDataset(train_files, data_cfg.nc, imgsz, hyp=hyp, augment=True, cache_dir=cache,
                            seed=cfg.seed, batch_augment=batch_aug)
    val_set = YoloDataset(val_files, data_cfg.nc, imgsz, hyp=None, augment=False, cache_dir=cache,
                          seed=cfg.seed) if is_main else None
    return RunData(data_cfg, imgsz, train_set, val_set, list(val_files), batch_aug, on_device)


def make_save_dir(cfg: TrainConfig, hyp: dict[str, float], ctx: dist.DistContext) -> Path:
    """The run folder (the resumed run's own, else project/name made unique), with hyp.yaml and cfg.yaml;
    rank 0 creates it and every rank gets its path."""
    path: Optional[str] = None
    if ctx.is_main:
        if cfg.resume:
            folder = Path(cfg.resume).resolve().parent.parent
        else:
            folder = increment_path(Path(cfg.project) / cfg.name, cfg.exist_ok)
        folder.mkdir(parents=True, exist_ok=True)
        if cfg.save_weights:
            (folder / "weights").mkdir(exist_ok=True)
        (folder / "hyp.yaml").write_text(yaml.safe_dump(hyp, sort_keys=False))
        settings = json.loads(json.dumps(cfg.to_dict(), default=str))
        (folder / "cfg.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
        path = str(folder)
    return Path(dist.broadcast_object(ctx, path))


def build_model(cfg: TrainConfig, hyp: dict[str, float], ckpt: Optional[dict[str, Any]], data: RunData,
                device: torch.device, distributed: bool) -> tuple[nn.Module, str]:
    """The model to train (the checkpoint's training weights when resuming) on ``device``, and its size."""
    if ckpt is not None:
        size = str(ckpt["size"])
        model = model_from_checkpoint(ckpt, weights="train_model")
    else:
        size = cfg.model
        model = Model(nc=data.config.nc, size=cfg.model, na=int(hyp["anchors"]))
        if cfg.autoanchor:
            from detector.anchors import check_anchors

            check_anchors(model, data.train_set.labels, data.train_set.shapes, data.imgsz,
                          thr=hyp["anchor_t"], seed=cfg.seed)
    model.names = list(data.config.names)
    # channels_last lets oneDNN (CPU) and cuDNN (tensor cores) pick their fastest convolutions:
    # about 1.5x faster training of model n on CPU, same results to float rounding.
    model.to(device, memory_format=torch.channels_last)
    if distributed and cfg.sync_bn:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            LOGGER.warning("sync_bn needs CUDA (torch's SyncBatchNorm is GPU-only); ignored on CPU")
    return model, size


def build_optimization(cfg: TrainConfig, hyp: dict[str, Any], model: nn.Module, images: int,
                       device: torch.device) -> Optimization:
    """The optimizer over ``model``'s parameter groups, for a train set of ``images``."""
    # An optimizer named in the hyps (an evolved one) overrides cfg.optimizer.
    name = choose_optimizer(hyp.get("optimizer", cfg.optimizer), cfg.epochs, images, cfg.batch)
    nbs = nominal_batch(name, cfg.batch, cfg.nbs, device.type)
    steps_of = step_batch(name, cfg.batch, nbs)
    accumulate = nominal_accumulate(steps_of, nbs)
    decay = scaled_weight_decay(hyp["weight_decay"], steps_of, nbs)
    return Optimization(name, steps_of, accumulate,
                        build_optimizer(model, name, hyp["lr0"], hyp["momentum"], decay))


def build_ema(cfg: TrainConfig, model: nn.Module, opt: Optimization, images: int) -> ModelEMA:
    """The EMA of ``model``'s weights, its decay ramp sized to the run's planned optimizer steps."""
    planned = cfg.epochs * math.ceil(images / (opt.step_batch * opt.accumulate))
    return ModelEMA(model, *ema_settings(planned))


def restore_training_state(ckpt: dict[str, Any], optimizer: torch.optim.Optimizer,
                           ema: Optional[ModelEMA]) -> tuple[int, float]:
    """Load the optimizer and EMA state of a resumed run; its epochs done and best fitness."""
    if ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if ema is not None:
        ema.ema.load_state_dict(ckpt["model"])
        ema.updates = int(ckpt.get("ema_updates", 0))
    return int(ckpt["epoch"]), float(ckpt.get("best_fitness", -1.0))


def build_loaders(cfg: TrainConfig, data: RunData, step_batch_size: int, ctx: dist.DistContext
                  ) -> tuple[DataLoader, Optional[Sampler], Optional[DataLoader]]:
    """The train loader and its sampler (each rank loads its share of a step), and rank 0's val loader."""
    batch = max(step_batch_size // ctx.world_size, 1)
    train_loader, sampler = build_dataloader(
        data.train_set, batch, cfg.workers, shuffle=True, seed=cfg.seed, distributed=ctx.distributed,
        augment_in_loader=data.batch_augment and not data.augment_on_device)
    val_loader = None
    if data.val_set is not None:
        val_batch = max(cfg.batch // ctx.world_size, 1) * 2
        val_loader, _ = build_dataloader(data.val_set, val_batch, cfg.workers, shuffle=False)
    return train_loader, sampler, val_loader


def build_schedule(cfg: TrainConfig, hyp: dict[str, float], accumulate: int, batches: int) -> Schedule:
    """The learning-rate and momentum schedule (warmup, then linear or cosine decay) over ``cfg.epochs``
    of ``batches`` batches each."""
    return Schedule(
        lr0=hyp["lr0"], lrf=hyp["lrf"], momentum=hyp["momentum"], warmup_momentum=hyp["warmup_momentum"],
        warmup_bias_lr=hyp["warmup_bias_lr"], epochs=cfg.epochs, accumulate=accumulate,
        warmup_iters=warmup_iterations(hyp["warmup_epochs"], batches, cfg.epochs * batches),
        cos_lr=cfg.cos_lr,
    )


def build_precision(device: torch.device, amp: bool) -> tuple[Optional[torch.dtype], torch.amp.GradScaler]:
    """The autocast dtype of training (None: fp32) and the gradient scaler it needs (disabled if none)."""
    dtype = autocast_dtype(device, amp)
    return dtype, grad_scaler(device, dtype)
