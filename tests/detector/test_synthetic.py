"""Tests of detector/synthetic.py: determinism, layout, label validity, caching, locking, bad arguments."""
from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from detector import synthetic
from detector.synthetic import CLASS_NAMES, MARKER, VERSION, make_synthetic, render_image

SMALL = {"n_train": 16, "n_val": 8, "imgsz": 128}


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.suffix in (".jpg", ".txt")}


def _labels(folder: Path, split: str) -> list[np.ndarray]:
    out = []
    for p in sorted((folder / "labels" / split).glob("*.txt")):
        out.append(np.loadtxt(p, ndmin=2).reshape(-1, 5))
    return out


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return make_synthetic(root=tmp_path_factory.mktemp("synth"), seed=0, **SMALL)


def test_yaml_layout_and_counts(small_set):
    folder = small_set.parent
    assert folder.name == f"{VERSION}-s0-16-8-128" and small_set.name == "data.yaml"
    data = yaml.safe_load(small_set.read_text())
    assert data == {"path": str(folder.resolve()), "train": "images/train", "val": "images/val",
                    "names": list(CLASS_NAMES)}
    for split, n in (("train", 16), ("val", 8)):
        images = sorted(p.stem for p in (folder / "images" / split).glob("*.jpg"))
        labels = sorted(p.stem for p in (folder / "labels" / split).glob("*.txt"))
        assert len(images) == n and images == labels
    assert (folder / MARKER).is_file()
    assert not list(folder.parent.glob(".*.tmp-*"))


def test_images_are_jpegs_with_long_side_imgsz(small_set):
    sizes = [Image.open(p).size for p in sorted(small_set.parent.glob("images/*/*.jpg"))]
    assert all(Image.open(p).format == "JPEG" for p in small_set.parent.glob("images/val/*.jpg"))
    assert all(max(w, h) == 128 and min(w, h) >= 64 for w, h in sizes)


def test_labels_are_valid_and_cover_every_class(small_set):
    for split in ("train", "val"):
        labels = np.concatenate(_labels(small_set.parent, split))
        cls, xc, yc, w, h = labels.T
        assert set(cls.tolist()) == set(range(len(CLASS_NAMES)))  # every class in every split
        assert np.all(cls == cls.astype(int))
        assert np.all((w > 0) & (h > 0) & (w <= 1) & (h <= 1))
        assert np.all((xc - w / 2 >= -1e-6) & (xc + w / 2 <= 1 + 1e-6))
        assert np.all((yc - h / 2 >= -1e-6) & (yc + h / 2 <= 1 + 1e-6))
    counts = [len(a) for a in _labels(small_set.parent, "train")]
    assert max(counts) <= 8 and np.mean(counts) >= 2


def test_same_seed_same_bytes_other_seed_differs(tmp_path, small_set):
    again = make_synthetic(root=tmp_path / "a", seed=0, **SMALL)
    assert again != small_set
    assert _digests(again.parent) == _digests(small_set.parent)
    other = make_synthetic(root=tmp_path / "b", seed=1, **SMALL)
    theirs, ours = _digests(other.parent), _digests(small_set.parent)
    assert theirs.keys() == ours.keys()
    assert sum(theirs[k] == ours[k] for k in ours) == 0


def test_second_call_reuses_the_set(small_set, monkeypatch):
    label = small_set.parent / "labels" / "train" / "000000.txt"
    before = (label.stat().st_mtime_ns, (small_set.parent / MARKER).stat().st_mtime_ns)

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a complete data set")

    monkeypatch.setattr(synthetic, "_build", fail)
    assert make_synthetic(root=small_set.parent.parent, seed=0, **SMALL) == small_set
    assert (label.stat().st_mtime_ns, (small_set.parent / MARKER).stat().st_mtime_ns) == before


def test_cache_env_variable_sets_base_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_EVOLVE_CACHE", str(tmp_path / "cache"))
    path = make_synthetic(n_train=2, n_val=1, imgsz=64, seed=3)
    assert path == tmp_path / "cache" / "synthetic" / f"{VERSION}-s3-2-1-64" / "data.yaml"
    assert path.is_file()


def test_concurrent_callers_build_once(tmp_path, monkeypatch):
    calls = []
    real_build = synthetic._build

    def slow_build(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.3)  # long enough for the other caller to reach the lock
        real_build(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_build", slow_build)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        make_synthetic(root=tmp_path, n_train=2, n_val=1, imgsz=64))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 2 and results[0] == results[1] and results[0].is_file()


def test_incomplete_folder_and_stale_temp_are_replaced(tmp_path):
    key = f"{VERSION}-s0-2-1-64"
    (tmp_path / key / "images").mkdir(parents=True)  # a set without its marker: interrupted
    (tmp_path / f".{key}.tmp-999999").mkdir()  # left by a build that died
    path = make_synthetic(root=tmp_path, n_train=2, n_val=1, imgsz=64)
    assert (path.parent / MARKER).is_file()
    assert len(list((path.parent / "images" / "train").glob("*.jpg"))) == 2
    assert not (tmp_path / f".{key}.tmp-999999").exists()


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(tmp, final, spec):
        (tmp / "images").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(synthetic, "_build", broken)
    with pytest.raises(OSError, match="disk full"):
        make_synthetic(root=tmp_path, n_train=2, n_val=1, imgsz=64)
    assert [p.name for p in tmp_path.iterdir()] == [f".{VERSION}-s0-2-1-64.lock"]


@pytest.mark.parametrize("kwargs, message", [
    ({"n_train": 0}, "n_train must be an integer >= 1, got 0"),
    ({"n_val": 2.5}, "n_val must be an integer >= 1, got 2.5"),
    ({"imgsz": 16}, "imgsz must be an integer >= 32, got 16"),
    ({"seed": -1}, "seed must be an integer >= 0, got -1"),
])
def test_bad_arguments_raise(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic(root=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_render_image_sizes_and_counts():
    sizes, n_labels = [], 0
    for i in range(20):
        image, labels = render_image(np.random.default_rng([7, i]), 256)
        w, h = image.size
        assert max(w, h) == 256 and image.mode == "RGB"
        assert labels.shape[1] == 5 and len(labels) <= 8
        n_labels += len(labels)
        sizes.extend(np.maximum(labels[:, 3] * w, labels[:, 4] * h).tolist())
        assert np.all(labels[:, 3] * w >= 2) and np.all(labels[:, 4] * h >= 2)
    assert n_labels >= 50
    assert 5 <= min(sizes) <= 20 and 90 <= max(sizes) <= 256  # about 10..120 px objects, some rotated


def test_visible_labels_box_the_visible_part_and_drop_mostly_hidden():
    owner = np.full((100, 200), -1, dtype=np.int32)
    owner[10:50, 10:90] = 0  # object 0: 40 x 80 px
    owner[60:90, 100:160] = 1  # object 1: 30 x 60 px
    owner[0:100, 50:100] = 2  # object 2 on top hides the right half of object 0
    owner[55:95, 105:190] = 3  # object 3 hides all of object 1 but a 5 px strip (1/12 < 0.4)
    regions = [np.s_[10:50, 10:90], np.s_[60:90, 100:160], np.s_[0:100, 50:100], np.s_[55:95, 105:190]]
    labels = synthetic.visible_labels(owner, [1, 2, 0, 3], [3200, 1800, 5000, 3800], regions)
    expected = [[1, 30 / 200, 30 / 100, 40 / 200, 40 / 100],  # only x 10..50 is left of object 0
                [0, 75 / 200, 50 / 100, 50 / 200, 100 / 100],
                [3, 147.5 / 200, 75 / 100, 85 / 200, 40 / 100]]
    np.testing.assert_allclose(labels, expected)


def test_data_yaml_loads_with_the_data_loader(small_set):
    from detector.data import load_data_config

    cfg = load_data_config(small_set)
    assert cfg.nc == 4 and cfg.names == list(CLASS_NAMES)
    assert len(cfg.train) == 16 and len(cfg.val) == 8
    assert cfg.root == small_set.parent.resolve()
