"""Optimisation pieces of training: parameter groups, the learning-rate/momentum schedule with warmup and
gradient accumulation, and the exponential moving average (EMA) of the weights.

Every value of the schedule is a pure function of (epoch, global iteration), so a resumed run sets
exactly the values the uninterrupted run would have set.
"""
from __future__ import annotations

import math
from copy import deepcopy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from detector.hyp import HYP_OPTIMIZERS

OPTIMIZERS = HYP_OPTIMIZERS  # declared once, with the hyp key that names an optimizer

SGD_NBS = 64  # YOLOv5's nominal batch: SGD accumulates gradients up to 64 images a step
# Adam and AdamW on a CPU step every 8 images (a larger batch is split into steps of 8): a short run is
# limited by its number of steps, and on a CPU a step of 8 costs only ~1.12x per image what one of 16
# does. See nominal_batch and docs/detector-train.md for the measurements.
ADAM_CPU_NBS = 8
# ``auto`` trains with SGD only when the run plans at least this many optimizer steps of SGD_NBS images;
# shorter runs train with AdamW. See choose_optimizer and docs/detector-train.md for the measurements.
AUTO_SGD_MIN_STEPS = 10_000
MAX_WARMUP_FRACTION = 0.5  # a warmup never takes more than half the run

# Parameter group names; the warmup treats the bias group differently from the other two.
GROUP_WEIGHT = "weight"  # convolution/linear weights: the only group with weight decay
GROUP_NORM = "norm"  # normalisation-layer scales: decaying them towards 0 only hurts
GROUP_BIAS = "bias"  # every bias: starts the warmup with a high learning rate


def split_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Sort the trainable parameters into the weight, norm and bias groups (each parameter once)."""
    groups: dict[str, list[nn.Parameter]] = {GROUP_WEIGHT: [], GROUP_NORM: [], GROUP_BIAS: []}
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if name == "bias":
                groups[GROUP_BIAS].append(param)
            elif is_norm:
                groups[GROUP_NORM].append(param)
            else:
                groups[GROUP_WEIGHT].append(param)
    return groups


def planned_steps(epochs: int, images: int, batch: int, nbs: int = SGD_NBS) -> int:
    """Optimizer steps of a run of ``epochs`` over ``images`` at a nominal batch of ``max(batch, nbs)``."""
    return epochs * math.ceil(images / max(batch, nbs))


def choose_optimizer(name: str, epochs: int, images: int, batch: int) -> str:
    """The optimizer of a run: ``name`` itself, or for ``auto`` AdamW below AUTO_SGD_MIN_STEPS planned
    SGD steps and SGD from there on.

    Why: a from-scratch run of a few hundred or thousand steps is where Adam's per-parameter step sizes
    pay off (on the embedded set, 10 epochs of 256 images: AdamW mAP50-95 0.1-0.2, SGD under 0.01);
    SGD with momentum is the recipe of YOLOv5's published long runs, where it generalises as well or
    better and its learning rate is the one the YOLOv5 hyp files were tuned for.
    """
    if name != "auto":
        if name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be auto or one of {OPTIMIZERS}, got {name!r}")
        return name
    return "SGD" if planned_steps(epochs, images, batch) >= AUTO_SGD_MIN_STEPS else "AdamW"


def nominal_batch(optimizer: str, batch: int, nbs: int | None, device_type: str = "cpu") -> int:
    """The nominal batch: images per optimizer step.

    ``nbs`` when given; else 64 for SGD (YOLOv5's recipe, reached by accumulation); for Adam and AdamW
    the batch itself on CUDA and at most ADAM_CPU_NBS images on a CPU. Why: their normalised steps gain
    nothing from bigger batches, a short run from scratch is limited by its number of steps (on the
    embedded set, 12 epochs of 256 images at 256 px: mAP50-95 0.059 stepping every 16 images, 0.156 every
    8, 0.086 every 4), and a CPU computes a batch of 8 at about the per-image cost of 16 (1.12x), where a
    GPU would sit mostly idle.
    """
    if nbs is not None:
        return nbs
    if optimizer == "SGD":
        return SGD_NBS
    return min(batch, ADAM_CPU_NBS) if device_type == "cpu" else batch


def step_batch(optimizer: str, batch: int, nbs: int) -> int:
    """Images loaded per iteration. Under Adam and AdamW the nominal batch when it is smaller than the
    batch (the batch is then trained as several steps of ``nbs`` images and stays the memory ceiling);
    under SGD always the batch: a batch above ``nbs`` steps whole, as in YOLOv5."""
    return batch if optimizer == "SGD" else min(batch, nbs)


def nominal_accumulate(batch: int, nbs: int) -> int:
    """Number of batches whose gradients are summed before a step, so a step sees about ``nbs`` images."""
    return max(round(nbs / batch), 1)


def scaled_weight_decay(weight_decay: float, batch: int, nbs: int) -> float:
    """Weight decay per step, scaled so that the decay per image seen stays that of a ``nbs`` batch."""
    return weight_decay * batch * nominal_accumulate(batch, nbs) / nbs


def build_optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD (Nesterov), Adam or AdamW over three named groups; ``momentum`` is beta1 for Adam/AdamW.

    ``weight_decay`` is applied to the weight group only and is expected already scaled
    (:func:`scaled_weight_decay`).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    groups = split_parameters(model)
    param_groups = [
        {"params": groups[GROUP_BIAS], "name": GROUP_BIAS, "weight_decay": 0.0},
        {"params": groups[GROUP_WEIGHT], "name": GROUP_WEIGHT, "weight_decay": weight_decay},
        {"params": groups[GROUP_NORM], "name": GROUP_NORM, "weight_decay": 0.0},
    ]
    if name == "SGD":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            param_groups, lr=lr, momentum=momentum, nesterov=True
        )
    elif name == "Adam":
        optimizer = torch.optim.Adam(param_groups, lr=lr, betas=(momentum, 0.999))
    else:
        optimizer = torch.optim.AdamW(param_groups, lr=lr, betas=(momentum, 0.999))
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
    return optimizer


def warmup_iterations(warmup_epochs: float, batches_per_epoch: int, total_iterations: int) -> int:
    """Length of the warmup: ``warmup_epochs`` worth of batches (0: none), at most half the run.

    There is no floor (YOLOv5 warms up at least 100 batches): on a small data set a floor makes every
    ``warmup_epochs`` below it train the same, a dead gene for evolution.
    """
    wanted = max(round(warmup_epochs * batches_per_epoch), 0)
    return min(wanted, int(MAX_WARMUP_FRACTION * total_iterations))


@dataclass
class Schedule:
    """Learning rate, momentum and accumulation for every (epoch, global iteration) of a run.

    After the warmup the learning rate of every group is ``lr0 * factor(epoch)`` where the factor goes
    linearly (or along a half cosine) from 1 at epoch 0 to ``lrf`` at ``epochs``. During the first
    ``warmup_iters`` iterations the bias group comes down from ``warmup_bias_lr`` and the other groups go
    up from 0 to that scheduled value, momentum rises from ``warmup_momentum`` to ``momentum``, and the
    accumulation rises from 1 to its nominal value (early steps are cheap and help the warmup).
    """

    lr0: float
    lrf: float
    momentum: float
    warmup_momentum: float
    warmup_bias_lr: float
    epochs: int
    warmup_iters: int
    accumulate: int
    cos_lr: bool = False

    def factor(self, epoch: int) -> float:
        x = epoch / self.epochs
        if self.cos_lr:
            return ((1.0 - math.cos(x * math.pi)) / 2.0) * (self.lrf - 1.0) + 1.0
        return (1.0 - x) * (1.0 - self.lrf) + self.lrf

    def in_warmup(self, iteration: int) -> bool:
        return iteration < self.warmup_iters

    def lr(self, group: str, epoch: int, iteration: int) -> float:
        target = self.lr0 * self.factor(epoch)
        if not self.in_warmup(iteration):
            return target
        start = self.warmup_bias_lr if group == GROUP_BIAS else 0.0
        return float(np.interp(iteration, [0, self.warmup_iters], [start, target]))

    def momentum_at(self, iteration: int) -> float:
        if not self.in_warmup(iteration):
            return self.momentum
        return float(np.interp(iteration, [0, self.warmup_iters], [self.warmup_momentum, self.momentum]))

    def accumulate_at(self, iteration: int) -> int:
        if not self.in_warmup(iteration):
            return self.accumulate
        return max(1, int(np.interp(iteration, [0, self.warmup_iters], [1, self.accumulate]).round()))

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, iteration: int) -> None:
        """Set every group's learning rate and momentum (beta1 for Adam) for this iteration."""
        momentum = self.momentum_at(iteration)
        for group in optimizer.param_groups:
            group["lr"] = self.lr(group.get("name", GROUP_WEIGHT), epoch, iteration)
            if "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = momentum


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DataParallel/DistributedDataParallel wrapper (or the model itself)."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


EMA_DECAY = 0.9999  # YOLOv5's decay: an average over about 10 000 steps, for runs of hundreds of thousands
EMA_TAU = 2000.0  # YOLOv5's ramp of the decay
EMA_RUN_FRACTION = 0.05  # a shorter run averages over this fraction of its planned steps
EMA_MIN_SPAN = 10.0  # ... and over at least this many steps, so that even a tiny run's EMA averages


def ema_settings(planned_steps: int) -> tuple[float, float]:
    """(decay, tau) of the weights' EMA for a run of ``planned_steps`` optimizer steps.

    The average spans ``EMA_RUN_FRACTION`` of the run, at least EMA_MIN_SPAN and at most YOLOv5's 10 000
    steps (decay 0.9999), and the ramp is no longer than that span. Why: a fixed 0.9999 with a 2000-step
    ramp averages over about one step for the first few hundred steps (decay 0.17 after 370), so a short
    run validates its raw, noisy weights; on BCCD at 256 px, mAP50-95 fell from 0.37 to 0.008 and back
    between epochs.
    """
    span = min(max(EMA_RUN_FRACTION * planned_steps, EMA_MIN_SPAN), 1.0 / (1.0 - EMA_DECAY))
    return 1.0 - 1.0 / span, min(EMA_TAU, span)


class ModelEMA:
    """Exponential moving average of a model's weights and buffers, used for validation and saving.

    The decay ramps up as ``decay * (1 - exp(-updates / tau))`` so the average follows the fast early
    changes of training instead of remembering the random initial weights for thousands of steps.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.ema = deepcopy(unwrap(model)).eval()
        for param in self.ema.parameters():
            param.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def decay_at(self, updates: int) -> float:
        return self.decay * (1.0 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay_at(self.updates)
        # Tensors in state_dict order, without building two state_dicts per step (about 1% of a CPU
        # step of model n), and one foreach lerp: the same arithmetic as a lerp_ per tensor.
        averaged, sources, counters, counted = [], [], [], []
        for value, source in zip(_state_tensors(self.ema), _state_tensors(unwrap(model))):
            if value.dtype.is_floating_point:
                averaged.append(value)
                sources.append(source.detach().to(value.dtype))
            else:
                counters.append(value)
                counted.append(source)
        if averaged:
            torch._foreach_lerp_(averaged, sources, 1.0 - d)
        for value, source in zip(counters, counted):
            value.copy_(source)


def _state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The parameters and persistent buffers of ``model`` in ``state_dict`` order."""
    out: list[torch.Tensor] = []
    for module in model.modules():
        out += [p for p in module._parameters.values() if p is not None]
        out += [b for name, b in module._buffers.items()
                if b is not None and name not in module._non_persistent_buffers_set]
    return out
