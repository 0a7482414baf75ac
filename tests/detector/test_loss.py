"""Tests of detector/loss.py: target assignment, CIoU, loss terms and gains, and that training reduces it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detector.hyp import DEFAULT_HYP
from detector.loss import DetectionLoss, FocalBCE, bbox_ciou
from detector.model import Model

IMGSZ = 64
TARGETS = torch.tensor([[0, 0, 0.30, 0.30, 0.30, 0.40],
                        [0, 1, 0.70, 0.60, 0.20, 0.20],
                        [1, 2, 0.50, 0.50, 0.60, 0.50]])


@pytest.fixture(scope="module")
def model() -> Model:
    torch.manual_seed(0)
    return Model(nc=3, size="n").train()


@pytest.fixture(scope="module")
def preds(model: Model) -> list[torch.Tensor]:
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.rand(2, 3, IMGSZ, IMGSZ))


def hyp(**changes: float) -> dict[str, float]:
    return {**DEFAULT_HYP, **changes}


def test_components_finite_nonnegative_and_total_scaled_by_batch(model: Model, preds: list) -> None:
    total, items = DetectionLoss(model, hyp())(preds, TARGETS)
    assert total.shape == () and items.shape == (3,)
    assert torch.isfinite(items).all() and (items > 0).all()
    assert not items.requires_grad
    assert total.item() == pytest.approx(items.sum().item() * 2, rel=1e-6)


def test_loss_drops_over_steps_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    net = Model(nc=3, size="n").train()
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    loss_fn = DetectionLoss(net, hyp())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        total, _ = loss_fn(net(x), TARGETS)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], (losses[0], losses[-1])


def test_no_targets_gives_objectness_only(model: Model, preds: list) -> None:
    total, items = DetectionLoss(model, hyp())(preds, torch.zeros((0, 6)))
    assert items[0] == 0 and items[2] == 0 and items[1] > 0
    assert torch.isfinite(total)


def test_single_class_has_no_class_loss() -> None:
    torch.manual_seed(0)
    net = Model(nc=1, size="n").train()
    with torch.no_grad():
        out = net(torch.rand(1, 3, IMGSZ, IMGSZ))
    one_class = torch.tensor([[0, 0, 0.30, 0.30, 0.30, 0.40], [0, 0, 0.70, 0.60, 0.20, 0.20]])
    _, items = DetectionLoss(net, hyp())(out, one_class)
    assert items[2] == 0 and items[0] > 0


@pytest.mark.parametrize("key, value", [("fl_gamma", 1.5), ("cls_pw", 2.0), ("obj_pw", 2.0)])
def test_bce_options_change_the_loss(model: Model, preds: list, key: str, value: float) -> None:
    _, base = DetectionLoss(model, hyp())(preds, TARGETS)
    _, changed = DetectionLoss(model, hyp(**{key: value}))(preds, TARGETS)
    assert changed[0] == base[0]  # box loss does not use the BCE options
    index = {"cls_pw": [2], "obj_pw": [1], "fl_gamma": [1, 2]}[key]
    for i in index:
        assert abs(changed[i].item() - base[i].item()) > 1e-4 * base[i].item()


def test_missing_hyp_keys_take_defaults(model: Model, preds: list) -> None:
    full = DetectionLoss(model, hyp())(preds, TARGETS)[1]
    torch.testing.assert_close(DetectionLoss(model, {})(preds, TARGETS)[1], full, rtol=0, atol=0)
    box_only = DetectionLoss(model, {"box": 0.1})(preds, TARGETS)[1]
    assert box_only[0].item() == pytest.approx(2 * full[0].item())


def test_iou_t_has_no_effect(model: Model, preds: list) -> None:
    a = DetectionLoss(model, hyp(iou_t=0.2))(preds, TARGETS)[1]
    b = DetectionLoss(model, hyp(iou_t=0.7))(preds, TARGETS)[1]
    assert torch.equal(a, b)


def test_gains_scale_each_term(model: Model, preds: list) -> None:
    _, base = DetectionLoss(model, hyp())(preds, TARGETS)
    _, doubled = DetectionLoss(model, hyp(box=0.1, obj=2.0, cls=1.0))(preds, TARGETS)
    torch.testing.assert_close(doubled, base * 2)
    # Objectness scales with (imgsz / 640)^2: by default imgsz is read from the input (64 here).
    _, at320 = DetectionLoss(model, hyp(), imgsz=320)(preds, TARGETS)
    assert at320[1].item() == pytest.approx(base[1].item() * (320 / 64) ** 2, rel=1e-5)
    # The class gain carries nc / 80 (3 classes here) and 3 / nl (1 here).
    assert DetectionLoss(model, hyp()).cls_gain == pytest.approx(0.5 * 3 / 80)


def test_label_smoothing_changes_class_loss_only(model: Model, preds: list) -> None:
    _, base = DetectionLoss(model, hyp())(preds, TARGETS)
    _, smooth = DetectionLoss(model, hyp(), label_smoothing=0.1)(preds, TARGETS)
    assert smooth[0] == base[0] and smooth[1] == base[1] and smooth[2] != base[2]


def _equal_anchor_model(px: float) -> Model:
    net = Model(nc=2, size="n").train()
    net.set_anchors(np.full((3, 3, 2), px, np.float32))
    return net


def _shapes(imgsz: int) -> list[torch.Tensor]:
    return [torch.zeros(1, 3, imgsz // s, imgsz // s, 7) for s in (8, 16, 32)]


def test_build_targets_centre_and_two_neighbours() -> None:
    net = _equal_anchor_model(10.0)
    t = torch.tensor([[0, 1, 0.30, 0.30, 20 / 64, 20 / 64]])  # 20x20 px: ratio 2 to every anchor
    levels = DetectionLoss(net, hyp()).build_targets(_shapes(64), t)
    assert [len(lv) for lv in levels] == [9, 9, 9]  # 3 anchors x (own cell + 2 neighbours)
    cells0 = {(int(j), int(i)) for j, i in zip(levels[0].gj, levels[0].gi)}
    assert cells0 == {(2, 2), (2, 1), (1, 2)}  # centre 2.4, 2.4 leans to the left and upper cells
    cells2 = {(int(j), int(i)) for j, i in zip(levels[2].gj, levels[2].gi)}
    assert cells2 == {(0, 0), (0, 1), (1, 0)}  # centre 0.6, 0.6 leans to the right and lower cells
    lv = levels[0]
    assert sorted(lv.anchor.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert (lv.cls == 1).all() and (lv.img == 0).all()
    # Offsets from the assigned cell lie in (-0.5, 1.5): reachable by 2 * sigmoid - 0.5.
    assert (lv.box[:, :2] > -0.5).all() and (lv.box[:, :2] < 1.5).all()
    torch.testing.assert_close(lv.box[:, 2:], torch.full((9, 2), 20 / 8))
    torch.testing.assert_close(lv.anchor_wh, torch.full((9, 2), 10 / 8))


def test_build_targets_respects_anchor_t() -> None:
    net = _equal_anchor_model(10.0)
    t = torch.tensor([[0, 0, 0.5, 0.5, 60 / 64, 2 / 64]])  # w ratio 6, h ratio 5 to every anchor
    strict = DetectionLoss(net, hyp(anchor_t=4.0)).build_targets(_shapes(64), t)
    assert [len(lv) for lv in strict] == [0, 0, 0]
    assert all(len(lv) > 0 for lv in DetectionLoss(net, hyp(anchor_t=7.0)).build_targets(_shapes(64), t))
    _, items = DetectionLoss(net, hyp(anchor_t=4.0))(_shapes(64), t)
    assert items[0] == 0 and items[2] == 0  # no positive: no box or class loss


def test_build_targets_reads_anchors_changed_after_construction() -> None:
    net = _equal_anchor_model(10.0)
    loss_fn = DetectionLoss(net, hyp())
    t = torch.tensor([[0, 0, 0.5, 0.5, 60 / 64, 2 / 64]])
    assert sum(len(lv) for lv in loss_fn.build_targets(_shapes(64), t)) == 0
    net.set_anchors(np.tile(np.array([60.0, 2.0], np.float32), (3, 3, 1)))
    assert sum(len(lv) for lv in loss_fn.build_targets(_shapes(64), t)) > 0


def test_ciou_known_values() -> None:
    a = torch.tensor([[5.0, 5.0, 2.0, 2.0]])
    assert bbox_ciou(a, a).item() == pytest.approx(1.0, abs=1e-6)
    # Same centre and aspect: no distance or aspect penalty, CIoU equals IoU (1 / 4).
    assert bbox_ciou(a, torch.tensor([[5.0, 5.0, 1.0, 1.0]])).item() == pytest.approx(0.25, abs=1e-6)
    # Disjoint boxes: IoU 0, centre distance 4 over an enclosing diagonal^2 of 6^2 + 2^2.
    far = bbox_ciou(a, torch.tensor([[9.0, 5.0, 2.0, 2.0]])).item()
    assert far == pytest.approx(-16 / 40, abs=1e-6)


def test_focal_bce_down_weights_easy_examples() -> None:
    bce = torch.nn.BCEWithLogitsLoss()
    focal = FocalBCE(torch.nn.BCEWithLogitsLoss(), gamma=2.0)
    easy, hard = torch.tensor([4.0]), torch.tensor([-4.0])
    one = torch.tensor([1.0])
    p = torch.sigmoid(easy)
    assert focal(easy, one).item() == pytest.approx(bce(easy, one).item() * 0.25 * (1 - p.item()) ** 2)
    assert focal(hard, one).item() / bce(hard, one).item() > focal(easy, one).item() / bce(easy, one).item()


def test_loss_is_fp32_under_autocast(model: Model) -> None:
    torch.manual_seed(2)
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    loss_fn = DetectionLoss(model, hyp())
    with torch.autocast(device_type="cpu", dtype=torch.float16):
        out = model(x)
        assert out[0].dtype == torch.float16
        total, items = loss_fn(out, TARGETS)
    assert total.dtype == torch.float32 and torch.isfinite(items).all()
    with torch.no_grad():
        ref = loss_fn(model(x), TARGETS)[1]
    torch.testing.assert_close(items, ref, rtol=0.05, atol=1e-3)
