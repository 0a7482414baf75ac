"""YOLO txt labels: where an image's label file is, and its rows parsed and checked.

Labels live beside the images with the last ``/images/`` folder swapped for ``/labels/`` and a ``.txt``
suffix, one ``class xc yc w h`` row per object (or a polygon), normalised to the image. Every problem is a
``DataError`` naming the file and line; text files are read as Ultralytics reads them.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from detector.errors import DataError

LOGGER = logging.getLogger(__name__)
TOLERANCE = 1e-6  # label coordinates may overshoot [0, 1] by rounding this much


def text_lines(path: Path) -> list[str]:
    """The lines of a text file (a list of images, a label file) read as Ultralytics reads them (UTF-8,
    a byte-order mark allowed); a byte that is not UTF-8 is a ``DataError`` naming the file and line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None


def img2label_path(img: Path) -> Path:
    """``.../images/a/x.jpg`` -> ``.../labels/a/x.txt`` (the last ``images`` folder); beside it if none."""
    parts = list(Path(img).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_labels(path: Path, nc: int) -> np.ndarray:
    """Parse a YOLO label file into float32 ``(n, 5)`` ``[cls, xc, yc, w, h]``; a missing file is empty.

    Rows with an odd number of columns above 5 are polygons (``cls x1 y1 x2 y2 ...``, the segmentation
    format) and become their enclosing box. Any other problem raises ``DataError("file:line: ...")``.
    """
    path = Path(path)
    if not path.is_file():
        return np.zeros((0, 5), np.float32)
    rows = []
    for lineno, line in enumerate(text_lines(path), 1):
        cols = line.split()
        if not cols:
            continue
        where = f"{path}:{lineno}"
        if len(cols) != 5 and (len(cols) < 7 or len(cols) % 2 == 0):
            raise DataError(f"{where}: expected 5 columns 'class xc yc w h', got {len(cols)}")
        try:
            vals = [float(c) for c in cols]
        except ValueError:
            bad = next(c for c in cols if not _is_float(c))
            raise DataError(f"{where}: non-numeric value '{bad}'") from None
        if not all(math.isfinite(v) for v in vals):
            raise DataError(f"{where}: non-finite value in '{line.strip()}'")
        cls = vals[0]
        if cls != int(cls):
            raise DataError(f"{where}: class {cols[0]} is not an integer")
        if not 0 <= cls < nc:
            raise DataError(f"{where}: class {int(cls)} out of range 0..{nc - 1}")
        coords = vals[1:]
        if len(cols) == 5 and (coords[2] <= 0 or coords[3] <= 0):
            raise DataError(f"{where}: box width and height must be positive, got {cols[3]} {cols[4]}")
        if min(coords) < -TOLERANCE or max(coords) > 1 + TOLERANCE:
            raise DataError(f"{where}: coordinates must be normalised to [0, 1], got {' '.join(cols[1:])}")
        if len(cols) > 5:
            xs, ys = coords[0::2], coords[1::2]
            coords = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
            if coords[2] <= 0 or coords[3] <= 0:
                raise DataError(f"{where}: polygon encloses no area")
        rows.append([cls, *coords])
    labels = np.array(rows, dtype=np.float32).reshape(-1, 5)
    labels[:, 1:] = labels[:, 1:].clip(0, 1)
    unique = np.unique(labels, axis=0)
    if len(unique) < len(labels):
        LOGGER.warning("%s: %d duplicate label rows removed", path, len(labels) - len(unique))
        _, first = np.unique(labels, axis=0, return_index=True)
        labels = labels[np.sort(first)]
    return labels


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
