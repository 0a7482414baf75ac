"""Tests of the decoded-image disk cache: layout, reuse without decoding, keys, locking, errors."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from detector import cache
from detector.cache import ImageCache, cache_key, cache_stats, decode_resized, default_cache_dir
from detector.errors import DataError


def _images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        w, h = (80, 40) if i % 2 else (30, 60)
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = folder / f"im{i:03d}.png"
        Image.fromarray(arr).save(path)
        files.append(path)
    return files


def test_layout_shapes_and_pixels(tmp_path: Path) -> None:
    files = _images(tmp_path / "img", 4)
    c = ImageCache(files, 64, tmp_path / "cache")
    assert c.built
    assert c.images.shape == (4, 64, 64, 3) and c.images.dtype == np.uint8
    slot = c.index_of(files[1])  # 80x40 -> 64x32
    assert tuple(c.hw[slot]) == (32, 64)
    assert tuple(c.orig_wh[slot]) == (80, 40)
    assert c.image(slot).shape == (32, 64, 3)
    expected, wh = decode_resized(files[1], 64)
    np.testing.assert_array_equal(c.image(slot), expected)
    assert wh == (80, 40)
    assert tuple(c.hw[c.index_of(files[0])]) == (64, 32)  # 30x60 -> 32x64
    assert c.ok.all()
    assert not c.image(slot).flags.writeable  # shared read-only memmap


def test_second_open_decodes_nothing_and_gives_same_pixels(tmp_path: Path) -> None:
    files = _images(tmp_path / "img", 5)
    before = cache.DECODES
    first = ImageCache(files, 64, tmp_path / "cache")
    assert cache.DECODES - before == 5
    pixels = np.array(first.images)
    mid = cache.DECODES
    second = ImageCache(list(reversed(files)), 64, tmp_path / "cache")  # order does not matter
    assert cache.DECODES == mid
    assert not second.built
    np.testing.assert_array_equal(np.array(second.images), pixels)
    stats = cache_stats(tmp_path / "cache")
    assert len(stats) == 1 and stats[0]["decoded"] == 5 and stats[0]["images"] == 5
    assert stats[0]["imgsz"] == 64


def test_key_changes_with_content_and_imgsz(tmp_path: Path) -> None:
    files = _images(tmp_path / "img", 3)
    k = cache_key(files, 64)
    assert cache_key(list(reversed(files)), 64) == k
    assert cache_key(files, 96) != k
    assert cache_key(files[:2], 64) != k
    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache_key(files, 64) != k


def test_unreadable_images_are_recorded(tmp_path: Path) -> None:
    files = _images(tmp_path / "img", 3)
    broken = tmp_path / "img" / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    c = ImageCache([*files, broken], 64, tmp_path / "cache")
    assert not c.ok[c.index_of(broken)]
    assert c.ok.sum() == 3
    stats = json.loads(c.stats_path.read_text())
    assert stats["decoded"] == 3 and stats["unreadable"] == [str(broken.resolve())]


def test_cache_folder_from_argument_env_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_EVOLVE_CACHE", str(tmp_path / "env"))
    assert default_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert default_cache_dir() == tmp_path / "env" / "images"
    files = _images(tmp_path / "img", 2)
    c = ImageCache(files, 32)
    assert c.path.parent == tmp_path / "env" / "images" and c.path.is_file()
    monkeypatch.delenv("YOLO_EVOLVE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "yolo-evolve" / "images"


def test_pickle_drops_memmap(tmp_path: Path) -> None:
    files = _images(tmp_path / "img", 3)
    c = ImageCache(files, 64, tmp_path / "cache")
    _ = c.images
    data = pickle.dumps(c)
    assert len(data) < 10_000  # the 3 x 64 x 64 x 3 pixels are not copied
    clone = pickle.loads(data)
    np.testing.assert_array_equal(clone.image(2), c.image(2))


def test_not_enough_disk_space_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _images(tmp_path / "img", 2)
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: SimpleNamespace(total=100, used=0, free=100))
    with pytest.raises(DataError, match=r"image cache needs .* GB in .*cache.* YOLO_EVOLVE_CACHE"):
        ImageCache(files, 64, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_unwritable_cache_folder_is_a_clear_error(tmp_path: Path) -> None:
    files = _images(tmp_path / "img", 1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match=r"image cache folder .*file/sub cannot be created"):
        ImageCache(files, 64, blocker / "sub")


def _build_in_child(files: list[Path], folder: Path, barrier, queue) -> None:  # type: ignore[no-untyped-def]
    barrier.wait()
    ImageCache(files, 64, folder)
    queue.put(cache.DECODES)


def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    files = _images(tmp_path / "img", 24)
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(files, tmp_path / "cache", barrier, queue))
             for _ in range(2)]
    base = cache.DECODES  # forked children inherit this process's count
    for p in procs:
        p.start()
    counts = sorted(queue.get(timeout=60) - base for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert counts == [0, 24]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # images + shapes, no leftovers
    assert not list((tmp_path / "cache").glob("*tmp*"))
    assert [s["decoded"] for s in cache_stats(tmp_path / "cache")] == [24]
