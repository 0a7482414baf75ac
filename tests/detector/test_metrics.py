"""Tests of detector/metrics.py: hand-computed cases and agreement with pycocotools' COCOeval."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from detector.metrics import IOU_THRESHOLDS, box_iou, evaluate

# One matched ground truth of two, at precision 1: recall points 0.00..0.50 (51 of 101) score 1.
HALF_RECALL_AP = 51 / 101


def det(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def gt(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


# ----------------------------------------------------------------------------------------------- box_iou
def test_box_iou_hand_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 9]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=float)
    iou = box_iou(a, b)
    assert iou.shape == (3, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_allclose(iou[2], [0.0, 0.0, 0.0])  # zero-width box: empty, not NaN


def test_box_iou_empty_inputs():
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert box_iou(np.zeros((2, 4)), np.zeros((0, 4))).shape == (2, 0)


# ---------------------------------------------------------------------------------------- hand-made cases
def test_perfect_detector_scores_one():
    targets = [gt([0, 10, 10, 50, 50], [1, 60, 60, 90, 120]), gt([2, 0, 0, 30, 30])]
    dets = [det([10, 10, 50, 50, 0.9, 0], [60, 60, 90, 120, 0.8, 1]), det([0, 0, 30, 30, 0.7, 2])]
    out = evaluate(dets, targets, num_classes=3)
    assert out["map50"] == pytest.approx(1.0)
    assert out["map50_95"] == pytest.approx(1.0)
    assert out["precision"] == pytest.approx(1.0)
    assert out["recall"] == pytest.approx(1.0)
    assert list(out["classes"]) == [0, 1, 2]
    np.testing.assert_allclose(out["ap_per_class"], [1.0, 1.0, 1.0])


def test_all_false_positives_score_zero():
    targets = [gt([0, 10, 10, 50, 50])]
    dets = [det([100, 100, 140, 140, 0.9, 0], [10, 10, 50, 50, 0.8, 1])]  # wrong place, wrong class
    out = evaluate(dets, targets, num_classes=2)
    assert out["map50"] == 0.0 and out["map50_95"] == 0.0
    assert out["precision"] == 0.0 and out["recall"] == 0.0


def test_one_of_two_found_at_top_score():
    targets = [gt([0, 0, 0, 40, 40], [0, 100, 100, 140, 140])]
    out = evaluate([det([0, 0, 40, 40, 0.9, 0])], targets, num_classes=1)
    assert out["map50"] == pytest.approx(HALF_RECALL_AP)
    assert out["map50_95"] == pytest.approx(HALF_RECALL_AP)
    # A false positive ranked below the hit leaves the envelope at 1; ranked above, it halves precision.
    below = evaluate([det([0, 0, 40, 40, 0.9, 0], [200, 0, 240, 40, 0.5, 0])], targets, 1)
    above = evaluate([det([0, 0, 40, 40, 0.5, 0], [200, 0, 240, 40, 0.9, 0])], targets, 1)
    assert below["map50"] == pytest.approx(HALF_RECALL_AP)
    assert above["map50"] == pytest.approx(0.5 * HALF_RECALL_AP, abs=1e-12)


def test_map50_95_counts_thresholds_passed():
    # IoU 0.72 passes .50 .55 .60 .65 .70 and fails the other five thresholds.
    out = evaluate([det([0, 0, 100, 72, 0.9, 0])], [gt([0, 0, 0, 100, 100])], num_classes=1)
    assert (IOU_THRESHOLDS <= 0.72).sum() == 5
    assert out["map50"] == pytest.approx(1.0)
    assert out["map50_95"] == pytest.approx(0.5)


def test_duplicate_detection_is_false_positive():
    targets = [gt([0, 0, 0, 40, 40], [0, 100, 100, 140, 140])]
    # The duplicate of the first box outranks the second hit: P at full recall drops to 2/3.
    dets = [det([0, 0, 40, 40, 0.9, 0], [1, 1, 40, 40, 0.8, 0], [100, 100, 140, 140, 0.7, 0])]
    out = evaluate(dets, targets, num_classes=1)
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert out["map50"] == pytest.approx(expected)


def test_greedy_match_takes_highest_iou_ground_truth():
    # Two ground truths; the top detection overlaps both but the second more. It must take the second,
    # leaving the first for the lower-scored detection, so both are hits at IoU 0.5.
    targets = [gt([0, 0, 0, 100, 100], [0, 30, 0, 130, 100])]
    dets = [det([25, 0, 125, 100, 0.9, 0], [0, 0, 100, 100, 0.8, 0])]
    out = evaluate(dets, targets, num_classes=1)
    assert out["map50"] == pytest.approx(1.0)


def test_equal_iou_goes_to_later_ground_truth_like_cocoeval():
    # The top detection overlaps both ground truths with IoU exactly 0.6; COCOeval gives it the later
    # one, which leaves the first free for the second detection (IoU 0.9 with it, 0.4 with the later).
    targets = [gt([0, 0, 0, 10, 10], [0, 5, 0, 15, 10])]
    dets = [det([2.5, 0, 12.5, 10, 0.9, 0], [0, 0, 9, 10, 0.8, 0])]
    assert box_iou(dets[0][:1, :4], targets[0][:, 1:])[0].tolist() == [0.6, 0.6]
    out = evaluate(dets, targets, num_classes=1)
    assert out["map50"] == pytest.approx(1.0)
    pytest.importorskip("pycocotools")
    assert _cocoeval(dets, targets, 1)[0] == pytest.approx(1.0)


def test_class_without_ground_truth_is_excluded_and_missing_class_counts_zero():
    targets = [gt([0, 0, 0, 40, 40], [1, 50, 50, 90, 90])]
    base = evaluate([det([0, 0, 40, 40, 0.9, 0])], targets, num_classes=3)
    assert list(base["classes"]) == [0, 1]
    np.testing.assert_allclose(base["ap50_per_class"], [1.0, 0.0])  # class 1 has GT, no detections
    assert base["map50"] == pytest.approx(0.5)
    extra = evaluate([det([0, 0, 40, 40, 0.9, 0], [0, 0, 40, 40, 0.95, 2])], targets, num_classes=3)
    assert extra["map50"] == pytest.approx(0.5)  # class 2 has no ground truth anywhere


def test_precision_recall_at_best_mean_f1():
    # One class, two ground truths; hit 0.9, miss 0.8, hit 0.3. F1 is 0.67 above 0.8, 0.5 between,
    # and 0.8 at confidences up to 0.3 (P 2/3, R 1), which is the maximum.
    targets = [gt([0, 0, 0, 40, 40], [0, 100, 100, 140, 140])]
    dets = [det([0, 0, 40, 40, 0.9, 0], [200, 200, 240, 240, 0.8, 0], [100, 100, 140, 140, 0.3, 0])]
    out = evaluate(dets, targets, num_classes=1)
    assert out["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert out["recall"] == pytest.approx(1.0)
    assert out["conf"] <= 0.3


def test_no_ground_truth_anywhere_gives_zeros():
    out = evaluate([det([0, 0, 10, 10, 0.9, 0]), det()], [gt(), gt()], num_classes=2)
    assert (out["map50"], out["map50_95"], out["precision"], out["recall"]) == (0.0, 0.0, 0.0, 0.0)
    assert len(out["classes"]) == 0


def test_empty_arrays_of_any_shape_mean_no_boxes():
    out = evaluate([np.zeros(0), np.zeros((0, 6))], [gt([0, 0, 0, 9, 9]), np.zeros(0)], num_classes=1)
    assert out["map50"] == 0.0 and list(out["n_gt_per_class"]) == [1]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2 detection arrays for 1 target arrays"):
        evaluate([det(), det()], [gt()], num_classes=1)
    with pytest.raises(ValueError, match=r"detections\[0\]: expected an array of shape \(n, 6\)"):
        evaluate([np.zeros((2, 4))], [gt()], num_classes=1)
    with pytest.raises(ValueError, match=r"targets\[1\]: class 3.0 is not an integer in \[0, 2\)"):
        evaluate([det(), det()], [gt(), gt([3, 0, 0, 5, 5])], num_classes=2)
    with pytest.raises(ValueError, match=r"detections\[0\]: class 0.5 is not an integer"):
        evaluate([det([0, 0, 5, 5, 0.9, 0.5])], [gt()], num_classes=2)


# ----------------------------------------------------------------------------------- COCOeval as oracle
def _random_boxes(rng: np.random.Generator, n: int, size: float) -> np.ndarray:
    wh = rng.uniform(8, 120, (n, 2))
    xy = rng.uniform(0, size - wh)
    return np.column_stack([xy, xy + wh])


def _random_case(seed: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Detections and targets with every awkward case: duplicates, misses, empty images, tied scores.

    The last class has detections but no ground truth; in odd cases class 0 has ground truth but no
    detections.
    """
    rng = np.random.default_rng(seed)
    nc = int(rng.integers(3, 6))
    n_img = int(rng.integers(6, 16))
    tie_scores = seed % 3 == 0  # rounded scores make many ties across and within images
    dets, targets = [], []
    for _ in range(n_img):
        n_gt = int(rng.integers(0, 7)) if rng.random() > 0.2 else 0
        boxes = _random_boxes(rng, n_gt, 320)
        cls = rng.integers(0, nc - 1, n_gt)
        targets.append(np.column_stack([cls, boxes]) if n_gt else np.zeros((0, 5)))
        rows = []
        for b, c in zip(boxes, cls):
            for _ in range(rng.choice([0, 1, 1, 1, 2])):  # missed, found, or found twice
                wh = b[2:] - b[:2]
                jitter = rng.normal(0, 0.12, 4) * np.concatenate([wh, wh])
                label = c if rng.random() > 0.1 else rng.integers(0, nc)
                rows.append([*(b + jitter), rng.random(), label])
        for fp in _random_boxes(rng, int(rng.integers(0, 5)), 320):
            rows.append([*fp, rng.random() * 0.6, rng.integers(0, nc)])
        d = np.array(rows, dtype=np.float64).reshape(-1, 6)
        if rng.random() < 0.15:
            d = d[:0]  # an image with no detections
        if seed % 2:
            d = d[d[:, 5] != 0]  # class 0: ground truth, never detected
        if tie_scores:
            d[:, 4] = np.round(d[:, 4], 1)
        d[:, [0, 2]] = d[:, [0, 2]].clip(0, 320)
        d[:, [1, 3]] = d[:, [1, 3]].clip(0, 320)
        dets.append(d)
    return dets, targets, nc


def _cocoeval(dets: list[np.ndarray], targets: list[np.ndarray], nc: int,
              max_dets: int = 100) -> tuple[float, float]:
    """COCOeval's (mAP50, mAP50-95) for area 'all', reading at most ``max_dets`` detections per image."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, (d, t) in enumerate(zip(dets, targets)):
        images.append({"id": i + 1, "width": 320, "height": 320})
        for c, x1, y1, x2, y2 in t:
            # ids start at 1: COCOeval reads a match id of 0 as "unmatched"
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0})
        for x1, y1, x2, y2, s, c in d:
            results.append({"image_id": i + 1, "category_id": int(c) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations,
                           "categories": [{"id": c + 1, "name": str(c)} for c in range(nc)]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if max_dets == 100:
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            return float(ev.stats[1]), float(ev.stats[0])
        # summarize() reads stats[0] at maxDets 100 whatever the parameters say, so for larger caps
        # average the accumulated precision array the same way summarize() does.
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # T x R x K, area 'all', largest cap
    return float(precision[0][precision[0] > -1].mean()), float(precision[precision > -1].mean())


@pytest.mark.parametrize("seed", range(24))
def test_agrees_with_cocoeval(seed):
    pytest.importorskip("pycocotools")
    dets, targets, nc = _random_case(seed)
    assert sum(len(d) for d in dets) > 0 and sum(len(t) for t in targets) > 0
    # stats[0] is read at maxDets 100, so no image may hold more (evaluate() has no per-image cap).
    assert max(len(d) for d in dets) <= 100
    coco50, coco50_95 = _cocoeval(dets, targets, nc)
    out = evaluate(dets, targets, nc)
    assert 0.0 < coco50 < 1.0  # a case that exercises the ranking, not a trivial 0 or 1
    assert out["map50"] == pytest.approx(coco50, abs=0.002)
    assert out["map50_95"] == pytest.approx(coco50_95, abs=0.002)


def test_agrees_with_cocoeval_on_validation_sized_input():
    # 32 images x 300 detections (the validation cap), near-duplicates around every ground truth.
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(3)
    dets, targets = [], []
    for _ in range(32):
        g = _random_boxes(rng, 6, 640)
        targets.append(np.column_stack([rng.integers(0, 4, 6), g]))
        d = np.concatenate([g + rng.normal(0, 6, g.shape) for _ in range(8)] + [_random_boxes(rng, 252, 640)])
        d[:, 2:] = np.maximum(d[:, 2:], d[:, :2])  # jitter must not turn a box inside out
        dets.append(np.column_stack([d, rng.random(300), rng.integers(0, 4, 300)]))
    coco50, coco50_95 = _cocoeval(dets, targets, 4, max_dets=1000)
    out = evaluate(dets, targets, num_classes=4)
    assert 0.0 < coco50_95 < coco50 < 1.0
    assert out["map50"] == pytest.approx(coco50, abs=0.002)
    assert out["map50_95"] == pytest.approx(coco50_95, abs=0.002)
    assert 0.0 < out["precision"] <= 1.0 and 0.0 < out["recall"] <= 1.0
    assert out["ap50_per_class"].shape == (4,) and out["n_gt_per_class"].sum() == 32 * 6
