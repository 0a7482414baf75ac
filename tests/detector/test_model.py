"""Tests of detector/model.py: sizes, output shapes, decoding, bias priors, anchors, autocast."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detector.anchors import default_anchors
from detector.model import Model


def num_params(model: Model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def small_model() -> Model:
    torch.manual_seed(0)
    return Model(nc=3, size="n")


@pytest.mark.parametrize("size, expected", [("n", 1.9e6), ("s", 7.2e6), ("m", 21e6)])
def test_parameter_counts_at_80_classes(size: str, expected: float) -> None:
    count = num_params(Model(nc=80, size=size))
    assert abs(count - expected) / expected < 0.10, count


def test_sizes_are_ordered_and_classes_change_only_the_head() -> None:
    n80, n3 = Model(nc=80, size="n"), Model(nc=3, size="n")
    # 3 levels x 3 anchors x 77 fewer outputs, each with (channels + 1) parameters.
    head_in = sum(c.in_channels + 1 for c in n80.detect.m)
    assert num_params(n80) - num_params(n3) == 3 * 77 * head_in


@pytest.mark.parametrize("imgsz", [64, 96])
@pytest.mark.parametrize("na", [2, 3, 4])
def test_forward_shapes_train_and_eval(imgsz: int, na: int) -> None:
    torch.manual_seed(0)
    model = Model(nc=3, size="n", na=na)
    assert (model.na, model.nl, model.nc) == (na, 3, 3)
    x = torch.rand(2, 3, imgsz, imgsz)
    model.train()
    raw = model(x)
    expected = [(2, na, imgsz // s, imgsz // s, 8) for s in (8, 16, 32)]
    assert [tuple(r.shape) for r in raw] == expected
    model.eval()
    with torch.no_grad():
        pred, raw_eval = model(x)
    cells = sum((imgsz // s) ** 2 for s in (8, 16, 32))
    assert tuple(pred.shape) == (2, na * cells, 8)
    assert [tuple(r.shape) for r in raw_eval] == expected
    assert pred.dtype == torch.float32 and torch.isfinite(pred).all()
    assert (pred[..., 4:] >= 0).all() and (pred[..., 4:] <= 1).all()


def test_stride_and_default_anchors(small_model: Model) -> None:
    assert small_model.stride.tolist() == [8.0, 16.0, 32.0]
    assert small_model.detect.anchors.shape == (3, 3, 2)
    np.testing.assert_array_equal(small_model.detect.anchors.numpy(), default_anchors(3))
    assert small_model.names == ["0", "1", "2"]


def test_decode_of_zero_logits_is_cell_centre_and_anchor() -> None:
    model = Model(nc=2, size="n", na=2)
    detect = model.detect
    # sigmoid(0) = 0.5: xy = (0.5 + cell) * stride and wh = anchor exactly.
    raw = [torch.zeros(1, 2, 64 // s, 64 // s, 7) for s in (8, 16, 32)]
    pred = detect.decode(raw)
    assert pred.shape == (1, 2 * (64 + 16 + 4), 7)
    level0 = pred[0, : 2 * 64].view(2, 8, 8, 7)
    assert level0[1, 3, 5, :2].tolist() == [(5 + 0.5) * 8, (3 + 0.5) * 8]  # (x, y) of row 3, col 5
    assert torch.allclose(level0[1, 3, 5, 2:4], detect.anchors[0, 1])
    assert torch.allclose(pred[..., 4:], torch.full_like(pred[..., 4:], 0.5))
    last = pred[0, -1]  # level 2, anchor 1, cell (1, 1)
    assert last[:2].tolist() == [1.5 * 32, 1.5 * 32]
    assert torch.allclose(last[2:4], detect.anchors[2, 1])


def test_decode_extremes_span_offsets_and_anchor_scale() -> None:
    model = Model(nc=1, size="n", na=1)
    raw = [torch.full((1, 1, 64 // s, 64 // s, 6), 30.0) for s in (8, 16, 32)]
    pred = model.detect.decode(raw)
    # sigmoid -> 1: offset 1.5 cells, size 4x the anchor (the bounds of the parameterisation).
    assert torch.allclose(pred[0, 0, :2], torch.tensor([1.5 * 8, 1.5 * 8]))
    assert torch.allclose(pred[0, 0, 2:4], 4 * model.detect.anchors[0, 0])


def test_grid_cached_per_feature_size(small_model: Model) -> None:
    small_model.eval()
    small_model.detect._grids.clear()
    with torch.no_grad():
        small_model(torch.rand(1, 3, 64, 64))
        first = dict(small_model.detect._grids)
        small_model(torch.rand(1, 3, 64, 64))
        assert small_model.detect._grids == first and len(first) == 3
        small_model(torch.rand(1, 3, 96, 64))
    assert len(small_model.detect._grids) == 6
    assert all(small_model.detect._grids[k] is v for k, v in first.items())


def test_detect_bias_priors() -> None:
    torch.manual_seed(0)
    nc = 80
    detect = Model(nc=nc, size="n").detect
    for conv, s in zip(detect.m, (8, 16, 32)):
        b = conv.bias.detach().view(detect.na, 5 + nc)
        obj_prior = math.log(8 / (640 / s) ** 2)
        cls_prior = math.log(0.6 / (nc - 0.99))
        bound = 1 / math.sqrt(conv.in_channels)  # default init of a conv bias is uniform within this
        assert (b[:, 4] - obj_prior).abs().max() <= bound + 1e-6
        assert (b[:, 5:] - cls_prior).abs().max() <= bound + 1e-6
        assert (b[:, :4]).abs().max() <= bound + 1e-6


def test_set_anchors_changes_decoding_and_checks_shape() -> None:
    model = Model(nc=3, size="n")
    new = np.arange(1, 19, dtype=np.float32).reshape(3, 3, 2)
    model.set_anchors(new)
    np.testing.assert_array_equal(model.detect.anchors.numpy(), new)
    model.set_anchors(torch.from_numpy(new * 2))
    np.testing.assert_array_equal(model.detect.anchors.numpy(), new * 2)
    pred = model.detect.decode([torch.zeros(1, 3, 64 // s, 64 // s, 8) for s in (8, 16, 32)])
    assert pred[0, 0, 2:4].tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match=r"\(3, 3, 2\)"):
        model.set_anchors(np.ones((3, 2, 2)))
    assert "detect.anchors" in model.state_dict()


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="size"):
        Model(nc=3, size="q")
    with pytest.raises(ValueError, match="classes"):
        Model(nc=0)
    with pytest.raises(ValueError, match="shape"):
        Model(nc=3, anchors=np.ones((2, 3, 2)))


def test_every_parameter_gets_a_gradient() -> None:
    # DDP without find_unused_parameters needs every parameter in the graph of the loss.
    torch.manual_seed(0)
    model = Model(nc=2, size="n", na=2).train()
    out = model(torch.rand(2, 3, 64, 64))
    sum(o.float().mean() for o in out).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_forward_under_autocast(small_model: Model, dtype: torch.dtype) -> None:
    small_model.eval()
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=dtype):
        pred, raw = small_model(torch.rand(1, 3, 64, 64))
    assert raw[0].dtype == dtype
    assert pred.dtype == torch.float32 and torch.isfinite(pred).all()
    # Centres can reach at most 1.5 cells past the last cell of the coarsest level: (1 + 1.5) * 32.
    assert -0.5 * 8 <= float(pred[0, :, 0].min()) and float(pred[0, :, 0].max()) <= 80
