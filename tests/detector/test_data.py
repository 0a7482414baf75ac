"""Tests of data YAML loading, label parsing and checks, the Dataset, collate and the DataLoader."""
from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

import detector.data as data_module
from detector import cache
from detector.augment import AugmentConfig
from detector.data import DataConfig, YoloDataset, build_dataloader, load_data_config, set_epoch
from detector.labels import img2label_path, read_labels
from detector.errors import DataError

NO_AUG = {f.name: 0.0 for f in fields(AugmentConfig)}


def _image(path: Path, w: int = 100, h: int = 50, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w, 3), 60, np.uint8)
    arr[h // 4: h // 2, w // 4: w // 2] = colour
    Image.fromarray(arr).save(path)
    return path


def _dataset(root: Path, n_train: int = 3, n_val: int = 2, labels: str = "0 0.375 0.375 0.25 0.25\n"):
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            _image(root / "images" / split / f"im{i}.jpg", 100 + 10 * i, 50)
            lab = root / "labels" / split / f"im{i}.txt"
            lab.parent.mkdir(parents=True, exist_ok=True)
            lab.write_text(labels)
    return root


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- the data YAML --------------------------------------------------------------------------------------

def test_yaml_names_list_relative_path(tmp_path: Path) -> None:
    _dataset(tmp_path / "sets" / "toy")
    cfg = load_data_config(_yaml(tmp_path / "toy.yaml", "path: sets/toy\ntrain: images/train\n"
                                 "val: images/val\nnames: [cat, dog]\n"))
    assert isinstance(cfg, DataConfig)
    assert cfg.root == tmp_path / "sets" / "toy"
    assert cfg.names == ["cat", "dog"] and cfg.nc == 2
    assert [p.name for p in cfg.train] == ["im0.jpg", "im1.jpg", "im2.jpg"]
    assert [p.name for p in cfg.val] == ["im0.jpg", "im1.jpg"]


def test_yaml_names_dict_nc_and_no_path(tmp_path: Path) -> None:
    _dataset(tmp_path)
    cfg = load_data_config(_yaml(tmp_path / "d.yaml", "train: images/train\nval: images/val\nnc: 3\n"
                                 "names: {0: a, 2: c, 1: b}\n"))
    assert cfg.names == ["a", "b", "c"] and cfg.nc == 3 and cfg.root == tmp_path
    cfg = load_data_config(_yaml(tmp_path / "e.yaml", f"path: {tmp_path}\ntrain: images/train\n"
                                 "val: images/val\nnc: 2\n"))
    assert cfg.names == ["class0", "class1"]


def test_yaml_txt_list_and_list_of_folders(tmp_path: Path) -> None:
    _dataset(tmp_path, n_train=3)
    _image(tmp_path / "extra" / "images" / "deep" / "x.png")
    (tmp_path / "train.txt").write_text("images/train/im2.jpg\n\n" + f"{tmp_path}/images/train/im0.jpg\n")
    cfg = load_data_config(_yaml(tmp_path / "d.yaml", f"path: {tmp_path}\ntrain: train.txt\n"
                                 "val: [images/val, extra/images]\nnames: [a]\n"))
    assert [p.name for p in cfg.train] == ["im2.jpg", "im0.jpg"]
    assert [p.name for p in cfg.val] == ["im0.jpg", "im1.jpg", "x.png"]


@pytest.mark.parametrize("text,match", [
    ("val: images/val\nnames: [a]\n", r"d\.yaml: missing key 'train'"),
    ("train: images/train\nnames: [a]\n", r"d\.yaml: missing key 'val'"),
    ("train: images/train\nval: images/val\n", r"d\.yaml: missing key 'names'"),
    ("train: images/train\nval: images/nope\nnames: [a]\n", r"d\.yaml: key 'val': folder or file not found"),
    ("path: nowhere\ntrain: images/train\nval: images/val\nnames: [a]\n", r"d\.yaml: key 'path': folder not"),
    ("train: images/train\nval: images/val\nnames: [a, b]\nnc: 3\n",
     r"d\.yaml: key 'nc' is 3 but 'names' has 2"),
    ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n",
     r"d\.yaml: key 'names': dict keys must be 0\.\.1"),
    ("train: images/train\nval: images/val\nnames: []\n", r"d\.yaml: key 'names' must be a non-empty list"),
    ("train: images/train\nval: images/val\nnc: two\n", r"d\.yaml: key 'nc' must be a positive integer"),
    ("train: images/train\nval: [3]\nnames: [a]\n", r"d\.yaml: key 'val': expected a path"),
    ("- just\n- a list\n", r"d\.yaml: expected a mapping"),
    ("train: [unclosed\n", r"d\.yaml: not valid YAML"),
])
def test_yaml_errors_name_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    _dataset(tmp_path)
    with pytest.raises(DataError, match=match):
        load_data_config(_yaml(tmp_path / "d.yaml", text))


def test_yaml_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.yaml: data YAML not found"):
        load_data_config(tmp_path / "missing.yaml")


def test_yaml_no_images(tmp_path: Path) -> None:
    _dataset(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt.bak").write_text("x")
    with pytest.raises(DataError, match=r"d\.yaml: key 'train': no images found in empty"):
        load_data_config(_yaml(tmp_path / "d.yaml", "train: empty\nval: images/val\nnames: [a]\n"))


def test_txt_list_missing_image_names_line(tmp_path: Path) -> None:
    _dataset(tmp_path)
    (tmp_path / "train.txt").write_text("images/train/im0.jpg\nimages/train/gone.jpg\n")
    with pytest.raises(DataError, match=r"train\.txt:2: image not found: .*gone\.jpg"):
        load_data_config(_yaml(tmp_path / "d.yaml", "train: train.txt\nval: images/val\nnames: [a]\n"))


def _symlinked_dataset(tmp_path: Path) -> Path:
    """A data set whose train folder is a link into a blob store and whose val images are each a link to an
    extensionless blob (the layouts of DVC, git-annex and shared storage); labels are ordinary files."""
    root = tmp_path / "ds"
    for i in range(2):
        _image(tmp_path / "store" / "train" / f"im{i}.jpg")
        blob = tmp_path / "store" / "blobs" / f"ab{i}cd"
        _image(blob.with_suffix(".png"), 90, 60).rename(blob)
        (root / "images" / "val").mkdir(parents=True, exist_ok=True)
        (root / "images" / "val" / f"v{i}.png").symlink_to(tmp_path / "store" / "blobs" / f"ab{i}cd")
        for split, name in (("train", f"im{i}"), ("val", f"v{i}")):
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{name}.txt").write_text(f"{i} 0.5 0.5 0.2 0.2\n")
    (root / "images" / "train").symlink_to(tmp_path / "store" / "train", target_is_directory=True)
    return _yaml(root / "d.yaml", "train: images/train\nval: images/val\nnames: [a, b]\n")


def test_symlinked_folders_and_images_keep_their_labels(tmp_path: Path) -> None:
    cfg = load_data_config(_symlinked_dataset(tmp_path))
    root = tmp_path / "ds"
    assert cfg.train == [root / "images" / "train" / "im0.jpg", root / "images" / "train" / "im1.jpg"]
    assert cfg.val == [root / "images" / "val" / "v0.png", root / "images" / "val" / "v1.png"]
    for files in (cfg.train, cfg.val):
        assert [read_labels(img2label_path(f), 2)[:, 0].tolist() for f in files] == [[0.0], [1.0]]
        dataset = YoloDataset(files, cfg.nc, 64, cache_dir=tmp_path / "cache")
        assert [lab[:, 0].tolist() for lab in dataset.labels] == [[0.0], [1.0]]
        assert dataset.shapes[0].tolist() in ([100, 50], [90, 60])  # decoded through the link


def test_symlinked_subfolders_are_searched_and_a_link_loop_once(tmp_path: Path) -> None:
    _symlinked_dataset(tmp_path)
    root = tmp_path / "ds"
    (tmp_path / "store" / "train" / "loop").symlink_to(tmp_path / "store", target_is_directory=True)
    cfg = load_data_config(_yaml(root / "e.yaml", "train: images\nval: images/val\nnames: [a, b]\n"))
    assert [str(p.relative_to(root)) for p in cfg.train] == [
        "images/train/im0.jpg", "images/train/im1.jpg", "images/val/v0.png", "images/val/v1.png"]


def test_txt_list_dot_lines_are_relative_to_the_list_others_to_the_root(tmp_path: Path) -> None:
    _dataset(tmp_path)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text("./../images/train/im1.jpg\nimages/train/im0.jpg\n")
    cfg = load_data_config(_yaml(tmp_path / "d.yaml",
                                 "train: lists/train.txt\nval: images/val\nnames: [a]\n"))
    assert cfg.train == [tmp_path / "lists" / ".." / "images" / "train" / "im1.jpg",
                         tmp_path / "images" / "train" / "im0.jpg"]


# -- labels ---------------------------------------------------------------------------------------------

def test_img2label_path_swaps_last_images_folder() -> None:
    assert img2label_path(Path("/d/images/x/images/tr/a.b.jpg")) == Path("/d/images/x/labels/tr/a.b.txt")
    assert img2label_path(Path("/d/pics/a.png")) == Path("/d/pics/a.txt")
    assert img2label_path(Path("/d/images.jpg")) == Path("/d/images.txt")


def test_read_labels_values_tolerance_polygon_duplicates(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("1 0.5 0.5 0.2 0.4\n\n0 1.0000005 0.5 0.1 0.1\n"
                 "2 0.1 0.1 0.3 0.1 0.3 0.5\n1 0.5 0.5 0.2 0.4\n")
    lab = read_labels(p, 3)
    assert lab.dtype == np.float32 and lab.shape == (3, 5)
    np.testing.assert_allclose(lab[0], [1, 0.5, 0.5, 0.2, 0.4])
    np.testing.assert_allclose(lab[1], [0, 1.0, 0.5, 0.1, 0.1])  # 5e-7 over 1 is rounding, clipped
    np.testing.assert_allclose(lab[2], [2, 0.2, 0.3, 0.2, 0.4], atol=1e-6)  # triangle -> enclosing box
    assert read_labels(tmp_path / "missing.txt", 3).shape == (0, 5)


@pytest.mark.parametrize("line,match", [
    ("0 0.5 0.5 0.2", r"a\.txt:2: expected 5 columns 'class xc yc w h', got 4"),
    ("0 0.5 0.5 0.2 0.2 0.3", r"a\.txt:2: expected 5 columns 'class xc yc w h', got 6"),
    ("0 0.5 abc 0.2 0.2", r"a\.txt:2: non-numeric value 'abc'"),
    ("7 0.5 0.5 0.2 0.2", r"a\.txt:2: class 7 out of range 0\.\.2"),
    ("-1 0.5 0.5 0.2 0.2", r"a\.txt:2: class -1 out of range 0\.\.2"),
    ("1.5 0.5 0.5 0.2 0.2", r"a\.txt:2: class 1\.5 is not an integer"),
    ("0 1.2 0.5 0.2 0.2", r"a\.txt:2: coordinates must be normalised to \[0, 1\], got 1\.2 0\.5 0\.2 0\.2"),
    ("0 0.5 -0.01 0.2 0.2", r"a\.txt:2: coordinates must be normalised"),
    ("0 0.5 0.5 0 0.2", r"a\.txt:2: box width and height must be positive, got 0 0\.2"),
    ("0 0.5 0.5 0.2 -0.1", r"a\.txt:2: box width and height must be positive"),
    ("0 0.5 0.5 nan 0.2", r"a\.txt:2: non-finite value"),
])
def test_label_errors_name_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    p = tmp_path / "a.txt"
    p.write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DataError, match=match):
        read_labels(p, 3)


def test_label_error_surfaces_from_dataset(tmp_path: Path) -> None:
    _dataset(tmp_path, labels="0 0.5 0.5 0.1 0.1\n4 0.5 0.5 0.1 0.1\n")
    cfg = load_data_config(_yaml(tmp_path / "d.yaml",
                                 "train: images/train\nval: images/val\nnames: [a, b]\n"))
    with pytest.raises(DataError, match=r"labels/train/im0\.txt:2: class 4 out of range 0\.\.1"):
        YoloDataset(cfg.train, cfg.nc, 64, cache_dir=tmp_path / "cache")


def test_files_that_are_not_utf8_name_the_file_and_line(tmp_path: Path) -> None:
    _dataset(tmp_path)
    label = tmp_path / "labels" / "train" / "im1.txt"
    label.write_bytes(b"0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1 \xe9t\xe9\n")
    with pytest.raises(DataError, match=r"im1\.txt:2: not UTF-8 text \(byte 0xe9\)$"):
        read_labels(label, 1)
    label.write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.1 0.1\n")  # a byte-order mark is UTF-8, as in Ultralytics
    assert read_labels(label, 1).shape == (1, 5)
    (tmp_path / "train.txt").write_bytes(b"images/train/im0.jpg\n\n\x89PNG\n")
    with pytest.raises(DataError, match=r"train\.txt:3: not UTF-8 text \(byte 0x89\)$"):
        load_data_config(_yaml(tmp_path / "d.yaml", "train: train.txt\nval: images/val\nnames: [a]\n"))
    (tmp_path / "e.yaml").write_bytes(b"train: images/train\nval: images/val\nnames: [caf\xe9]\n")
    with pytest.raises(DataError, match=r"e\.yaml: not valid YAML: .*#x00e9") as exc:
        load_data_config(tmp_path / "e.yaml")
    assert "\n" not in str(exc.value)


# -- the Dataset ----------------------------------------------------------------------------------------

def test_item_letterbox_geometry_shapes_dtypes(tmp_path: Path) -> None:
    img = _image(tmp_path / "images" / "a.png", 100, 50)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.375 0.375 0.25 0.25\n")
    ds = YoloDataset([img], nc=2, imgsz=64, cache_dir=tmp_path / "cache")
    assert len(ds) == 1 and ds.skipped == 0
    np.testing.assert_array_equal(ds.shapes, [[100, 50]])
    np.testing.assert_allclose(ds.labels[0], [[1, 0.375, 0.375, 0.25, 0.25]])
    x, t, path = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.uint8
    assert t.dtype == torch.float32 and path == str(img)
    # 100x50 -> 64x32 centred: 16 rows of grey 114 above and below.
    assert (x[:, :16] == 114).all() and (x[:, 48:] == 114).all() and (x[:, 16:48] != 114).all()
    # The red block (image pixels 25..50 x 12..25) is at x 16..32, y 16+7.7..16+16 in the output.
    np.testing.assert_allclose(t, [[0, 1, 0.375, (16 + 0.375 * 32) / 64, 0.25, 0.25 * 32 / 64]], atol=1e-6)
    assert x[0, 28, 24] > 150 and x[1, 28, 24] < 80  # red inside the box
    assert x[0, 30, 12] < 80  # background left of it


def test_augment_off_equals_validation_sample(tmp_path: Path) -> None:
    _dataset(tmp_path)
    cfg = load_data_config(_yaml(tmp_path / "d.yaml", "train: images/train\nval: images/val\nnames: [a]\n"))
    val = YoloDataset(cfg.train, 1, 64, cache_dir=tmp_path / "cache")
    aug = YoloDataset(cfg.train, 1, 64, hyp=NO_AUG, augment=True, cache_dir=tmp_path / "cache")
    for i in range(len(val)):
        assert torch.equal(val[i][0], aug[i][0]) and torch.allclose(val[i][1], aug[i][1])


def test_corrupt_image_skipped_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _dataset(tmp_path, n_train=3)
    (tmp_path / "images" / "train" / "bad.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    cfg = load_data_config(_yaml(tmp_path / "d.yaml", "train: images/train\nval: images/val\nnames: [a]\n"))
    assert len(cfg.train) == 4
    with caplog.at_level(logging.WARNING, logger="detector.data"):
        ds = YoloDataset(cfg.train, 1, 64, cache_dir=tmp_path / "cache")
    assert ds.skipped == 1 and len(ds) == 3 and len(ds.labels) == 3 and ds.shapes.shape == (3, 2)
    assert "bad.jpg" not in " ".join(str(f) for f in ds.files)
    assert "1 unreadable image(s) skipped" in caplog.text and "bad.jpg" in caplog.text
    again = YoloDataset(cfg.train, 1, 64, cache_dir=tmp_path / "cache")  # from the cache: same count
    assert again.skipped == 1


def test_all_images_unreadable(tmp_path: Path) -> None:
    bad = tmp_path / "images" / "x.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"nope")
    with pytest.raises(DataError, match=r"none of the 1 images could be read, e\.g\. .*x\.jpg"):
        YoloDataset([bad], 1, 64, cache_dir=tmp_path / "cache")


def test_second_dataset_decodes_nothing(tmp_path: Path) -> None:
    _dataset(tmp_path, n_train=3)
    cfg = load_data_config(_yaml(tmp_path / "d.yaml", "train: images/train\nval: images/val\nnames: [a]\n"))
    before = cache.DECODES
    first = YoloDataset(cfg.train, 1, 64, cache_dir=tmp_path / "cache")
    assert cache.DECODES - before == 3
    second = YoloDataset(cfg.train, 1, 64, hyp=NO_AUG, augment=True, cache_dir=tmp_path / "cache")
    assert cache.DECODES - before == 3
    assert all(torch.equal(first[i][0], second[i][0]) for i in range(3))


def test_collate_sets_batch_index(tmp_path: Path) -> None:
    _dataset(tmp_path, n_train=3, labels="0 0.3 0.3 0.2 0.2\n0 0.7 0.7 0.2 0.2\n")
    cfg = load_data_config(_yaml(tmp_path / "d.yaml", "train: images/train\nval: images/val\nnames: [a]\n"))
    ds = YoloDataset(cfg.train, 1, 64, cache_dir=tmp_path / "cache")
    imgs, targets, paths = YoloDataset.collate_fn([ds[0], ds[1], ds[2]])
    assert imgs.shape == (3, 3, 64, 64) and imgs.dtype == torch.uint8
    assert targets.shape == (6, 6) and targets[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert len(paths) == 3


def test_augmentation_seeded_by_seed_epoch_index(tmp_path: Path) -> None:
    _dataset(tmp_path, n_train=4)
    cfg = load_data_config(_yaml(tmp_path / "d.yaml", "train: images/train\nval: images/val\nnames: [a]\n"))
    ds = YoloDataset(cfg.train, 1, 64, hyp=None, augment=True, cache_dir=tmp_path / "cache", seed=1)
    a, b = ds[2], ds[2]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ds.set_epoch(1)
    assert ds.epoch == 1 and not torch.equal(ds[2][0], a[0])
    other = YoloDataset(cfg.train, 1, 64, hyp=None, augment=True, cache_dir=tmp_path / "cache", seed=2)
    assert not torch.equal(other[2][0], a[0])


def test_dataloader_workers_follow_set_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_module, "cpu_budget", lambda: 2)  # one CPU for training, one for the worker
    _dataset(tmp_path, n_train=4)
    cfg = load_data_config(_yaml(tmp_path / "d.yaml", "train: images/train\nval: images/val\nnames: [a]\n"))
    ds = YoloDataset(cfg.train, 1, 64, hyp=None, augment=True, cache_dir=tmp_path / "cache")
    loader, sampler = build_dataloader(ds, batch=2, workers=1, shuffle=False)
    assert sampler is None and loader.persistent_workers and not loader.pin_memory
    seen = []
    for epoch in (0, 1):
        set_epoch(loader, epoch)
        seen.append(torch.cat([imgs for imgs, _, _ in loader]))
        expected = torch.stack([ds[i][0] for i in range(len(ds))])  # same epoch, main process
        assert torch.equal(seen[-1], expected)
    assert not torch.equal(seen[0], seen[1])
    del loader  # stops the persistent worker


@pytest.mark.parametrize("budget,asked,expected", [(1, 2, 0), (2, 2, 1), (4, 2, 2), (8, 0, 0)])
def test_dataloader_workers_leave_a_cpu_to_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    budget: int, asked: int, expected: int) -> None:
    monkeypatch.setattr(data_module, "cpu_budget", lambda: budget)
    _dataset(tmp_path, n_train=2)
    cfg = load_data_config(_yaml(tmp_path / "d.yaml", "train: images/train\nval: images/val\nnames: [a]\n"))
    ds = YoloDataset(cfg.train, 1, 64, cache_dir=tmp_path / "cache")
    loader, _ = build_dataloader(ds, batch=2, workers=asked, shuffle=False)
    assert loader.num_workers == expected


def test_dataloader_shuffle_is_seeded(tmp_path: Path) -> None:
    _dataset(tmp_path, n_train=6)
    cfg = load_data_config(_yaml(tmp_path / "d.yaml", "train: images/train\nval: images/val\nnames: [a]\n"))
    ds = YoloDataset(cfg.train, 1, 64, cache_dir=tmp_path / "cache")

    def order(seed: int) -> list[str]:
        loader, _ = build_dataloader(ds, batch=6, workers=0, shuffle=True, seed=seed)
        return next(iter(loader))[2]

    assert order(3) == order(3)
    assert sorted(order(3)) == sorted(str(f) for f in ds.files)


def test_dataloader_distributed_sampler(tmp_path: Path) -> None:
    _dataset(tmp_path, n_train=5)
    cfg = load_data_config(_yaml(tmp_path / "d.yaml", "train: images/train\nval: images/val\nnames: [a]\n"))
    ds = YoloDataset(cfg.train, 1, 64, cache_dir=tmp_path / "cache")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader, sampler = build_dataloader(ds, batch=2, workers=0, shuffle=True, seed=0, distributed=True)
        assert isinstance(sampler, torch.utils.data.distributed.DistributedSampler)
        assert loader.sampler is sampler and sampler.num_replicas == 1 and sampler.rank == 0
        set_epoch(loader, 3)
        assert sampler.epoch == 3 and ds.epoch == 3
        assert sum(len(paths) for _, _, paths in loader) == 5
    finally:
        dist.destroy_process_group()


def test_resolve_data_reads_the_yaml_or_the_embedded_set(tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from detector import synthetic
    from detector.data import resolve_data

    cfg, embedded = resolve_data(str(tiny_data))
    assert not embedded and cfg.yaml_path == tiny_data.resolve() and (len(cfg.train), len(cfg.val)) == (16, 8)
    # None is the embedded set: rendered by make_synthetic (here the tiny one, to keep the test fast)
    monkeypatch.setattr(synthetic, "make_synthetic", lambda: tiny_data)
    cfg, embedded = resolve_data(None)
    assert embedded and cfg.nc == 4
    with pytest.raises(DataError, match="missing.yaml"):
        resolve_data(str(tiny_data.parent / "missing.yaml"))


@pytest.mark.parametrize("imgsz,embedded,expected", [(None, True, 256), (None, False, 640), (320, True, 320),
                                                     (96, False, 96)])
def test_default_imgsz(imgsz: int | None, embedded: bool, expected: int) -> None:
    from detector.data import default_imgsz

    assert default_imgsz(imgsz, embedded) == expected
