"""Tests of augmentation: each hyp is off at 0 and acts when non-zero, and boxes follow the pixels."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from detector.augment import (PAD, AugmentConfig, augment_hsv, augment_sample, box_candidates, copy_paste,
                              flip_lr, flip_ud, letterbox, mixup, mosaic4, random_perspective, warp_labels)

SIZE = 128
COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)], dtype=np.int32)


def _scene(w: int, h: int, boxes: list[tuple[int, int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """A grey image with solid rectangles; labels [cls, x1, y1, x2, y2] exactly on their edges."""
    img = np.full((h, w, 3), 90, dtype=np.uint8)
    for c, x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = COLOURS[c]
    return img, np.array(boxes, dtype=np.float32).reshape(-1, 5)


# Four images, long side SIZE (as they come out of the cache), one or two coloured boxes each.
SCENES = [
    _scene(128, 96, [(0, 10, 12, 50, 52), (1, 70, 30, 118, 70)]),
    _scene(96, 128, [(2, 20, 40, 70, 100)]),
    _scene(128, 128, [(3, 40, 40, 100, 80)]),
    _scene(128, 80, [(1, 8, 10, 60, 70), (2, 80, 20, 120, 60)]),
]


def _load(i: int) -> tuple[np.ndarray, np.ndarray]:
    img, lab = SCENES[i]
    img.flags.writeable = False  # the cache hands out read-only memmaps
    return img, lab.copy()


def _cfg(**kw: float) -> AugmentConfig:
    return replace(AugmentConfig.off(), **kw)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _colour_mask(img: np.ndarray, c: int) -> np.ndarray:
    return np.abs(img.astype(np.int32) - COLOURS[c]).max(-1) < 100


def _check_boxes_follow_pixels(img: np.ndarray, lab: np.ndarray, min_iou: float) -> None:
    """Every box tightly encloses a region of its colour (IoU > ``min_iou``, or just encloses it when
    ``min_iou`` is 0), and every coloured region has a box."""
    assert len(lab), "the sample lost all its boxes"
    for c in range(len(COLOURS)):
        mask = _colour_mask(img, c)
        covered = np.zeros_like(mask)
        for row in lab[lab[:, 0] == c]:
            x1, y1, x2, y2 = row[1:5]
            # The coloured pixels near this box; their bounding box must match the label.
            near = np.zeros_like(mask)
            near[max(int(y1) - 2, 0):int(np.ceil(y2)) + 2, max(int(x1) - 2, 0):int(np.ceil(x2)) + 2] = True
            ys, xs = np.nonzero(mask & near)
            assert len(xs), f"box {row} of class {c} covers none of its colour"
            region = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
            if min_iou:
                assert _iou(row[1:5], region) > min_iou, (row, region)
            else:  # rotated, maybe cut by the border: the box must enclose its pixels (1 px for resampling)
                inside = (region[:2] >= row[1:3] - 1).all() and (region[2:] <= row[3:5] + 1).all()
                assert inside, (row, region)
            covered |= near
        # Pixels of a box dropped for being mostly cut off may remain; nothing bigger may go unlabelled.
        assert (mask & ~covered).sum() <= 0.1 * 60 * 60, f"class {c}: coloured pixels without a box"


# -- each key off at 0, acting when non-zero ------------------------------------------------------------

def test_all_off_is_the_letterboxed_image() -> None:
    rng = np.random.default_rng(0)
    img, lab = augment_sample(_load, 1, 4, SIZE, AugmentConfig.off(), rng)
    expected, r, (left, top) = letterbox(SCENES[1][0], SIZE)
    np.testing.assert_array_equal(img, expected)
    np.testing.assert_allclose(lab[:, 1:], SCENES[1][1][:, 1:] * r + (left, top, left, top))


@pytest.mark.parametrize("key,value", [
    ("hsv_h", 0.5), ("hsv_s", 0.7), ("hsv_v", 0.4), ("degrees", 20.0), ("translate", 0.2),
    ("scale", 0.5), ("shear", 5.0), ("perspective", 0.001), ("flipud", 1.0), ("fliplr", 1.0),
    ("mosaic", 1.0), ("mixup", 1.0), ("copy_paste", 1.0),
])
def test_each_key_changes_the_sample_only_when_non_zero(key: str, value: float) -> None:
    base_img, base_lab = augment_sample(_load, 0, 4, SIZE, _cfg(), np.random.default_rng(3))
    img, lab = augment_sample(_load, 0, 4, SIZE, _cfg(**{key: value}), np.random.default_rng(3))
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    assert not np.array_equal(img, base_img)
    if key in ("mixup", "copy_paste"):
        assert len(lab) > len(base_lab)  # labels of the other image are added
    zero_img, zero_lab = augment_sample(_load, 0, 4, SIZE, _cfg(**{key: 0.0}), np.random.default_rng(3))
    np.testing.assert_array_equal(zero_img, base_img)
    np.testing.assert_array_equal(zero_lab, base_lab)


def test_hsv_gains() -> None:
    img = SCENES[0][0]
    assert augment_hsv(img, 0, 0, 0, np.random.default_rng(0)) is img
    darker = augment_hsv(img, 0, 0, 0.9, np.random.default_rng(1))
    gain = darker[0, 0, 0] / img[0, 0, 0]  # grey background scales with the value gain
    assert 0.1 <= gain <= 1.9 and abs(gain - 1) > 0.01
    assert np.abs(darker.astype(int) - darker[0, 0].astype(int))[60:, :8].max() <= 1  # background stays flat
    grey = np.full((8, 8, 3), 90, np.uint8)
    np.testing.assert_array_equal(augment_hsv(grey, 0.5, 0, 0, np.random.default_rng(2)), grey)  # no hue


def test_flips_exact() -> None:
    img, lab = SCENES[0]
    f, fl = flip_lr(img, lab)
    np.testing.assert_array_equal(f, img[:, ::-1])
    np.testing.assert_allclose(fl[0], [0, 128 - 50, 12, 128 - 10, 52])
    u, ul = flip_ud(img, lab)
    np.testing.assert_array_equal(u, img[::-1])
    np.testing.assert_allclose(ul[1], [1, 70, 96 - 70, 118, 96 - 30])


def test_letterbox_geometry() -> None:
    img = np.zeros((50, 100, 3), np.uint8)
    out, r, pad = letterbox(img, 64)
    assert out.shape == (64, 64, 3) and r == pytest.approx(0.64) and pad == (0, 16)
    assert (out[:16] == PAD).all() and (out[48:] == PAD).all() and (out[16:48] == 0).all()


def test_box_candidates() -> None:
    full = np.array([[0, 0, 40, 40], [0, 0, 40, 40], [0, 0, 40, 40], [0, 0, 400, 1.5]], np.float64)
    kept = np.array([[0, 0, 40, 40], [0, 0, 1.5, 40], [0, 0, 10, 10], [0, 0, 400, 3]], np.float64)
    # kept, too narrow, 6% of its area left, aspect 133
    assert box_candidates(full, kept).tolist() == [True, False, False, False]


def test_warp_clips_and_drops_boxes_outside() -> None:
    labels = np.array([[0, 10, 10, 30, 30], [1, 100, 100, 120, 120]], np.float32)
    shift = np.array([[1, 0, -20], [0, 1, -20], [0, 0, 1]], np.float64)  # move up-left by 20 px
    out = warp_labels(labels, shift, (128, 128), 64)
    np.testing.assert_allclose(out, [[0, 0, 0, 10, 10]])  # second box lands outside the 64 px output


def test_random_perspective_identity_and_scale() -> None:
    img, lab = _load(2)
    same_img, same_lab = random_perspective(img, lab, _cfg(), SIZE, np.random.default_rng(0))
    assert same_img is img and same_lab is lab
    out, out_lab = random_perspective(img, lab, _cfg(scale=0.5), SIZE, np.random.default_rng(0))
    s = (out_lab[0, 3] - out_lab[0, 1]) / (lab[0, 3] - lab[0, 1])
    assert 0.5 <= s <= 1.5 and abs(s - 1) > 0.01


def test_mosaic_places_quadrants() -> None:
    parts = [_load(i) for i in range(4)]
    canvas, lab = mosaic4(parts, SIZE, np.random.default_rng(0))
    assert canvas.shape == (2 * SIZE, 2 * SIZE, 3)
    assert len(lab) == sum(len(p[1]) for p in parts)
    lab[:, 1:] = lab[:, 1:].clip(0, 2 * SIZE)  # boxes may run past the canvas edge until the warp clips them
    _check_boxes_follow_pixels(canvas, lab, 0.9)


def test_mixup_blends_and_concatenates() -> None:
    a, la = _load(2)
    b, lb = letterbox(SCENES[0][0], SIZE)[0], SCENES[0][1] + (0, 0, 16, 0, 16)
    out, lab = mixup(a, la, b, lb, np.random.default_rng(0))
    assert len(lab) == len(la) + len(lb)
    np.testing.assert_array_equal(lab[len(la):], lb)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    assert ((out >= lo) & (out <= hi)).all()
    differ = a != b
    assert (out[differ] != a[differ]).mean() > 0.9 and (out[differ] != b[differ]).mean() > 0.9


def test_copy_paste_pastes_source_pixels_without_hiding_boxes() -> None:
    img, lab = letterbox(SCENES[2][0], SIZE)[0], SCENES[2][1].copy()
    src, src_lab = letterbox(SCENES[0][0], SIZE)[0], SCENES[0][1] + (0, 0, 16, 0, 16)
    out, out_lab = copy_paste(img, lab, src, src_lab, 1.0, np.random.default_rng(0))
    assert len(out_lab) > len(lab)
    for new in out_lab[len(lab):]:
        row = src_lab[src_lab[:, 0] == new[0]][0]
        x1, y1, x2, y2 = new[1:5].astype(int)
        sx1, sy1 = row[1:3].astype(int)
        np.testing.assert_array_equal(out[y1:y2, x1:x2], src[sy1:sy1 + y2 - y1, sx1:sx1 + x2 - x1])
    np.testing.assert_array_equal(copy_paste(img, lab, src, src_lab, 0.0, np.random.default_rng(0))[0], img)


# -- boxes follow the pixels ----------------------------------------------------------------------------

# Single-image transforms and the IoU a box keeps with its pixels (0: it only has to enclose them);
# test_batch_augment.py checks the batched path on the same cases.
TRANSFORM_CASES = [
    ("fliplr", _cfg(fliplr=1.0), 0.9),
    ("flipud", _cfg(flipud=1.0), 0.9),
    ("affine", _cfg(translate=0.2, scale=0.4), 0.8),
    ("shear", _cfg(shear=8.0, scale=0.2), 0.8),
    ("rotation", _cfg(degrees=35.0, scale=0.2), 0.0),
    ("perspective", _cfg(perspective=0.001), 0.8),
]


@pytest.mark.parametrize("name,cfg,min_iou", [
    *TRANSFORM_CASES,
    ("mosaic", _cfg(mosaic=1.0, translate=0.1, scale=0.3), 0.8),
    ("mosaic_rotation", _cfg(mosaic=1.0, degrees=25.0, scale=0.3, fliplr=0.5), 0.0),
])
def test_boxes_follow_pixels(name: str, cfg: AugmentConfig, min_iou: float) -> None:
    for seed in range(6):
        img, lab = augment_sample(_load, seed % 4, 4, SIZE, cfg, np.random.default_rng(seed))
        _check_boxes_follow_pixels(img, lab, min_iou)


def test_same_rng_same_sample() -> None:
    cfg = AugmentConfig()  # the YOLOv5 defaults: mosaic, hsv, translate, scale, fliplr
    a = augment_sample(_load, 1, 4, SIZE, cfg, np.random.default_rng(7))
    b = augment_sample(_load, 1, 4, SIZE, cfg, np.random.default_rng(7))
    c = augment_sample(_load, 1, 4, SIZE, cfg, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
