"""Training of one detector: ``train(hyp, cfg, report=None) -> Metrics``, on one device or under DDP.

The loop is the customary YOLO recipe: SGD (or Adam/AdamW) over three parameter groups, warmup then
linear or cosine decay, gradient accumulation to a nominal batch, an EMA of the weights that is what gets
validated and saved, AMP on CUDA. A non-finite loss ends the run as ``diverged`` instead of raising, and
CUDA running out of memory ends it as ``failed``; anything else raises for the caller to record.
"""
from __future__ import annotations

import logging
import math
import random
import sys
import time
import types
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from detector import build, dist
from detector.checkpoint import make_checkpoint, save_checkpoint
from detector.config import TrainConfig
from detector.data import default_imgsz, resolve_data
from detector.hyp import validate_hyp
from detector.loss import DetectionLoss
from detector.optim import ModelEMA, unwrap
from detector.precision import autocast, describe
from detector.results import Metrics
from detector.run_files import write_results_row
from detector.threads import ThreadGovernor, cpu_budget
from detector.val import format_table, metrics_from_result, validate

LOGGER = logging.getLogger(__name__)

Report = Callable[[int, Metrics], None]
GRAD_CLIP = 10.0  # max gradient norm: one bad batch early in training cannot wreck the weights


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def should_validate(epoch: int, epochs: int, val_every: int) -> bool:
    """Validate after 1-based ``epoch``: every ``val_every`` epochs, and always after the last one."""
    return epoch == epochs or (val_every > 0 and epoch % val_every == 0)


def train(hyp: dict[str, Any], cfg: TrainConfig, report: Optional[Report] = None) -> Metrics:
    """Train one model with ``hyp`` and ``cfg``; return the final validation metrics of its EMA weights.

    ``report(epoch, metrics)`` is called (on rank 0) after each validated epoch, epochs counted from 1.
    Under ``torchrun`` every rank returns rank 0's metrics.
    """
    start = time.time()
    hyp = validate_hyp(hyp, source="hyp")
    ctx = dist.setup(cfg.device)
    threads = torch.get_num_threads()  # the governor changes the process's count; the caller gets it back
    try:
        return _Trainer(hyp, cfg, report, ctx, start).run()
    except torch.cuda.OutOfMemoryError as exc:
        LOGGER.error("CUDA out of memory, run failed: %s", str(exc).splitlines()[0] if str(exc) else "")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return Metrics(seconds=time.time() - start, status="failed").with_fitness()
    finally:
        torch.set_num_threads(threads)
        dist.cleanup(ctx)


class _Trainer:
    """One run's state; built in ``__init__`` from ``detector.build``'s parts in order, trained by ``run``."""

    def __init__(self, hyp: dict[str, float], cfg: TrainConfig, report: Optional[Report],
                 ctx: dist.DistContext, start: float):
        self.hyp, self.cfg, self.report, self.ctx, self.start = hyp, cfg, report, ctx, start
        self.device = ctx.device
        # DDP ranks keep the count their launcher gave them: a rank probing alone would stall the others.
        self.governor = ThreadGovernor(cpu_budget(cfg.threads),
                                       fixed=cfg.threads is not None or ctx.distributed)
        seed_everything(cfg.seed + ctx.rank)
        # data: every input is read and checked (checkpoint, labels of both splits) before the run folder
        self.data_cfg, embedded = resolve_data(cfg.data)
        self.imgsz = default_imgsz(cfg.imgsz, embedded)
        self.ckpt = build.load_resume(cfg, self.data_cfg)
        self.data = build.build_datasets(cfg, hyp, self.data_cfg, self.imgsz, self.device, ctx.is_main)
        self.train_set, self.augment_on_device = self.data.train_set, self.data.augment_on_device
        self.save_dir = build.make_save_dir(cfg, hyp, ctx)
        # model
        model, self.size = build.build_model(cfg, hyp, self.ckpt, self.data, self.device, ctx.distributed)
        # optimization: optimizer, EMA (rank 0 validates and saves it), resumed state
        images = len(self.train_set)
        opt = build.build_optimization(cfg, hyp, model, images, self.device)
        self.optimizer_name, self.optimizer = opt.name, opt.optimizer
        self.step_batch, self.accumulate = opt.step_batch, opt.accumulate
        self.ema: Optional[ModelEMA] = build.build_ema(cfg, model, opt, images) if ctx.is_main else None
        self.start_epoch, self.best_fitness = 0, -1.0
        if self.ckpt is not None:
            self.start_epoch, self.best_fitness = build.restore_training_state(self.ckpt, self.optimizer,
                                                                                self.ema)
            LOGGER.info("resuming from %s at epoch %d of %d", cfg.resume, self.start_epoch + 1, cfg.epochs)
        self.model: nn.Module = model
        if ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.loss_fn = DetectionLoss(model, hyp)
        # loaders and the schedule over their batches
        self.train_loader, self.sampler, self.val_loader = build.build_loaders(cfg, self.data, self.step_batch,
                                                                               ctx)
        self.nb = len(self.train_loader)
        self.schedule = build.build_schedule(cfg, hyp, self.accumulate, self.nb)
        # precision
        self.amp_dtype, self.scaler = build.build_precision(self.device, cfg.amp)
        self._log_start()

    # -- set-up --------------------------------------------------------------------------------------
    def _log_start(self) -> None:
        cfg, data = self.cfg, self.data
        val_images = len(data.val_set) if data.val_set is not None else len(data.val_files)
        how = " (hyp)" if "optimizer" in self.hyp else " (auto)" if cfg.optimizer == "auto" else ""
        LOGGER.info(
            "training %s on %s: %d train / %d val images at %d px, %d epochs, batch %d (steps of %d x%d), "
            "%s%s, device %s (%d threads, %s), world size %d, results in %s", self.size,
            self.data_cfg.yaml_path, len(self.train_set), val_images, self.imgsz, cfg.epochs, cfg.batch,
            self.step_batch, self.accumulate, self.optimizer_name, how, self.device, self.governor.threads,
            describe(self.amp_dtype), self.ctx.world_size, self.save_dir,
        )

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> Metrics:
        cfg, ctx = self.cfg, self.ctx
        final: Optional[Metrics] = None
        epochs_done = self.start_epoch
        status = "ok"
        for epoch in range(self.start_epoch, cfg.epochs):
            train_loss = self._train_epoch(epoch)
            if train_loss is None:
                status = "diverged"
                break
            epochs_done = epoch + 1
            if ctx.is_main:
                final = self._end_epoch(epochs_done, train_loss)
                if final is not None and final.status == "diverged":
                    status = "diverged"
            if dist.any_rank(ctx, status == "diverged"):
                status = "diverged"
                break
        if status != "ok":
            final = Metrics(epochs=epochs_done, seconds=time.time() - self.start, status=status)
            final.with_fitness()
        if ctx.is_main and final is not None:
            final.seconds = time.time() - self.start
            LOGGER.info("finished %d epochs in %.1f s:\n%s", final.epochs, final.seconds, format_table(final))
        self._sync_final_buffers()
        return dist.broadcast_object(ctx, final)

    def _set_epoch(self, epoch: int) -> None:
        # Seeds this epoch's augmentation and the distributed sampler's shuffle.
        from detector.data import set_epoch

        set_epoch(self.train_loader, epoch)

    def _train_epoch(self, epoch: int) -> Optional[torch.Tensor]:
        """Train one epoch; return the mean (box, obj, cls) train losses, or None if the loss diverged."""
        cfg, ctx = self.cfg, self.ctx
        self._set_epoch(epoch)
        self.model.train()
        mean_loss = torch.zeros(3)
        last_step = epoch * self.nb - 1
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(self.train_loader, total=self.nb, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and ctx.is_main), leave=False, dynamic_ncols=True)
        for i, (imgs, targets, _paths, *info) in enumerate(bar):
            ni = epoch * self.nb + i
            self.schedule.apply(self.optimizer, epoch, ni)
            self.governor.step_started()
            imgs = imgs.to(self.device, non_blocking=True)
            if self.augment_on_device:  # uint8 batch in, augmented on the GPU (detector.batch_augment)
                imgs, targets = self.train_set.augment_batch(imgs, targets, info[0], ctx.rank)
            imgs = (imgs.float() / 255.0).contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.amp_dtype):
                preds = self.model(imgs)
                loss, items = self.loss_fn(preds, targets.to(self.device))
            if ctx.distributed:
                loss = loss * ctx.world_size  # DDP averages gradients over ranks; keep the per-image scale
            if dist.any_rank(ctx, not bool(torch.isfinite(loss).item())):
                LOGGER.warning("non-finite loss at epoch %d, batch %d: run diverged", epoch + 1, i + 1)
                bar.close()
                return None
            self.scaler.scale(loss).backward()
            # The last batch flushes a partial accumulation: no gradient is lost or carried into the next
            # epoch, so a resumed run steps exactly where an uninterrupted one would.
            if ni - last_step >= self.schedule.accumulate_at(ni) or i == self.nb - 1:
                self._step()
                last_step = ni
            self.governor.step_finished()
            mean_loss = (mean_loss * i + items.detach().float().cpu()) / (i + 1)
            bar.set_postfix({"box": f"{mean_loss[0]:.4f}", "obj": f"{mean_loss[1]:.4f}",
                             "cls": f"{mean_loss[2]:.4f}", "imgs": imgs.shape[0]})
        bar.close()
        return mean_loss

    def _step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=GRAD_CLIP)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def _end_epoch(self, epoch: int, train_loss: torch.Tensor) -> Optional[Metrics]:
        """Rank 0 after 1-based ``epoch``: validate when due, log, save, report; the metrics if validated."""
        cfg = self.cfg
        assert self.ema is not None
        metrics: Optional[Metrics] = None
        if should_validate(epoch, cfg.epochs, cfg.val_every):
            result = validate(self.ema.ema, self.val_loader, self.loss_fn, cfg.conf_thres, cfg.iou_thres,
                              cfg.max_det, device=self.device, amp=cfg.amp, channels_last=True)
            metrics = metrics_from_result(result, epochs=epoch, seconds=time.time() - self.start)
            losses = (metrics.box_loss, metrics.obj_loss, metrics.cls_loss)
            if not all(math.isfinite(v) for v in losses):
                LOGGER.warning("non-finite validation loss after epoch %d: run diverged", epoch)
                metrics.status = "diverged"
                metrics.with_fitness()
                return metrics
        self._write_results(epoch, train_loss, metrics)
        LOGGER.info(
            "epoch %d/%d: train box %.4f obj %.4f cls %.4f%s", epoch, cfg.epochs, *train_loss.tolist(),
            "" if metrics is None else f" | P {metrics.precision:.3f} R {metrics.recall:.3f} mAP50 "
            f"{metrics.map50:.3f} mAP50-95 {metrics.map50_95:.3f} fitness {metrics.fitness:.4f}",
        )
        improved = metrics is not None and metrics.fitness > self.best_fitness
        if improved:
            assert metrics is not None
            self.best_fitness = metrics.fitness
        if cfg.save_weights:
            self._save(epoch, best=improved)
        if metrics is not None and self.report is not None:
            self.report(epoch, metrics)
        return metrics

    def _write_results(self, epoch: int, train_loss: torch.Tensor, metrics: Optional[Metrics]) -> None:
        lrs = {g.get("name"): g["lr"] for g in self.optimizer.param_groups}
        path = self.save_dir / "results.csv"
        new = not path.exists() or (epoch == 1 and self.start_epoch == 0)
        write_results_row(path, epoch, train_loss.tolist(), metrics, lrs, time.time() - self.start, new)

    def _save(self, epoch: int, best: bool) -> None:
        assert self.ema is not None
        ckpt = make_checkpoint(
            ema_model=self.ema.ema, train_model=unwrap(self.model), optimizer=self.optimizer, epoch=epoch,
            best_fitness=self.best_fitness, ema_updates=self.ema.updates, hyp=self.hyp,
            cfg=self.cfg.to_dict(), imgsz=self.imgsz, size=self.size, names=list(self.data_cfg.names),
        )
        weights = self.save_dir / "weights"
        save_checkpoint(ckpt, weights / "last.pt")
        if best:
            save_checkpoint(ckpt, weights / "best.pt")

    def _sync_final_buffers(self) -> None:
        """Every rank ends with rank 0's buffers (BatchNorm statistics), so all ranks hold one model."""
        dist.sync_buffers(self.ctx, unwrap(self.model))


class _CallableModule(types.ModuleType):
    """Lets ``detector.train(hyp, cfg)`` work even after ``import detector.train`` has bound the package
    attribute ``train`` to this module rather than to the function (the import system does that)."""

    def __call__(self, hyp: dict[str, Any], cfg: TrainConfig, report: Optional[Report] = None) -> Metrics:
        return train(hyp, cfg, report)


sys.modules[__name__].__class__ = _CallableModule
