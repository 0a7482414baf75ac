"""COCO-style detection metrics: box IoU, greedy matching, 101-point AP over IoU .50:.05:.95, P/R at max F1.

``evaluate`` reproduces pycocotools' COCOeval for boxes (area range 'all', no per-image detection cap)
so that mAP50 and mAP50-95 can be compared with published COCO numbers, and reports precision and
recall at the confidence that maximises the mean F1 over classes, as YOLOv5 prints them.
See docs/detector-metrics.md for the rules and the measured agreement with COCOeval.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# Built exactly as COCOeval builds them, so that threshold comparisons see the same floats.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1, endpoint=True)
CONF_GRID = np.linspace(0.0, 1.0, 1000)
_EPS = np.spacing(1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N,4) with every box in ``b`` (M,4), both xyxy; returns (N,M).

    Widths are ``x2 - x1`` with no +1, as in COCOeval's box IoU; pairs with an empty union give 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _rows(value: Any, width: int, what: str, index: int) -> np.ndarray:
    """One image's array as float64 (n, width); an empty array of any shape means no rows."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, width))
    if arr.ndim != 2 or arr.shape[1] < width:
        raise ValueError(f"{what}[{index}]: expected an array of shape (n, {width}), got {arr.shape}")
    return arr[:, :width]


def _class_ids(values: np.ndarray, num_classes: int, what: str, index: int) -> np.ndarray:
    ids = values.astype(np.int64)
    bad = (ids != values) | (ids < 0) | (ids >= num_classes)
    if bad.any():
        value = float(values[bad][0])
        raise ValueError(f"{what}[{index}]: class {value!r} is not an integer in [0, {num_classes})")
    return ids


def match_image(det_boxes: np.ndarray, det_cls: np.ndarray, gt_boxes: np.ndarray,
                gt_cls: np.ndarray) -> np.ndarray:
    """Greedy COCO matching in one image: (T, D) bool, True where detection d is a true positive at IoU t.

    Detections must already be sorted by score, highest first. Each one takes the still-unmatched
    ground truth of its class with the highest IoU at or above the threshold; among equal IoUs the
    later ground truth wins, as in COCOeval's loop.
    """
    n_t, n_d, n_g = len(IOU_THRESHOLDS), len(det_boxes), len(gt_boxes)
    tp = np.zeros((n_t, n_d), dtype=bool)
    if n_d == 0 or n_g == 0:
        return tp
    iou = box_iou(det_boxes, gt_boxes)
    iou[det_cls[:, None] != gt_cls[None, :]] = -1.0  # classes never match each other
    # A detection below the loosest threshold against every box is a false positive everywhere, and
    # skipping it keeps the Python loop to the few detections that can match at all.
    candidates = np.nonzero(iou.max(axis=1) >= IOU_THRESHOLDS[0])[0]
    matched = np.zeros((n_t, n_g), dtype=bool)
    rows = np.arange(n_t)
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
    for d in candidates:
        ok = (iou[d][None, :] >= thr) & ~matched
        score = np.where(ok, iou[d][None, :], -1.0)
        best = n_g - 1 - np.argmax(score[:, ::-1], axis=1)  # last index among equal maxima
        hit = ok[rows, best]
        tp[:, d] = hit
        matched[rows[hit], best[hit]] = True
    return tp


def _average_precision(tp: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP per IoU threshold (T,) for one class from its score-ranked TP matrix (T, n), COCO's 101 points.

    Also returns the raw (un-enveloped) precision and recall curves at the first threshold (IoU 0.5).
    """
    tp_sum = np.cumsum(tp, axis=1).astype(np.float64)
    fp_sum = np.cumsum(~tp, axis=1).astype(np.float64)
    recall = tp_sum / n_gt
    precision = tp_sum / (tp_sum + fp_sum + _EPS)
    # Precision envelope: each point takes the best precision at any higher recall.
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    n = tp.shape[1]
    ap = np.zeros(len(tp))
    for t in range(len(tp)):
        idx = np.searchsorted(recall[t], RECALL_POINTS, side="left")
        valid = idx < n
        ap[t] = envelope[t, idx[valid]].sum() / len(RECALL_POINTS)  # unreachable recall points count 0
    return ap, precision[0], recall[0]


def evaluate(detections: Sequence[np.ndarray], targets: Sequence[np.ndarray],
             num_classes: int) -> dict[str, Any]:
    """COCO mAP50 and mAP50-95, with precision and recall at the best mean-F1 confidence.

    ``detections[i]``: (n,6) ``[x1,y1,x2,y2,conf,cls]`` of image i; ``targets[i]``: (m,5)
    ``[cls,x1,y1,x2,y2]``; pixels, any consistent scale. Detections are ranked across images by score
    with a stable sort (ties keep image order, then their order within the image), as COCOeval does.
    AP is averaged over classes that have ground truth; classes with detections but no ground truth
    are left out. With no ground truth at all every figure is 0.

    Returns ``precision``, ``recall``, ``map50``, ``map50_95`` (floats), ``conf`` (the chosen
    confidence), and per class that has ground truth: ``classes``, ``ap50_per_class``,
    ``ap_per_class`` (mean over IoU .50:.95), ``p_per_class``, ``r_per_class``, ``n_gt_per_class``.
    """
    if len(detections) != len(targets):
        raise ValueError(f"evaluate: {len(detections)} detection arrays for {len(targets)} target arrays")
    n_t = len(IOU_THRESHOLDS)
    confs, classes, tps = [], [], []
    n_gt = np.zeros(num_classes, dtype=np.int64)
    for i, (det, tgt) in enumerate(zip(detections, targets)):
        det = _rows(det, 6, "detections", i)
        tgt = _rows(tgt, 5, "targets", i)
        det_cls = _class_ids(det[:, 5], num_classes, "detections", i)
        gt_cls = _class_ids(tgt[:, 0], num_classes, "targets", i)
        n_gt += np.bincount(gt_cls, minlength=num_classes)
        order = np.argsort(-det[:, 4], kind="stable")
        tp = np.zeros((n_t, len(det)), dtype=bool)
        tp[:, order] = match_image(det[order, :4], det_cls[order], tgt[:, 1:5], gt_cls)
        confs.append(det[:, 4])
        classes.append(det_cls)
        tps.append(tp)

    conf = np.concatenate(confs) if confs else np.zeros(0)
    det_cls = np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)
    tp_all = np.concatenate(tps, axis=1) if tps else np.zeros((n_t, 0), dtype=bool)
    # Kept in image order, then original order, so a stable sort breaks ties like COCOeval's mergesort.
    rank = np.argsort(-conf, kind="stable")

    present = np.nonzero(n_gt > 0)[0]
    ap = np.zeros((len(present), n_t))
    p_curve = np.zeros((len(present), len(CONF_GRID)))
    r_curve = np.zeros((len(present), len(CONF_GRID)))
    for k, c in enumerate(present):
        sel = rank[det_cls[rank] == c]
        if len(sel) == 0:
            continue  # ground truth but no detections: AP 0, P 0, R 0
        ap[k], prec, rec = _average_precision(tp_all[:, sel], int(n_gt[c]))
        # Curves against confidence: above the top score nothing is detected (P taken as 1, R 0).
        x = -conf[sel]
        r_curve[k] = np.interp(-CONF_GRID, x, rec, left=0.0)
        p_curve[k] = np.interp(-CONF_GRID, x, prec, left=1.0)

    if len(present) == 0:
        best = 0
        p_at = r_at = np.zeros(0)
    else:
        f1 = 2 * p_curve * r_curve / (p_curve + r_curve + 1e-16)
        best = int(f1.mean(axis=0).argmax())
        p_at, r_at = p_curve[:, best], r_curve[:, best]
    return {
        "precision": float(p_at.mean()) if len(present) else 0.0,
        "recall": float(r_at.mean()) if len(present) else 0.0,
        "map50": float(ap[:, 0].mean()) if len(present) else 0.0,
        "map50_95": float(ap.mean()) if len(present) else 0.0,
        "conf": float(CONF_GRID[best]),
        "classes": present,
        "ap50_per_class": ap[:, 0],
        "ap_per_class": ap.mean(axis=1),
        "p_per_class": p_at,
        "r_per_class": r_at,
        "n_gt_per_class": n_gt[present],
    }
