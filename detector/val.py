"""Validation: non-maximum suppression, COCO-style metrics and mean losses of a model on a data set.

``validate`` is what training calls after an epoch; ``run_val`` is the standalone
``python -m detector val --weights best.pt`` path. Boxes stay in pixels of the square letterboxed
network input on both sides (detections and targets), so no rescaling to original images is needed for
mAP: letterboxing scales both equally.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms

from detector.config import TrainConfig
from detector.precision import autocast, autocast_dtype
from detector.results import Metrics

LOGGER = logging.getLogger(__name__)

METRIC_KEYS = ("precision", "recall", "map50", "map50_95")
LOSS_KEYS = ("box_loss", "obj_loss", "cls_loss")
_DEFAULTS = TrainConfig()  # a standalone validation uses a run's thresholds, batch, device and workers
# Candidates kept (by score) before NMS. NMS costs the square of its input on a CPU: an early-epoch model
# puts most of its 4032 boxes x classes (256 px) above the 0.001 threshold, and at 10000 candidates NMS took
# 65% of a validation (4.4 of 6.8 s for 128 images); at 3000 it takes 2.8 s with the same mAP.
DEFAULT_MAX_NMS = 3000


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    half = boxes[..., 2:4] / 2
    return torch.cat((boxes[..., :2] - half, boxes[..., :2] + half), dim=-1)


def non_max_suppression(
    pred: torch.Tensor,
    conf_thres: float = _DEFAULTS.conf_thres,
    iou_thres: float = _DEFAULTS.iou_thres,
    max_det: int = _DEFAULTS.max_det,
    multi_label: bool = True,
    max_nms: int = DEFAULT_MAX_NMS,
) -> list[torch.Tensor]:
    """Per image (n, 6) tensors ``[x1, y1, x2, y2, conf, cls]`` from raw eval-mode predictions.

    ``pred`` is (B, N, 5 + nc): box centre/size in pixels, objectness and class probabilities. The score
    is objectness times class probability (objectness alone for a single class, whose class output is
    not trained). With ``multi_label`` a box may survive once per class above the threshold, which is
    how mAP is customarily measured. Suppression is per class (torchvision's batched NMS).
    """
    nc = pred.shape[2] - 5
    out: list[torch.Tensor] = []
    for x in pred:
        x = x[torch.isfinite(x).all(dim=1)]
        obj = x[:, 4:5]
        scores = obj if nc == 1 else x[:, 5:] * obj
        boxes = xywh_to_xyxy(x[:, :4])
        if multi_label and nc > 1:
            rows, cls = (scores > conf_thres).nonzero(as_tuple=True)
            conf = scores[rows, cls]
            boxes = boxes[rows]
        else:
            conf, cls = scores.max(dim=1)
            keep = conf > conf_thres
            conf, cls, boxes = conf[keep], cls[keep], boxes[keep]
        if conf.numel() > max_nms:
            top = conf.topk(max_nms).indices
            conf, cls, boxes = conf[top], cls[top], boxes[top]
        keep = batched_nms(boxes.float(), conf.float(), cls, iou_thres)[:max_det]
        out.append(torch.cat((boxes[keep], conf[keep, None], cls[keep, None].to(boxes.dtype)), dim=1))
    return out


def targets_to_pixels(targets: torch.Tensor, batch_size: int, width: int, height: int) -> list[np.ndarray]:
    """Split (N, 6) ``[img, cls, xc, yc, w, h]`` normalised targets into per-image (m, 5) pixel xyxy."""
    t = targets.detach().cpu().float()
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    xyxy = xywh_to_xyxy(t[:, 2:6] * scale)
    rows = torch.cat((t[:, 1:2], xyxy), dim=1).numpy()
    index = t[:, 0].long().numpy()
    return [rows[index == i] for i in range(batch_size)]


@torch.no_grad()
def validate(
    model: nn.Module,
    dataloader: Iterable,
    loss_fn: Optional[Callable] = None,
    conf_thres: float = _DEFAULTS.conf_thres,
    iou_thres: float = _DEFAULTS.iou_thres,
    max_det: int = _DEFAULTS.max_det,
    device: Optional[torch.device] = None,
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Run ``model`` over ``dataloader``; return precision, recall, map50, map50_95 and the mean losses.

    The model is put in eval mode (and left there). ``channels_last`` feeds images in that memory
    format (use it when the model's weights are in it too). ``loss_fn`` is a ``DetectionLoss``; without it the
    losses are 0. Extra keys from ``detector.metrics.evaluate`` (per-class arrays) are passed through.
    """
    from detector.metrics import evaluate

    model.eval()
    if device is None:
        device = next(model.parameters()).device
    nc = int(getattr(model, "nc", 0))
    detections: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    loss_sum = torch.zeros(3)
    batches = 0
    dtype = autocast_dtype(device, amp, training=False)
    for imgs, targets, _paths in dataloader:
        imgs = imgs.to(device, non_blocking=True).float() / 255.0
        if channels_last:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        batch, _, height, width = imgs.shape
        with autocast(device, dtype):
            pred, raw = model(imgs)
            if loss_fn is not None:
                loss_sum += loss_fn([r.float() for r in raw], targets.to(device))[1].detach().float().cpu()
        batches += 1
        if nc == 0:
            nc = pred.shape[2] - 5
        for det in non_max_suppression(pred.float(), conf_thres, iou_thres, max_det):
            detections.append(det.cpu().numpy())
        truths.extend(targets_to_pixels(targets, batch, width, height))
    result: dict[str, Any] = dict(evaluate(detections, truths, nc)) if detections else {
        key: 0.0 for key in METRIC_KEYS
    }
    for key in METRIC_KEYS:
        result[key] = float(result[key])
    means = (loss_sum / max(batches, 1)).tolist()
    result.update(dict(zip(LOSS_KEYS, means)))
    return result


def metrics_from_result(result: dict[str, Any], epochs: int, seconds: float, status: str = "ok") -> Metrics:
    """A ``Metrics`` (with fitness) from a ``validate`` result."""
    values = {key: float(result.get(key, 0.0)) for key in METRIC_KEYS + LOSS_KEYS}
    return Metrics(**values, epochs=epochs, seconds=seconds, status=status).with_fitness()


def format_table(metrics: Metrics) -> str:
    """A two-line table of a result, for the log."""
    header = f"{'epochs':>7} {'P':>7} {'R':>7} {'mAP50':>7} {'mAP50-95':>9} {'box':>8} {'obj':>8} " \
             f"{'cls':>8} {'fitness':>8} {'seconds':>8} status"
    m = metrics
    row = f"{m.epochs:>7d} {m.precision:>7.4f} {m.recall:>7.4f} {m.map50:>7.4f} {m.map50_95:>9.4f} " \
          f"{m.box_loss:>8.4f} {m.obj_loss:>8.4f} {m.cls_loss:>8.4f} {m.fitness:>8.4f} {m.seconds:>8.1f} " \
          f"{m.status}"
    return header + "\n" + row


def run_val(
    weights: str | Path,
    data: Optional[str] = None,
    imgsz: Optional[int] = None,
    batch: int = _DEFAULTS.batch,
    device: str = _DEFAULTS.device,
    workers: int = _DEFAULTS.workers,
    conf_thres: float = _DEFAULTS.conf_thres,
    iou_thres: float = _DEFAULTS.iou_thres,
    max_det: int = _DEFAULTS.max_det,
    max_images: Optional[int] = None,
    cache_dir: Optional[str] = None,
) -> Metrics:
    """Validate the EMA weights of a checkpoint on the val split of ``data`` (default: its training data)."""
    from detector.checkpoint import load_checkpoint, model_from_checkpoint
    from detector.data import YoloDataset, build_dataloader, default_imgsz, resolve_data
    from detector.dist import parse_device
    from detector.errors import DataError
    from detector.loss import DetectionLoss

    start = time.time()
    ckpt = load_checkpoint(weights)
    torch_device = parse_device(device)
    model = model_from_checkpoint(ckpt).to(torch_device, memory_format=torch.channels_last)
    if data is None:
        data = (ckpt.get("cfg") or {}).get("data")
    data_cfg, embedded = resolve_data(data)
    if data_cfg.nc != model.nc:
        raise DataError(f"{data_cfg.yaml_path}: has {data_cfg.nc} classes but {weights} was trained "
                        f"with {model.nc}")
    size = default_imgsz(imgsz if imgsz is not None else ckpt.get("imgsz"), embedded)
    files = data_cfg.val[:max_images] if max_images else data_cfg.val
    dataset = YoloDataset(files, data_cfg.nc, size, hyp=None, augment=False,
                          cache_dir=Path(cache_dir) if cache_dir else None)
    loader, _ = build_dataloader(dataset, batch, workers, shuffle=False)
    loss_fn = DetectionLoss(model, dict(ckpt.get("hyp") or {}) or _default_hyp())
    result = validate(model, loader, loss_fn, conf_thres, iou_thres, max_det, device=torch_device,
                      channels_last=True)
    metrics = metrics_from_result(result, epochs=int(ckpt.get("epoch", 0)), seconds=time.time() - start)
    LOGGER.info("%s on %s (%d images, %d px):\n%s", weights, data_cfg.yaml_path, len(dataset), size,
                format_table(metrics))
    return metrics


def _default_hyp() -> dict[str, float]:
    from detector.hyp import DEFAULT_HYP

    return dict(DEFAULT_HYP)
