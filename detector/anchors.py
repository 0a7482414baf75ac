"""Anchor boxes: the default set, best possible recall, and AutoAnchor (k-means plus evolution).

Anchors are (w, h) in pixels of the square network input, shaped (levels, anchors per level, 2) and
ordered by area from the stride-8 level to the stride-32 level. A label box can be learned only if
some anchor is within ``anchor_t`` of it in both width and height ratio (the matching rule of
``detector.loss``); the fraction of label boxes for which that holds is the best possible recall (BPR).
``check_anchors`` refits the anchors when the BPR of the current ones falls below 0.98.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from detector.model import Model

LOGGER = logging.getLogger(__name__)

# The well-known anchors for 640 px inputs; levels P3/8, P4/16, P5/32.
DEFAULT_ANCHORS_3 = np.array(
    [[[10, 13], [16, 30], [33, 23]],
     [[30, 61], [62, 45], [59, 119]],
     [[116, 90], [156, 198], [373, 326]]], dtype=np.float32)

BPR_TARGET = 0.98
MIN_LABEL_PX = 2.0  # boxes smaller than this are noise for anchor fitting
MAX_FIT_LABELS = 30000  # the fit on a random subset of this size is as good and bounded in time


def default_anchors(na: int = 3, nl: int = 3) -> np.ndarray:
    """Default anchors, (nl, na, 2) pixels for a 640 px input.

    For ``na == 3`` these are the well-known nine. Otherwise ``nl * na`` anchors are spread evenly, in
    log space, along the nine sorted by area, so any count covers the same range of sizes and shapes.
    """
    if na < 1:
        raise ValueError(f"anchors per level must be >= 1, got {na}")
    if na == 3 and nl == 3:
        return DEFAULT_ANCHORS_3.copy()
    base = np.log(DEFAULT_ANCHORS_3.reshape(-1, 2).astype(np.float64))
    knots = np.arange(len(base), dtype=np.float64)
    count = nl * na
    pos = np.linspace(0.0, len(base) - 1.0, count) if count > 1 else np.array([(len(base) - 1) / 2])
    wh = np.stack([np.exp(np.interp(pos, knots, base[:, j])) for j in range(2)], axis=1)
    return _sort_by_area(wh).reshape(nl, na, 2).astype(np.float32)


def label_wh(labels: list[np.ndarray], shapes: np.ndarray, imgsz: int) -> np.ndarray:
    """Label box sizes in pixels at the training image size, (n, 2).

    ``labels`` per image (n, 5) [cls, xc, yc, w, h] normalised to the original image; ``shapes`` (N, 2)
    original (w, h). Letterboxing scales the long side to ``imgsz``, so a normalised w becomes
    w * imgsz * image_w / max(image_w, image_h), likewise for h.
    """
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    if len(labels) != len(shapes):
        raise ValueError(f"{len(labels)} label arrays but {len(shapes)} image shapes")
    out = []
    for lab, shape in zip(labels, shapes):
        lab = np.asarray(lab, dtype=np.float64).reshape(-1, 5)
        if len(lab):
            out.append(lab[:, 3:5] * imgsz * shape / shape.max())
    return np.concatenate(out, 0).astype(np.float32) if out else np.zeros((0, 2), np.float32)


def _worst_ratio(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(n, k): for every label and anchor, min over w and h of min(r, 1/r); 1 is a perfect fit."""
    r = wh[:, None, :] / anchors[None, :, :]
    return np.minimum(r, 1.0 / r).min(axis=2)


def best_possible_recall(wh: np.ndarray, anchors: np.ndarray, thr: float) -> tuple[float, float]:
    """(BPR, mean number of anchors per label within ``thr``) of label sizes ``wh`` (n, 2) pixels.

    A label counts as recallable when, for its best anchor, max(r, 1/r) < thr for both the width and
    the height ratio r. With no labels both figures are 0.
    """
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if not len(wh):
        return 0.0, 0.0
    x = _worst_ratio(wh, anchors)
    within = x > 1.0 / thr
    return float(within.any(axis=1).mean()), float(within.sum(axis=1).mean())


def _fit_metric(wh: np.ndarray, anchors: np.ndarray, thr: float) -> float:
    # Mean best ratio, counting only labels that can match at all: rewards both coverage and tightness.
    best = _worst_ratio(wh, anchors).max(axis=1)
    return float((best * (best > 1.0 / thr)).mean())


def _sort_by_area(wh: np.ndarray) -> np.ndarray:
    return wh[np.argsort(wh.prod(axis=1), kind="stable")]


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    """Plain k-means with k-means++ seeding; returns (k, points.shape[1]) centroids.

    With fewer distinct points than ``k`` the remaining centroids are jittered copies, which the
    evolution step then pulls apart.
    """
    n = len(points)
    centroids = np.empty((k, points.shape[1]), dtype=np.float64)
    centroids[0] = points[rng.integers(n)]
    d2 = ((points - centroids[0]) ** 2).sum(1)
    for c in range(1, k):
        total = d2.sum()
        idx = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centroids[c] = points[idx] * (1.0 + 0.01 * rng.standard_normal(points.shape[1]))
        d2 = np.minimum(d2, ((points - centroids[c]) ** 2).sum(1))
    for _ in range(iters):
        assign = ((points[:, None, :] - centroids[None]) ** 2).sum(2).argmin(1)
        moved = False
        for c in range(k):
            members = points[assign == c]
            if len(members):  # an empty cluster keeps its centroid rather than collapsing
                new = members.mean(0)
                moved |= not np.allclose(new, centroids[c])
                centroids[c] = new
        if not moved:
            break
    return centroids


def fit_anchors(wh: np.ndarray, n: int, thr: float, seed: int = 0, generations: int = 1000) -> np.ndarray:
    """Fit ``n`` anchors (n, 2) to label sizes ``wh`` (pixels), sorted by area.

    k-means on whitened sizes gives a start; a seeded evolution then mutates all anchors by a few
    percent at a time and keeps any mutation that improves the ratio-based fit metric.
    """
    rng = np.random.default_rng(seed)
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    if len(wh) > MAX_FIT_LABELS:
        wh = wh[rng.choice(len(wh), MAX_FIT_LABELS, replace=False)]
    # Whitening makes k-means treat widths and heights on comparable scales.
    sigma = wh.std(0)
    sigma[sigma <= 0] = 1.0
    anchors = kmeans(wh / sigma, n, rng) * sigma
    anchors = np.clip(anchors, MIN_LABEL_PX, None)
    best = _fit_metric(wh, anchors, thr)
    start = best
    prob, spread = 0.9, 0.1
    for _ in range(generations):
        factor = np.ones_like(anchors)
        while (factor == 1).all():  # a mutation that changes nothing would waste the generation
            mask = rng.random(anchors.shape) < prob
            factor = (mask * rng.random(anchors.shape) * rng.standard_normal(anchors.shape) * spread + 1)
            factor = factor.clip(0.3, 3.0)
        child = np.clip(anchors * factor, MIN_LABEL_PX, None)
        score = _fit_metric(wh, child, thr)
        if score > best:
            best, anchors = score, child
    LOGGER.debug("anchor fit metric %.4f after k-means, %.4f after evolution", start, best)
    return _sort_by_area(anchors)


def check_anchors(model: "Model", labels: list[np.ndarray], shapes: np.ndarray, imgsz: int, thr: float,
                  seed: int = 0) -> bool:
    """AutoAnchor: refit ``model``'s anchors when their BPR on the training labels is below 0.98.

    New anchors replace the old only when their BPR is higher. Returns True when the anchors changed.
    """
    detect = model.detect
    current = detect.anchors.detach().cpu().numpy().astype(np.float64)
    nl, na, _ = current.shape
    wh = label_wh(labels, shapes, imgsz)
    wh = wh[(wh >= MIN_LABEL_PX).all(1)]
    if not len(wh):
        LOGGER.warning("AutoAnchor: no labels of at least %g px, anchors left unchanged", MIN_LABEL_PX)
        return False
    bpr, aat = best_possible_recall(wh, current, thr)
    LOGGER.info("AutoAnchor: %.2f anchors/target, best possible recall %.4f at anchor_t %.2f "
                "(%d labels, imgsz %d)", aat, bpr, thr, len(wh), imgsz)
    if bpr >= BPR_TARGET:
        return False
    fitted = fit_anchors(wh, nl * na, thr, seed=seed)
    new_bpr, new_aat = best_possible_recall(wh, fitted, thr)
    if new_bpr <= bpr:
        LOGGER.info("AutoAnchor: refitted anchors reach BPR %.4f, not better; keeping the current ones",
                    new_bpr)
        return False
    model.set_anchors(fitted.reshape(nl, na, 2))
    LOGGER.info("AutoAnchor: new anchors raise best possible recall %.4f -> %.4f (%.2f anchors/target): %s",
                bpr, new_bpr, new_aat, ", ".join(f"{w:.0f},{h:.0f}" for w, h in fitted))
    return True
