"""Tests of detector/anchors.py: default anchors, label sizes, best possible recall, AutoAnchor."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from detector.anchors import (best_possible_recall, check_anchors, default_anchors, fit_anchors, kmeans,
                              label_wh)
from detector.model import Model


def test_default_anchors_three_are_the_well_known_set() -> None:
    a = default_anchors(3)
    assert a.shape == (3, 3, 2) and a.dtype == np.float32
    assert a.reshape(-1).tolist() == [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119,
                                      116, 90, 156, 198, 373, 326]


@pytest.mark.parametrize("na", [1, 2, 4, 5, 10])
def test_default_anchors_other_counts_cover_the_same_range(na: int) -> None:
    a = default_anchors(na)
    assert a.shape == (3, na, 2)
    flat = a.reshape(-1, 2)
    area = flat.prod(1)
    assert (np.diff(area) > 0).all()  # sorted small -> large across levels, no duplicates
    np.testing.assert_allclose(flat[0], [10, 13], rtol=1e-5)
    np.testing.assert_allclose(flat[-1], [373, 326], rtol=1e-5)


def test_default_anchors_rejects_zero() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        default_anchors(0)


def test_label_wh_scales_by_letterbox() -> None:
    labels = [np.array([[0, 0.5, 0.5, 0.5, 0.5], [1, 0.2, 0.2, 0.1, 1.0]], np.float32),
              np.zeros((0, 5), np.float32),
              np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)]
    shapes = np.array([[200, 100], [50, 50], [100, 400]])
    wh = label_wh(labels, shapes, 64)
    # 200x100 -> long side 64: w scale 64, h scale 32; 100x400 -> w scale 16, h scale 64.
    np.testing.assert_allclose(wh, [[32, 16], [6.4, 32], [4, 32]], rtol=1e-6)
    assert label_wh([np.zeros((0, 5))], np.array([[10, 10]]), 64).shape == (0, 2)
    with pytest.raises(ValueError, match="2 label arrays but 1"):
        label_wh(labels[:2], shapes[:1], 64)


def test_best_possible_recall_known_value() -> None:
    anchors = np.array([[10, 10], [100, 50]], np.float32)
    wh = np.array([[10, 10],    # exact fit to anchor 0
                   [39, 10],    # w ratio 3.9 to anchor 0: within 4
                   [41, 10],    # 4.1 to anchor 0, 2.4/5 to anchor 1: out
                   [2, 10],     # 5 to anchor 0: out
                   [100, 100],  # 2 to anchor 1 (h), 10 to anchor 0: in
                   [30, 20]],   # 3 and 2 to anchor 0, 3.3 and 2.5 to anchor 1: in twice
                  np.float32)
    bpr, aat = best_possible_recall(wh, anchors, thr=4.0)
    assert bpr == pytest.approx(4 / 6)
    assert aat == pytest.approx(5 / 6)
    # A looser threshold admits the 4.1 and 5 cases too.
    assert best_possible_recall(wh, anchors, thr=5.5)[0] == pytest.approx(1.0)
    assert best_possible_recall(np.zeros((0, 2)), anchors, 4.0) == (0.0, 0.0)


def test_kmeans_recovers_separated_clusters() -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts = np.concatenate([c + 0.1 * rng.standard_normal((50, 2)) for c in centres])
    found = kmeans(pts, 3, np.random.default_rng(0))
    dist = np.linalg.norm(found[:, None] - centres[None], axis=2)
    assert sorted(dist.argmin(1).tolist()) == [0, 1, 2]  # one centroid per cluster
    assert dist.min(1).max() < 0.1


def test_kmeans_with_fewer_points_than_clusters() -> None:
    out = kmeans(np.array([[1.0, 2.0], [3.0, 4.0]]), 4, np.random.default_rng(0))
    assert out.shape == (4, 2) and np.isfinite(out).all()


def _far_labels(n: int, imgsz: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Square images with thin horizontal, thin vertical and tiny boxes: far from the defaults."""
    rng = np.random.default_rng(seed)
    kinds = np.array([[60, 4], [4, 60], [3, 3]], np.float64)
    labels = []
    for _ in range(n):
        wh = kinds[rng.integers(0, 3, 6)] * rng.uniform(0.85, 1.15, (6, 2)) / imgsz
        labels.append(np.column_stack([np.zeros(6), np.full((6, 2), 0.5), wh]).astype(np.float32))
    return labels, np.full((n, 2), 320)


def test_check_anchors_refits_far_labels(caplog: pytest.LogCaptureFixture) -> None:
    model = Model(nc=1, size="n")
    labels, shapes = _far_labels(40, 128)
    wh = label_wh(labels, shapes, 128)
    before = model.detect.anchors.clone()
    bpr_before = best_possible_recall(wh, before.numpy(), 4.0)[0]
    assert bpr_before < 0.5
    with caplog.at_level(logging.INFO, logger="detector.anchors"):
        assert check_anchors(model, labels, shapes, imgsz=128, thr=4.0, seed=0) is True
    after = model.detect.anchors.numpy().reshape(-1, 2)
    bpr_after = best_possible_recall(wh, after, 4.0)[0]
    assert bpr_after >= 0.98 and bpr_after > bpr_before
    assert (np.diff(after.prod(1)) >= 0).all()  # sorted by area, small anchors on the stride-8 level
    assert "best possible recall" in caplog.text and f"{bpr_after:.4f}" in caplog.text


def test_check_anchors_is_seeded() -> None:
    labels, shapes = _far_labels(20, 128, seed=3)
    a, b = Model(nc=1, size="n", na=2), Model(nc=1, size="n", na=2)
    assert check_anchors(a, labels, shapes, 128, 4.0, seed=5)
    assert check_anchors(b, labels, shapes, 128, 4.0, seed=5)
    assert torch.equal(a.detect.anchors, b.detect.anchors)


def test_check_anchors_leaves_good_anchors_alone() -> None:
    model = Model(nc=1, size="n")
    rng = np.random.default_rng(0)
    anchors = default_anchors(3).reshape(-1, 2)
    wh = anchors[rng.integers(0, 9, 200)] * rng.uniform(0.7, 1.3, (200, 2)) / 640
    labels = [np.column_stack([np.zeros(200), np.full((200, 2), 0.5), wh]).astype(np.float32)]
    before = model.detect.anchors.clone()
    assert check_anchors(model, labels, np.array([[640, 640]]), imgsz=640, thr=4.0) is False
    assert torch.equal(model.detect.anchors, before)


def test_check_anchors_without_labels_changes_nothing() -> None:
    model = Model(nc=1, size="n")
    before = model.detect.anchors.clone()
    assert check_anchors(model, [np.zeros((0, 5), np.float32)], np.array([[64, 64]]), 64, 4.0) is False
    assert torch.equal(model.detect.anchors, before)


def test_fit_anchors_improves_on_kmeans_alone() -> None:
    rng = np.random.default_rng(0)
    wh = np.exp(rng.uniform(np.log(4), np.log(120), (500, 2)))  # wide spread of sizes and shapes
    only_kmeans = fit_anchors(wh, 6, thr=3.0, seed=0, generations=0)
    evolved = fit_anchors(wh, 6, thr=3.0, seed=0, generations=300)
    assert evolved.shape == (6, 2) and (np.diff(evolved.prod(1)) >= 0).all()
    # Measured: BPR 0.866 from k-means alone, 1.0 after evolution.
    assert best_possible_recall(wh, only_kmeans, 3.0)[0] < 0.95
    assert best_possible_recall(wh, evolved, 3.0)[0] >= 0.98
    np.testing.assert_array_equal(evolved, fit_anchors(wh, 6, thr=3.0, seed=0, generations=300))
