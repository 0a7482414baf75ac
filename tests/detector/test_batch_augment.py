"""Tests of batched tensor augmentation: each hyp is off at 0 and acts when non-zero, boxes follow the
pixels, the results match the per-image path's formats and geometry, and the data set / trainer use it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from detector import augment as np_aug
from detector.augment import AugmentConfig, letterbox
from detector.batch_augment import (
    BatchAugmenter,
    box_candidates,
    derangement,
    hsv_gains,
    normalised_targets,
    pixel_labels,
    warp_labels,
)
from detector.data import (
    AugmentingCollate,
    YoloDataset,
    build_dataloader,
    load_data_config,
    set_epoch,
)
from detector.hyp import DEFAULT_HYP
from tests.detector.test_augment import (
    SCENES,
    SIZE,
    TRANSFORM_CASES,
    _check_boxes_follow_pixels,
    _colour_mask,
)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The four scenes letterboxed to SIZE, as the DataLoader hands them over (images, targets, content)."""
    imgs, targets, content = [], [], []
    for i, (img, lab) in enumerate(SCENES):
        h, w = img.shape[:2]
        out, r, (left, top) = letterbox(img, SIZE)
        px = lab[:, 1:5] * r + (left, top, left, top)
        imgs.append(torch.from_numpy(out.transpose(2, 0, 1).copy()))
        rows = torch.zeros((len(lab), 6))
        rows[:, 0], rows[:, 1] = i, torch.from_numpy(lab[:, 0])
        rows[:, 2:4] = torch.from_numpy((px[:, :2] + px[:, 2:]) / 2 / SIZE)
        rows[:, 4:6] = torch.from_numpy((px[:, 2:] - px[:, :2]) / SIZE)
        targets.append(rows)
        content.append(torch.tensor([left, top, left + w, top + h]))
    return torch.stack(imgs), torch.cat(targets), torch.stack(content)


def _cfg(**kw: float) -> AugmentConfig:
    return replace(AugmentConfig.off(), **kw)


def _run(cfg: AugmentConfig, seed: int = 0, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    imgs, targets, content = _batch()
    aug = BatchAugmenter(cfg, SIZE)
    return aug(imgs.to(device), targets.to(device), content.to(device), aug.generator(device, seed))


def _samples(imgs: torch.Tensor, targets: torch.Tensor):
    """Per image: (h, w, 3) uint8 array and its labels [cls, x1, y1, x2, y2] in pixels."""
    px = pixel_labels(targets, SIZE).numpy()
    for i in range(len(imgs)):
        yield imgs[i].permute(1, 2, 0).numpy(), px[px[:, 0] == i][:, 1:]


# -- each key off at 0, acting when non-zero ------------------------------------------------------------

def test_all_off_returns_the_batch_unchanged() -> None:
    imgs, targets, _ = _batch()
    out, t = _run(AugmentConfig.off())
    assert out.dtype == torch.uint8 and torch.equal(out, imgs)
    torch.testing.assert_close(t, targets)


@pytest.mark.parametrize("key,value", [
    ("hsv_h", 0.5), ("hsv_s", 0.7), ("hsv_v", 0.4), ("degrees", 20.0), ("translate", 0.2),
    ("scale", 0.5), ("shear", 5.0), ("perspective", 0.001), ("flipud", 1.0), ("fliplr", 1.0),
    ("mosaic", 1.0), ("mixup", 1.0), ("copy_paste", 1.0),
])
def test_each_key_changes_the_batch_only_when_non_zero(key: str, value: float) -> None:
    base, base_t = _run(_cfg(), seed=3)
    out, t = _run(_cfg(**{key: value}), seed=3)
    assert out.shape == base.shape and out.dtype == torch.uint8
    assert not torch.equal(out, base)
    if key in ("mixup", "copy_paste", "mosaic"):
        assert len(t) > len(base_t)  # labels of other images join
    zero, zero_t = _run(_cfg(**{key: 0.0}), seed=3)
    assert torch.equal(zero, base) and torch.equal(zero_t, base_t)


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    cfg = replace(AugmentConfig(), mixup=0.5, copy_paste=0.5, degrees=10.0)
    a, b, c = _run(cfg, 7), _run(cfg, 7), _run(cfg, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_output_format_matches_the_collate_format() -> None:
    out, t = _run(replace(AugmentConfig(), mixup=0.5, copy_paste=0.5), seed=1)
    assert out.shape == (4, 3, SIZE, SIZE) and t.dtype == torch.float32 and t.shape[1] == 6
    assert (t[:, 0].diff() >= 0).all() and set(t[:, 0].tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert (t[:, 2:] >= 0).all() and (t[:, 2:] <= 1).all() and (t[:, 4:] > 0).all()
    assert (t[:, 1] == t[:, 1].round()).all()


# -- boxes follow the pixels ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,cfg,min_iou", [
    *TRANSFORM_CASES,
    # Scale up to 1.2 in mosaics: a box dropped with just under 10% of it visible then leaves fewer stray
    # pixels than the check tolerates (at 1.3 such a 60 x 40 box can leave 390 px).
    ("mosaic", _cfg(mosaic=1.0, translate=0.1, scale=0.2), 0.8),
    ("mosaic_rotation", _cfg(mosaic=1.0, degrees=25.0, scale=0.2, fliplr=0.5), 0.0),
    ("mosaic_half", _cfg(mosaic=0.5, scale=0.2, flipud=0.5), 0.8),
])
def test_boxes_follow_pixels(name: str, cfg: AugmentConfig, min_iou: float) -> None:
    for seed in range(3):
        for img, lab in _samples(*_run(cfg, seed)):
            if len(lab):
                _check_boxes_follow_pixels(img, lab, min_iou)


def test_copy_paste_pastes_source_pixels_without_hiding_boxes() -> None:
    imgs, targets, _ = _batch()
    out, t = _run(_cfg(copy_paste=1.0), seed=0)
    before = pixel_labels(targets, SIZE)
    after = pixel_labels(t, SIZE)
    assert len(after) > len(before)
    for img, lab in _samples(out, t):  # every box, pasted or not, shows its colour
        _check_boxes_follow_pixels(img, lab, 0.9)
    untouched = out == imgs
    assert untouched.float().mean() > 0.5  # rectangles were pasted, the rest is the input


def test_mixup_blends_a_partner_and_keeps_both_label_sets() -> None:
    imgs, targets, _ = _batch()
    out, t = _run(_cfg(mixup=1.0), seed=0)
    imgs, out = imgs.int(), out.int()
    assert len(t) == 2 * len(targets)
    for i in range(4):  # each output lies between its own image and one other image of the batch
        inside = [((out[i] >= torch.minimum(imgs[i], imgs[j]) - 1) &
                   (out[i] <= torch.maximum(imgs[i], imgs[j]) + 1)).all() for j in range(4) if j != i]
        assert any(inside)


def test_mosaic_shows_four_images() -> None:
    out, t = _run(_cfg(mosaic=1.0), seed=2)
    colours = [sum(_colour_mask(img, c).any() for c in range(4)) for img, _ in _samples(out, t)]
    assert max(colours) >= 2  # parts of several images in one sample


# -- the tensor helpers agree with the per-image ones ---------------------------------------------------

def test_warp_labels_and_candidates_match_the_numpy_path() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, (30, 2))
    lab = np.concatenate([rng.integers(0, 3, (30, 1)), xy, xy + rng.uniform(1, 60, (30, 2))], 1).astype(np.float32)
    m = np_aug.perspective_matrix((256, 256), 128, rng, 20, 0.2, 0.5, 5, 0.0005)
    expected = np_aug.warp_labels(lab, m, (256, 256), 128)
    labels = torch.cat([torch.zeros(30, 1), torch.from_numpy(lab)], 1)
    got = warp_labels(labels, torch.from_numpy(m).float().expand(30, 3, 3), torch.full((30,), 256), 128)
    np.testing.assert_allclose(got[:, 1:].numpy(), expected, atol=1e-2)
    full = rng.uniform(0, 50, (40, 4))
    kept = full * rng.uniform(0.2, 1.0, (40, 4))
    assert box_candidates(torch.from_numpy(full), torch.from_numpy(kept)).tolist() == \
        np_aug.box_candidates(full, kept).tolist()


def test_hsv_gains() -> None:
    img = torch.from_numpy(SCENES[0][0]).permute(2, 0, 1)[None].float()
    torch.testing.assert_close(hsv_gains(img, torch.ones(1, 3)), img, atol=1e-3, rtol=0)
    grey = torch.full((1, 3, 4, 4), 90.0)
    torch.testing.assert_close(hsv_gains(grey, torch.tensor([[1.5, 1.0, 1.0]])), grey)  # no hue in grey
    torch.testing.assert_close(hsv_gains(grey, torch.tensor([[1.0, 1.0, 0.5]])), grey / 2)
    red = torch.tensor([200.0, 50.0, 50.0]).view(1, 3, 1, 1)
    pale = hsv_gains(red, torch.tensor([[1.0, 0.5, 1.0]]))  # half the saturation, same value and hue
    torch.testing.assert_close(pale.flatten(), torch.tensor([200.0, 125.0, 125.0]))
    shifted = hsv_gains(torch.tensor([200.0, 100.0, 50.0]).view(1, 3, 1, 1), torch.tensor([[1.5, 1.0, 1.0]]))
    assert shifted.flatten()[1] > 100  # hue 20 deg -> 30 deg: more green, same max and min
    torch.testing.assert_close(shifted.flatten()[[0, 2]], torch.tensor([200.0, 50.0]))


def test_derangement_and_label_round_trip() -> None:
    g = BatchAugmenter.generator("cpu", 0)
    p = derangement(6, g, torch.device("cpu"))
    assert sorted(p.tolist()) == list(range(6)) and (p != torch.arange(6)).all()
    _, targets, _ = _batch()
    torch.testing.assert_close(normalised_targets(pixel_labels(targets, SIZE), SIZE), targets)


# -- data set, DataLoader and trainer -------------------------------------------------------------------

def test_dataset_hands_letterboxed_samples_and_collate_augments(tiny_data) -> None:
    cfg = load_data_config(tiny_data)
    plain = YoloDataset(cfg.train, cfg.nc, 64)
    ds = YoloDataset(cfg.train, cfg.nc, 64, hyp=DEFAULT_HYP, augment=True, batch_augment=True)
    img, t, _path, info = ds[3]
    assert torch.equal(img, plain[3][0]) and torch.equal(t, plain[3][1]) and info.tolist()[4] == 3
    x1, y1, x2, y2 = info.tolist()[:4]
    assert (img[:, :y1] == 114).all() and (img[:, y2:] == 114).all() and x2 - x1 > 0
    collate = AugmentingCollate(ds)
    a = collate([ds[i] for i in range(4)])
    b = collate([ds[i] for i in range(4)])
    assert len(a) == 3 and a[0].shape == (4, 3, 64, 64) and torch.equal(a[0], b[0])
    ds.set_epoch(1)
    assert not torch.equal(collate([ds[i] for i in range(4)])[0], a[0])


def test_loader_workers_augment_like_the_main_process(tiny_data) -> None:
    cfg = load_data_config(tiny_data)
    ds = YoloDataset(cfg.train, cfg.nc, 64, hyp=DEFAULT_HYP, augment=True, batch_augment=True)
    loader, _ = build_dataloader(ds, batch=4, workers=1, shuffle=False, augment_in_loader=True)
    set_epoch(loader, 2)
    first = next(iter(loader))
    expected = AugmentingCollate(ds)([ds[i] for i in range(4)])
    assert torch.equal(first[0], expected[0]) and torch.equal(first[1], expected[1])
    del loader


@pytest.mark.parametrize("workers", [0, 1])
def test_trainer_uses_the_batch_augmenter(tiny_cfg, monkeypatch, workers: int) -> None:
    from detector import batch_augment
    from detector.train import train

    calls = []
    original = batch_augment.BatchAugmenter.__call__

    def counting(self, imgs, targets, content, generator):
        calls.append(imgs.shape[0])
        return original(self, imgs, targets, content, generator)

    monkeypatch.setattr(batch_augment.BatchAugmenter, "__call__", counting)
    m = train(dict(DEFAULT_HYP), tiny_cfg(batch_augment=True, workers=workers, save_weights=False,
                                          max_images=8, val_every=0))
    assert m.status == "ok"
    if workers == 0:  # in the trainer; with workers the calls happen in the worker processes
        assert calls == [8]
