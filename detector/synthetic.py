"""The embedded default data set: filled shapes on cluttered, textured backgrounds, in YOLO format.

``make_synthetic`` renders it once per (version, seed, sizes) into a cache folder and returns its data
YAML; later calls, from any process, reuse it. Four classes (ellipse, rectangle, triangle, cross) vary in
size, aspect, rotation, colour and shading; backgrounds are gradients with low-frequency blotches,
stripes and sensor-like noise; clutter (lines, hollow outlines, wobbly blobs) is never labelled; objects
may overlap, and each label is the box of the object's visible pixels. Same seed, same bytes.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml
from PIL import Image, ImageDraw

try:  # the lock only exists on POSIX; elsewhere concurrent first uses are not protected
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOGGER = logging.getLogger(__name__)

VERSION = "v1"  # bump whenever rendering changes, so old caches are never mistaken for new ones
CLASS_NAMES = ("ellipse", "rectangle", "triangle", "cross")
CACHE_ENV = "YOLO_EVOLVE_CACHE"
MARKER = ".complete"
YAML_NAME = "data.yaml"
JPEG_QUALITY = 90
_SPLITS = {"train": 0, "val": 1}
_SS = 2  # supersampling of shape masks: anti-aliased edges look like a camera's, not a plotter's
_MIN_VISIBLE = 0.4  # an object with less of itself visible than this is unlabelled (mostly hidden)
_MAX_COVER = 0.5  # a new object may hide at most this much of an earlier one


@dataclass(frozen=True)
class SyntheticSpec:
    """What identifies one generated set; its ``key`` names the cache folder."""

    n_train: int = 512
    n_val: int = 128
    imgsz: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("n_train", 1), ("n_val", 1), ("imgsz", 32), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"make_synthetic: {name} must be an integer >= {low}, got {value!r}")

    @property
    def key(self) -> str:
        return f"{VERSION}-s{self.seed}-{self.n_train}-{self.n_val}-{self.imgsz}"


def cache_base(root: str | Path | None = None) -> Path:
    """Folder that holds generated sets: ``root``, else ``$YOLO_EVOLVE_CACHE/synthetic``, else
    ``~/.cache/yolo-evolve/synthetic``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(CACHE_ENV)
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "yolo-evolve"
    return base / "synthetic"


def make_synthetic(root: Path | None = None, n_train: int = 512, n_val: int = 128, imgsz: int = 256,
                   seed: int = 0) -> Path:
    """Return the data YAML of the synthetic set, rendering it first if no complete copy exists.

    The set lives in ``cache_base(root) / "<version>-s<seed>-<n_train>-<n_val>-<imgsz>"``. It is built
    in a temporary sibling folder and renamed into place, under an exclusive file lock, so concurrent
    callers wait for one build and nobody ever sees a half-written set.
    """
    spec = SyntheticSpec(n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed)
    base = cache_base(root)
    final = base / spec.key
    if (final / MARKER).is_file():
        return final / YAML_NAME
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f".{spec.key}.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (final / MARKER).is_file():  # another process built it while we waited
                return final / YAML_NAME
            # Holding the lock, anything left here is from a build that died half-way.
            for stale in base.glob(f".{spec.key}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():
                shutil.rmtree(final)
            tmp = base / f".{spec.key}.tmp-{os.getpid()}"
            try:
                _build(tmp, final, spec)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return final / YAML_NAME


def _build(tmp: Path, final: Path, spec: SyntheticSpec) -> None:
    """Render every image and label into ``tmp``; the YAML already names ``final`` (after the rename)."""
    start = time.perf_counter()
    LOGGER.info("generating synthetic data set %s (%d train, %d val, %d px) in %s",
                spec.key, spec.n_train, spec.n_val, spec.imgsz, final)
    counts = np.zeros(len(CLASS_NAMES), dtype=np.int64)
    for split, n in (("train", spec.n_train), ("val", spec.n_val)):
        img_dir, lbl_dir = tmp / "images" / split, tmp / "labels" / split
        img_dir.mkdir(parents=True)
        lbl_dir.mkdir(parents=True)
        for i in range(n):
            # One generator per image: any image can be reproduced alone, whatever the set size.
            rng = np.random.default_rng([spec.seed, _SPLITS[split], i])
            image, labels = render_image(rng, spec.imgsz)
            image.save(img_dir / f"{i:06d}.jpg", quality=JPEG_QUALITY)
            (lbl_dir / f"{i:06d}.txt").write_text(
                "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels))
            counts += np.bincount(labels[:, 0].astype(np.int64), minlength=len(CLASS_NAMES))
    header = (f"# Synthetic shapes data set {spec.key}, generated by detector/synthetic.py.\n"
              "# Regenerated on demand from its seed; safe to delete.\n")
    data = {"path": str(final.resolve()), "train": "images/train", "val": "images/val",
            "names": list(CLASS_NAMES)}
    (tmp / YAML_NAME).write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    seconds = time.perf_counter() - start
    summary = {"version": VERSION, "seed": spec.seed, "n_train": spec.n_train, "n_val": spec.n_val,
               "imgsz": spec.imgsz, "objects_per_class": counts.tolist(), "seconds": round(seconds, 2)}
    (tmp / MARKER).write_text(json.dumps(summary) + "\n")  # written last: its presence means complete
    LOGGER.info("synthetic data set ready in %.1f s: %d objects", seconds, int(counts.sum()))


# ------------------------------------------------------------------------------------------- rendering
Region = tuple[slice, slice]


def _stamp(pts: np.ndarray, height: int, width: int, line: int = 0) -> Optional[tuple[Region, np.ndarray]]:
    """Coverage (0..1) of a filled polygon, or of a polyline ``line`` px wide, over its clipped box."""
    pad = line + 1
    x0, y0 = np.floor(pts.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + pad
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    mask = Image.new("L", ((x1 - x0) * _SS, (y1 - y0) * _SS), 0)
    local = [tuple(p) for p in ((pts - (x0, y0)) * _SS).tolist()]
    draw = ImageDraw.Draw(mask)
    if line:
        draw.line(local, fill=255, width=line * _SS, joint="curve")
    else:
        draw.polygon(local, fill=255)
    alpha = np.asarray(mask.reduce(_SS), dtype=np.float32) * (1 / 255)
    return (slice(y0, y1), slice(x0, x1)), alpha


def _rotate(pts: np.ndarray, angle: float, centre: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + centre


def _shape(cls: int, size: float, rng: np.random.Generator) -> np.ndarray:
    """Outline of class ``cls`` centred on 0, about ``size`` px across before rotation."""
    half = size / 2
    if cls == 0:  # ellipse, from circle to 2:1
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        return np.column_stack([np.cos(t), np.sin(t) * rng.uniform(0.5, 1.0)]) * half
    if cls == 1:  # rectangle, from square to about 3:1
        h = half * rng.uniform(0.35, 1.0)
        return np.array([[-half, -h], [half, -h], [half, h], [-half, h]])
    if cls == 2:  # triangle: jittered equilateral, squeezed, never a sliver
        ang = np.deg2rad([90.0, 210.0, 330.0]) + rng.uniform(-0.3, 0.3, 3)
        return np.column_stack([np.cos(ang), np.sin(ang) * rng.uniform(0.65, 1.0)]) * half * 1.15
    # cross (plus sign) with arms of unequal length and varied thickness
    t, v = half * rng.uniform(0.28, 0.42), half * rng.uniform(0.7, 1.0)
    return np.array([[-t, -v], [t, -v], [t, -t], [half, -t], [half, t], [t, t], [t, v], [-t, v],
                     [-t, t], [-half, t], [-half, -t], [-t, -t]])


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient between two colours, low-frequency blotches and, often, faint stripes (float32 HxWx3)."""
    # Python floats keep the arithmetic in float32; numpy float64 scalars would promote every array.
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    phi = float(rng.uniform(0, 2 * np.pi))
    ramp = (xx * (np.cos(phi) / max(height, width) * 0.5) + yy * (np.sin(phi) / max(height, width) * 0.5)
            + 0.5)
    c0, c1 = rng.uniform(20, 235, (2, 3)).astype(np.float32)
    coarse = rng.normal(0, 1, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3)) * 40 + 128
    blotch = Image.fromarray(coarse.clip(0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    gain = float(rng.uniform(0.3, 0.8))
    img = np.asarray(blotch, dtype=np.float32) * gain + (c0 - 128 * gain)
    img += (c1 - c0) * ramp[..., None]
    if rng.random() < 0.5:
        psi, period, amp = float(rng.uniform(0, np.pi)), float(rng.uniform(5, 30)), float(rng.uniform(4, 18))
        k = 2 * np.pi / period
        img += (np.sin(xx * (np.cos(psi) * k) + yy * (np.sin(psi) * k)) * amp)[..., None]
    return img


def _paint(img: np.ndarray, region: Region, alpha: np.ndarray, colour: np.ndarray) -> None:
    patch = img[region]
    patch += alpha[..., None] * (colour - patch)


def _clutter(img: np.ndarray, rng: np.random.Generator, scale: float, n: int,
             on_top: Callable[[Region, np.ndarray], None] | None = None) -> None:
    """Unlabelled distractors: lines and polylines, hollow outlines, wobbly star-like blobs."""
    height, width = img.shape[:2]
    for _ in range(n):
        kind = rng.integers(0, 3) if on_top is None else 0
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        centre = rng.uniform((0, 0), (width, height))
        if kind == 0:
            pts = centre + rng.normal(0, max(width, height) * 0.3, (int(rng.integers(2, 4)), 2))
            stamp = _stamp(pts, height, width, line=int(rng.integers(1, 3)))
        elif kind == 1:
            pts = _rotate(_shape(int(rng.choice([0, 1])), rng.uniform(15, 70) * scale, rng),
                          rng.uniform(0, np.pi), centre)
            stamp = _stamp(np.vstack([pts, pts[:1]]), height, width, line=int(rng.integers(1, 3)))
        else:
            t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            r = rng.uniform(5, 25) * scale * (1 + rng.uniform(0.3, 0.5) * np.sin(rng.integers(5, 9) * t))
            stamp = _stamp(centre + np.column_stack([np.cos(t), np.sin(t)]) * r[:, None], height, width)
        if stamp is not None:
            _paint(img, stamp[0], stamp[1], colour)
            if on_top is not None:
                on_top(*stamp)


def visible_labels(owner: np.ndarray, classes: list[int], area: list[int],
                   regions: list[Region]) -> np.ndarray:
    """YOLO labels (n,5) from the map of which object each pixel shows: the box of each object's visible
    pixels, or no label when less than ``_MIN_VISIBLE`` of its ``area`` is left or the box is under 2 px."""
    height, width = owner.shape
    labels = []
    for k, cls in enumerate(classes):
        ys, xs = np.nonzero(owner[regions[k]] == k)
        if len(xs) == 0 or len(xs) < _MIN_VISIBLE * area[k]:
            continue
        x0, y0 = xs.min() + (regions[k][1].start or 0), ys.min() + (regions[k][0].start or 0)
        x1, y1 = x0 + xs.max() - xs.min() + 1, y0 + ys.max() - ys.min() + 1
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        labels.append([cls, (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width,
                       (y1 - y0) / height])
    return np.array(labels, dtype=np.float64).reshape(-1, 5)


def render_image(rng: np.random.Generator, imgsz: int) -> tuple[Image.Image, np.ndarray]:
    """One image (long side ``imgsz``; some are not square) and its labels (n,5) [cls, xc, yc, w, h]."""
    scale = imgsz / 256
    short = int(round(imgsz * rng.uniform(0.6, 0.9) / 8)) * 8
    height, width = (imgsz, imgsz) if rng.random() < 0.6 else (
        (short, imgsz) if rng.random() < 0.7 else (imgsz, short))
    img = _background(rng, height, width)
    _clutter(img, rng, scale, int(rng.integers(1, 7)))
    owner = np.full((height, width), -1, dtype=np.int32)  # which object each pixel shows, -1 none
    classes: list[int] = []
    area: list[int] = []
    regions: list[Region] = []
    for _ in range(int(rng.integers(1, 9))):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        size = float(np.exp(rng.uniform(np.log(10), np.log(120)))) * scale
        outline = _shape(cls, size, rng)
        angle = rng.uniform(0, 2 * np.pi)
        visible = np.bincount(owner.ravel() + 1, minlength=len(classes) + 1)[1:]
        for _try in range(10):  # look for a place that does not bury an earlier object
            centre = rng.uniform((size * 0.3, size * 0.3), (width - size * 0.3, height - size * 0.3))
            stamp = _stamp(_rotate(outline, angle, centre), height, width)
            if stamp is None:
                continue
            region, alpha = stamp
            covered = np.bincount(owner[region][alpha > 0.5] + 1, minlength=len(classes) + 1)[1:]
            if np.all(covered <= _MAX_COVER * visible):
                break
        else:
            continue
        solid = alpha > 0.5
        if solid.sum() < 4:
            continue
        local = img[region]
        colours = rng.uniform(0, 255, (8, 3)).astype(np.float32)
        # The first colour that stands out from what lies beneath, else the one that stands out most.
        contrast = np.linalg.norm(colours - local[solid].mean(axis=0), axis=1)
        good = contrast >= 90
        colour = colours[int(good.argmax()) if good.any() else int(contrast.argmax())]
        # A gentle shading across the object, as if lit from one side.
        yy, xx = np.ogrid[region[0], region[1]]
        theta = rng.uniform(0, 2 * np.pi)
        shade = ((xx - float(centre[0])) * np.cos(theta) + (yy - float(centre[1])) * np.sin(theta)) / size
        fill = colour + (shade * float(rng.uniform(0, 40))).astype(np.float32)[..., None]
        local += alpha[..., None] * (fill - local)
        owner[region][solid] = len(classes)
        classes.append(cls)
        area.append(int(solid.sum()))
        regions.append(region)

    def occlude(region: Region, alpha: np.ndarray) -> None:
        owner[region][alpha > 0.5] = -1

    _clutter(img, rng, scale, int(rng.integers(0, 3)), on_top=occlude)  # thin lines across objects
    # Uniform rather than Gaussian sensor noise: it looks the same after JPEG and costs a sixth.
    img += (rng.random(img.shape, dtype=np.float32) - 0.5) * float(rng.uniform(6, 20))
    out = visible_labels(owner, classes, area, regions)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8)), out
