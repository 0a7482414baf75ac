"""Training-time image augmentation driven by the YOLOv5 hyp keys, in numpy and PIL only.

Every function takes and returns RGB uint8 ``(h, w, 3)`` arrays and labels as float ``(n, 5)``
``[cls, x1, y1, x2, y2]`` in pixels of that array, and draws randomness from the
``numpy.random.Generator`` it is given, so a sample is reproducible from its seed.

Keys and what they do (each value 0 turns its augmentation off):

- ``hsv_h``, ``hsv_s``, ``hsv_v``: random gains in ``[1 - g, 1 + g]`` for hue, saturation, value,
  applied through lookup tables in HSV space.
- ``degrees``, ``translate``, ``scale``, ``shear``, ``perspective``: one combined projective warp; boxes
  follow by warping their four corners and taking the enclosing box, clipped to the image.
- ``flipud``, ``fliplr``: probabilities of flips.
- ``mosaic``: probability of a 2x2 mosaic of four images around a random centre, then warped to size.
- ``mixup``: probability of blending with a second sample, weight ~ Beta(32, 32), labels concatenated.
- ``copy_paste``: probability, per box of another image, of pasting that box's pixels at a random
  place that does not hide existing boxes. Labels here are boxes without segmentation polygons, so the
  whole rectangle is pasted (background included), not the object's outline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, Mapping

import numpy as np
from PIL import Image

PAD = 114  # grey of letterbox padding and warp borders (the YOLO convention)

Loader = Callable[[int], "tuple[np.ndarray, np.ndarray]"]  # index -> (image, labels [cls,x1,y1,x2,y2] px)


@dataclass
class AugmentConfig:
    """The augmentation hyps; build with ``from_hyp`` (missing keys take the YOLOv5 defaults)."""

    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    flipud: float = 0.0
    fliplr: float = 0.5
    mosaic: float = 1.0
    mixup: float = 0.0
    copy_paste: float = 0.0

    @classmethod
    def from_hyp(cls, hyp: Mapping[str, float] | None) -> "AugmentConfig":
        hyp = hyp or {}
        return cls(**{f.name: float(hyp[f.name]) for f in fields(cls) if f.name in hyp})

    @classmethod
    def off(cls) -> "AugmentConfig":
        """Every augmentation disabled."""
        return cls(**{f.name: 0.0 for f in fields(cls)})


# -- resizing -------------------------------------------------------------------------------------------

def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping aspect so the long side is ``size``, centre on a grey square ``size x size``.

    Returns the square image, the resize ratio and the (left, top) padding, so a pixel point p of the
    input lands at ``p * ratio + pad``.
    """
    h, w = img.shape[:2]
    r = size / max(h, w)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    if (nw, nh) != (w, h):
        pil = Image.fromarray(np.ascontiguousarray(img))
        img = np.asarray(pil.resize((nw, nh), Image.Resampling.BILINEAR))
    left, top = (size - nw) // 2, (size - nh) // 2
    out = np.full((size, size, 3), PAD, dtype=np.uint8)
    out[top:top + nh, left:left + nw] = img
    return out, r, (left, top)


# -- colour ---------------------------------------------------------------------------------------------

def augment_hsv(img: np.ndarray, hgain: float, sgain: float, vgain: float,
                rng: np.random.Generator) -> np.ndarray:
    """Random hue/saturation/value gains via lookup tables; returns ``img`` unchanged when all are 0."""
    if not (hgain or sgain or vgain):
        return img
    r = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    x = np.arange(256, dtype=np.float32)
    lut = np.concatenate([
        (x * r[0]) % 256,  # PIL's hue runs 0..255 around the circle
        np.clip(x * r[1], 0, 255),
        np.clip(x * r[2], 0, 255),
    ]).astype(np.uint8)
    hsv = Image.fromarray(img).convert("HSV").point(lut.tolist())  # one table per band, in C
    return np.asarray(hsv.convert("RGB"))


# -- geometry -------------------------------------------------------------------------------------------

def perspective_matrix(in_wh: tuple[int, int], out_size: int, rng: np.random.Generator, degrees: float,
                       translate: float, scale: float, shear: float, perspective: float) -> np.ndarray:
    """Random 3x3 matrix mapping input pixels to output pixels (centre, perspective, rotate+scale,
    shear, translate). The input's centre lands on the output's centre when ``translate`` is 0."""
    c = np.eye(3)
    c[0, 2], c[1, 2] = -in_wh[0] / 2, -in_wh[1] / 2
    p = np.eye(3)
    p[2, 0], p[2, 1] = rng.uniform(-perspective, perspective, 2)
    angle = rng.uniform(-degrees, degrees)
    s = rng.uniform(1 - scale, 1 + scale)
    a = math.radians(angle)
    rot = np.array([[s * math.cos(a), s * math.sin(a), 0], [-s * math.sin(a), s * math.cos(a), 0], [0, 0, 1]])
    sh = np.eye(3)
    sh[0, 1], sh[1, 0] = np.tan(np.radians(rng.uniform(-shear, shear, 2)))
    t = np.eye(3)
    t[0, 2], t[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate, 2) * out_size
    return t @ sh @ rot @ p @ c


def warp_image(img: np.ndarray, m: np.ndarray, out_size: int) -> np.ndarray:
    """Warp ``img`` by ``m`` (input -> output pixels) into a grey-bordered ``out_size`` square."""
    inv = np.linalg.inv(m)
    inv = inv / inv[2, 2]
    # PIL wants the output -> input mapping; the affine path is faster when there is no perspective.
    affine = not m[2, :2].any()
    method = Image.Transform.AFFINE if affine else Image.Transform.PERSPECTIVE
    coeffs = tuple(float(v) for v in inv.flatten()[:6 if affine else 8])
    pil = Image.fromarray(np.ascontiguousarray(img))
    out = pil.transform((out_size, out_size), method, coeffs, resample=Image.Resampling.BILINEAR,
                        fillcolor=(PAD, PAD, PAD))
    return np.asarray(out)


def _transform_boxes(xyxy: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # The four corners of each box through m, then the box enclosing them. A corner that a strong
    # perspective sends behind the horizon (w <= 0) has no image: such boxes are flagged invalid.
    n = len(xyxy)
    corners = np.ones((n * 4, 3))
    corners[:, :2] = xyxy[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    pts = corners @ m.T
    valid = (pts[:, 2] > 1e-6).reshape(n, 4).all(1)
    pts = pts[:, :2] / np.maximum(pts[:, 2:3], 1e-6)
    x, y = pts[:, 0].reshape(n, 4), pts[:, 1].reshape(n, 4)
    return np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], 1), valid


def box_candidates(full: np.ndarray, kept: np.ndarray, min_px: float = 2.0, min_area: float = 0.1,
                   max_ar: float = 100.0) -> np.ndarray:
    """Boxes worth keeping after a transform: both sides > ``min_px``, visible area more than
    ``min_area`` of the untruncated box, aspect ratio below ``max_ar``."""
    w, h = kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]
    full_area = (full[:, 2] - full[:, 0]) * (full[:, 3] - full[:, 1])
    ar = np.maximum(w / (h + 1e-16), h / (w + 1e-16))
    return (w > min_px) & (h > min_px) & (w * h / (full_area + 1e-16) > min_area) & (ar < max_ar)


def warp_labels(labels: np.ndarray, m: np.ndarray, in_wh: tuple[int, int], out_size: int) -> np.ndarray:
    """Boxes through ``m``, clipped to the output; drops those that became too small or mostly hidden.

    Boxes are first clipped to the input (there are no pixels beyond it), then warped and clipped again.
    """
    if not len(labels):
        return labels
    full, valid = _transform_boxes(labels[:, 1:5], m)
    inside = labels[:, 1:5].copy()
    inside[:, [0, 2]] = inside[:, [0, 2]].clip(0, in_wh[0])
    inside[:, [1, 3]] = inside[:, [1, 3]].clip(0, in_wh[1])
    visible, valid_inside = _transform_boxes(inside, m)
    full = np.where(valid[:, None], full, visible)  # only the part with pixels can be measured then
    kept = visible.clip(0, out_size)
    keep = box_candidates(full, kept) & valid_inside
    return np.concatenate([labels[keep, :1], kept[keep]], 1)


def random_perspective(img: np.ndarray, labels: np.ndarray, cfg: AugmentConfig, out_size: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random warp from ``degrees translate scale shear perspective`` into ``out_size``.

    A square input of ``out_size`` with all five at 0 is returned untouched (no resampling).
    """
    h, w = img.shape[:2]
    m = perspective_matrix((w, h), out_size, rng, cfg.degrees, cfg.translate, cfg.scale, cfg.shear,
                           cfg.perspective)
    if (w, h) == (out_size, out_size) and np.allclose(m, np.eye(3)):
        return img, labels
    return warp_image(img, m, out_size), warp_labels(labels, m, (w, h), out_size)


def flip_lr(img: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = img.shape[1]
    labels = labels.copy()
    labels[:, [1, 3]] = w - labels[:, [3, 1]]
    return img[:, ::-1], labels


def flip_ud(img: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = img.shape[0]
    labels = labels.copy()
    labels[:, [2, 4]] = h - labels[:, [4, 2]]
    return img[::-1], labels


# -- multi-image ----------------------------------------------------------------------------------------

def mosaic4(parts: list[tuple[np.ndarray, np.ndarray]], size: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Place four images around a random centre of a grey ``2*size`` canvas, one per quadrant, each
    touching the centre; returns the canvas and the labels moved with them (not yet clipped)."""
    s2 = 2 * size
    xc, yc = (int(v) for v in rng.uniform(size / 2, 3 * size / 2, 2))
    canvas = np.full((s2, s2, 3), PAD, dtype=np.uint8)
    out = []
    for i, (img, lab) in enumerate(parts):
        h, w = img.shape[:2]
        # Canvas region (a) and the image region (b) that fills it; images are cut at the canvas edges.
        x1a, x2a = (max(xc - w, 0), xc) if i in (0, 2) else (xc, min(xc + w, s2))
        y1a, y2a = (max(yc - h, 0), yc) if i in (0, 1) else (yc, min(yc + h, s2))
        x1b = w - (x2a - x1a) if i in (0, 2) else 0
        y1b = h - (y2a - y1a) if i in (0, 1) else 0
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
        lab = lab.copy()
        lab[:, [1, 3]] += x1a - x1b
        lab[:, [2, 4]] += y1a - y1b
        out.append(lab)
    return canvas, np.concatenate(out, 0) if out else np.zeros((0, 5), np.float32)


def mixup(img: np.ndarray, labels: np.ndarray, img2: np.ndarray, labels2: np.ndarray,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size images with weight ~ Beta(32, 32) and keep the labels of both."""
    r = rng.beta(32.0, 32.0)
    blend = img.astype(np.float32) * r + img2.astype(np.float32) * (1 - r)
    return blend.round().astype(np.uint8), np.concatenate([labels, labels2], 0)


def _ioa(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    # Fraction of each of ``boxes`` covered by ``box``.
    iw = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(0)
    ih = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return iw * ih / (area + 1e-9)


def copy_paste(img: np.ndarray, labels: np.ndarray, src: np.ndarray, src_labels: np.ndarray, p: float,
               rng: np.random.Generator, max_ioa: float = 0.3,
               tries: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Paste each box of ``src`` with probability ``p`` at a random position in ``img`` where it covers
    at most ``max_ioa`` of any box already there (existing or pasted). Box-level: the whole rectangle is
    copied because labels carry no segmentation outlines."""
    if p <= 0 or not len(src_labels):
        return img, labels
    h, w = img.shape[:2]
    img = img.copy()
    boxes = [labels]
    for row in src_labels[rng.random(len(src_labels)) < p]:
        x1, y1, x2, y2 = (int(round(v)) for v in row[1:5])
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = min(x2, src.shape[1]), min(y2, src.shape[0])
        bw, bh = x2 - x1, y2 - y1
        if bw <= 2 or bh <= 2 or bw > w or bh > h:
            continue
        current = np.concatenate(boxes, 0)
        for _ in range(tries):
            nx, ny = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            cand = np.array([nx, ny, nx + bw, ny + bh], dtype=np.float32)
            if not len(current) or _ioa(cand, current[:, 1:5]).max() <= max_ioa:
                img[ny:ny + bh, nx:nx + bw] = src[y1:y2, x1:x2]
                boxes.append(np.array([[row[0], *cand]], dtype=np.float32))
                break
    return img, np.concatenate(boxes, 0)


# -- the training pipeline ------------------------------------------------------------------------------

def _square(load: Loader, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    img, lab = load(index)
    out, r, (left, top) = letterbox(img, size)
    lab = lab.copy()
    lab[:, 1:5] = lab[:, 1:5] * r + (left, top, left, top)
    return out, lab


def _geometric(load: Loader, index: int, n: int, size: int, cfg: AugmentConfig,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Mosaic (warped from the 2x canvas to size) or a single letterboxed image, warped in place.
    if cfg.mosaic > 0 and rng.random() < cfg.mosaic:
        others = rng.integers(0, n, 3)
        canvas, lab = mosaic4([load(int(i)) for i in (index, *others)], size, rng)
        return random_perspective(canvas, lab, cfg, size, rng)
    img, lab = _square(load, index, size)
    return random_perspective(img, lab, cfg, size, rng)


def _other(index: int, n: int, rng: np.random.Generator) -> int:
    # A random image other than ``index`` (blending or pasting an image into itself adds little).
    return int((index + 1 + rng.integers(0, n - 1)) % n) if n > 1 else index


def augment_sample(load: Loader, index: int, n: int, size: int, cfg: AugmentConfig,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Build one augmented ``size x size`` training sample for ``index`` of a data set of ``n`` images.

    ``load(i)`` returns image ``i`` (long side ``size``) and its labels in its pixels. Order: mosaic or
    letterbox, warp, copy-paste, mixup, HSV, flips. With every key at 0 the output is the letterboxed
    image, pixel for pixel.
    """
    img, lab = _geometric(load, index, n, size, cfg, rng)
    if cfg.copy_paste > 0:
        src, src_lab = _square(load, _other(index, n, rng), size)
        img, lab = copy_paste(img, lab, src, src_lab, cfg.copy_paste, rng)
    if cfg.mixup > 0 and rng.random() < cfg.mixup:
        img2, lab2 = _geometric(load, _other(index, n, rng), n, size, cfg, rng)
        img, lab = mixup(img, lab, img2, lab2, rng)
    img = augment_hsv(np.ascontiguousarray(img), cfg.hsv_h, cfg.hsv_s, cfg.hsv_v, rng)
    if cfg.flipud > 0 and rng.random() < cfg.flipud:
        img, lab = flip_ud(img, lab)
    if cfg.fliplr > 0 and rng.random() < cfg.fliplr:
        img, lab = flip_lr(img, lab)
    return np.ascontiguousarray(img), lab
