"""Tests of detector/val.py: NMS, target conversion, validate() on a model with known outputs, and the
standalone validation of a checkpoint."""
import numpy as np
import pytest
import torch
from torch import nn

from detector.errors import DataError
from detector.val import (
    format_table,
    metrics_from_result,
    non_max_suppression,
    run_val,
    targets_to_pixels,
    validate,
)


def preds(rows, nc=2):
    """(1, N, 5 + nc) from rows of (xc, yc, w, h, obj, cls index, cls prob)."""
    out = torch.zeros(1, len(rows), 5 + nc)
    for i, (xc, yc, w, h, obj, c, p) in enumerate(rows):
        out[0, i, :5] = torch.tensor([xc, yc, w, h, obj])
        out[0, i, 5 + c] = p
    return out


def test_nms_removes_duplicates_of_a_class_but_keeps_other_classes():
    p = preds([(50, 50, 20, 20, 0.9, 0, 1.0), (51, 50, 20, 20, 0.8, 0, 1.0), (50, 50, 20, 20, 0.7, 1, 1.0)])
    (det,) = non_max_suppression(p, conf_thres=0.01, iou_thres=0.5)
    assert det.shape == (2, 6)
    assert det[:, 5].tolist() == [0.0, 1.0]
    assert det[0, :5].tolist() == pytest.approx([40, 40, 60, 60, 0.9])


def test_nms_score_is_objectness_times_class_and_threshold_applies():
    p = preds([(50, 50, 20, 20, 0.5, 0, 0.5), (150, 50, 20, 20, 0.5, 1, 0.01)])
    (det,) = non_max_suppression(p, conf_thres=0.1, iou_thres=0.5)
    assert det.shape == (1, 6)
    assert det[0, 4].item() == pytest.approx(0.25)


def test_nms_keeps_at_most_max_det_best_boxes():
    rows = [(10 + 20 * (i % 10), 10 + 20 * (i // 10), 8, 8, 0.01 + i / 100, 0, 1.0) for i in range(50)]
    (det,) = non_max_suppression(preds(rows), conf_thres=0.001, iou_thres=0.6, max_det=7)
    assert det.shape == (7, 6)
    assert det[:, 4].tolist() == pytest.approx([0.01 + i / 100 for i in range(49, 42, -1)])


def test_nms_multi_label_and_candidate_cap():
    p = torch.zeros(1, 1, 7)
    p[0, 0] = torch.tensor([50, 50, 20, 20, 1.0, 0.6, 0.4])
    (det,) = non_max_suppression(p, conf_thres=0.1)
    assert sorted(det[:, 5].tolist()) == [0.0, 1.0]  # one box, two classes above threshold
    (det,) = non_max_suppression(p, conf_thres=0.1, multi_label=False)
    assert det[:, 5].tolist() == [0.0]
    many = preds([(10 + 20 * i, 10, 8, 8, 0.5, 0, 1.0) for i in range(20)])
    (det,) = non_max_suppression(many, max_nms=5)
    assert len(det) == 5


def test_nms_single_class_uses_objectness_and_drops_non_finite():
    p = torch.tensor([[[50, 50, 20, 20, 0.4, 0.01], [90, 90, 10, 10, float("nan"), 1.0]]])
    (det,) = non_max_suppression(p, conf_thres=0.1)
    assert det.shape == (1, 6) and det[0, 4].item() == pytest.approx(0.4)


def test_targets_to_pixels_splits_per_image():
    t = torch.tensor([[0, 1, 0.5, 0.5, 0.5, 0.25], [1, 0, 0.25, 0.25, 0.1, 0.1]])
    out = targets_to_pixels(t, batch_size=3, width=64, height=128)
    assert [len(o) for o in out] == [1, 1, 0]
    assert out[0][0].tolist() == pytest.approx([1, 16, 48, 48, 80])
    assert out[1][0].tolist() == pytest.approx([0, 12.8, 25.6, 19.2, 38.4])


class Oracle(nn.Module):
    """Eval-mode model whose predictions are exactly the targets it is shown (through ``answers``)."""

    def __init__(self, answers, nc=2):
        super().__init__()
        self.nc = nc
        self.answers = answers
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        rows = self.answers.pop(0)
        out = torch.zeros(x.shape[0], max(len(r) for r in rows) + 1, 5 + self.nc)
        for b, r in enumerate(rows):
            for i, (cls, xc, yc, w, h) in enumerate(r):
                out[b, i, :5] = torch.tensor([xc, yc, w, h, 0.9])
                out[b, i, 5 + cls] = 1.0
        return out, [out]


def test_validate_perfect_predictions_give_map_1_and_mean_losses():
    imgs = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.25, 0.25], [1, 0, 0.25, 0.25, 0.125, 0.125]])
    answers = [[[(1, 32, 32, 16, 16)], [(0, 16, 16, 8, 8)]]] * 2
    loader = [(imgs, targets, ["a", "b"]), (imgs, targets, ["c", "d"])]
    losses = iter([torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 4.0, 5.0])])
    result = validate(Oracle(list(answers)), loader, loss_fn=lambda raw, t: (None, next(losses)))
    assert result["map50"] == pytest.approx(1.0) and result["map50_95"] == pytest.approx(1.0)
    assert result["precision"] == pytest.approx(1.0) and result["recall"] == pytest.approx(1.0)
    assert (result["box_loss"], result["obj_loss"], result["cls_loss"]) == pytest.approx((2.0, 3.0, 4.0))
    m = metrics_from_result(result, epochs=3, seconds=1.5)
    assert m.fitness == pytest.approx(1.0) and m.epochs == 3 and m.status == "ok"
    assert "mAP50-95" in format_table(m)


def test_validate_wrong_class_gives_map_0_and_no_loss_without_loss_fn():
    imgs = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.25, 0.25]])
    result = validate(Oracle([[[(0, 32, 32, 16, 16)]]]), [(imgs, targets, ["a"])])
    assert result["map50"] == 0.0 and result["box_loss"] == 0.0


def test_run_val_on_a_trained_checkpoint(trained_run):
    # last.pt holds the EMA weights that the run's final validation used: same data, same figures.
    m = run_val(trained_run.save_dir / "weights" / "last.pt", workers=0, batch=8)
    assert m.status == "ok" and m.epochs == 2
    assert m.box_loss > 0 and np.isfinite([m.box_loss, m.obj_loss, m.cls_loss]).all()
    assert m.map50 == pytest.approx(trained_run.metrics.map50, abs=1e-6)
    assert m.map50_95 == pytest.approx(trained_run.metrics.map50_95, abs=1e-6)
    assert m.box_loss == pytest.approx(trained_run.metrics.box_loss, rel=1e-4)
    assert m.cls_loss == pytest.approx(trained_run.metrics.cls_loss, rel=1e-4)


def test_run_val_missing_or_foreign_weights(tmp_path):
    with pytest.raises(DataError, match="missing.pt: weights file not found"):
        run_val(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pt: not a readable checkpoint"):
        run_val(junk)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="other.pt: not a detector checkpoint"):
        run_val(tmp_path / "other.pt")


def test_run_val_class_count_mismatch(trained_run, tmp_path):
    data = tmp_path / "one_class.yaml"
    root = trained_run.cfg.data.rsplit("/", 1)[0]
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: [only]\n")
    with pytest.raises(DataError, match="one_class.yaml: has 1 classes"):
        run_val(trained_run.save_dir / "weights" / "best.pt", data=str(data), workers=0)
