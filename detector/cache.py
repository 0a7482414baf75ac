"""Disk cache of decoded, resized training images, built once per (data set content, imgsz) per machine.

Decoding JPEGs dominates data loading for small detectors, and evolution trains hundreds of trials on
the same images. So every image is decoded once, resized so that its long side is ``imgsz`` (aspect
kept), placed at the top-left of an ``imgsz x imgsz`` slot and stored in a single uint8 ``.npy`` array
of shape ``(N, imgsz, imgsz, 3)``. Later runs, trials and DataLoader workers open it as a read-only
memmap, so the operating system's page cache shares one copy between all processes of the machine.

Files in the cache folder, for a key ``K`` (hash of the sorted absolute paths, sizes, mtimes and imgsz):

- ``K.npy``         the images (written last: its presence marks a complete entry)
- ``K.shapes.npy``  int32 ``(N, 5)``: resized h, resized w, original w, original h, readable (0/1)
- ``K.json``        build statistics: images, decoded, seconds, unreadable files
- ``K.lock``        ``fcntl.flock`` target, so concurrent processes build an entry only once

The folder is the ``cache_dir`` argument, else ``$YOLO_EVOLVE_CACHE/images``, else
``~/.cache/yolo-evolve/images``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from detector.errors import DataError

try:  # Linux/macOS; elsewhere concurrent builds merely duplicate work
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOGGER = logging.getLogger(__name__)

ENV_VAR = "YOLO_EVOLVE_CACHE"
FORMAT_VERSION = 1  # bump when the stored layout changes, so old entries are never misread
IMG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# Images decoded by this process (tests and benchmarks read it to prove reuse).
DECODES = 0
_DECODES_LOCK = threading.Lock()


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: the argument as given, else ``$YOLO_EVOLVE_CACHE/images``, else
    ``~/.cache/yolo-evolve/images`` (the variable names the base of all of the project's caches)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "yolo-evolve"
    return base / "images"


def cache_key(files: Sequence[str | Path], imgsz: int) -> str:
    """Hash of the sorted absolute paths with their sizes and mtimes, and ``imgsz``.

    Editing, replacing or touching any image gives a new key, so a stale entry is never used.
    """
    digest = hashlib.sha256(f"v{FORMAT_VERSION} imgsz={imgsz}\n".encode())
    for path in sorted(str(Path(f).resolve()) for f in files):
        st = os.stat(path)
        digest.update(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def decode_resized(path: str | Path, imgsz: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image to RGB uint8 (h, w, 3) with its long side resized to ``imgsz``.

    Returns the array and the original (w, h) after EXIF orientation, which is how labels are drawn.
    Raises whatever PIL raises for an unreadable file.
    """
    global DECODES
    with Image.open(path) as im:
        rotated = _has_rotation(im)
        w0, h0 = (im.size[1], im.size[0]) if rotated else im.size
        r = imgsz / max(w0, h0)
        new = (max(1, round(w0 * r)), max(1, round(h0 * r)))
        if r < 1 and im.format == "JPEG":  # let the decoder downscale by 1/2..1/8 (much faster)
            im.draft("RGB", (new[1], new[0]) if rotated else new)
        im = ImageOps.exif_transpose(im).convert("RGB")
        if im.size != new:
            im = im.resize(new, Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    with _DECODES_LOCK:
        DECODES += 1
    return arr, (w0, h0)


def _has_rotation(im: Image.Image) -> bool:
    # EXIF orientations 5-8 swap width and height.
    try:
        return im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the image unreadable
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class ImageCache:
    """One cache entry: the images of a file set at one ``imgsz``, opened lazily as a read-only memmap.

    Images are stored in sorted-path order; ``index_of`` maps a file to its slot. The object pickles
    without the memmap, so DataLoader workers started with ``spawn`` reopen the file instead of copying it.
    """

    def __init__(self, files: Sequence[str | Path], imgsz: int, cache_dir: str | Path | None = None):
        if not files:
            raise DataError("no image files given to the image cache")
        self.imgsz = int(imgsz)
        self.files = sorted(str(Path(f).resolve()) for f in files)
        self._slot = {f: i for i, f in enumerate(self.files)}
        self.folder = default_cache_dir(cache_dir)
        self.key = cache_key(self.files, self.imgsz)
        self.path = self.folder / f"{self.key}.npy"
        self.shapes_path = self.folder / f"{self.key}.shapes.npy"
        self.stats_path = self.folder / f"{self.key}.json"
        self._images: np.ndarray | None = None
        self.built = False  # True when this process built the entry
        self._ensure_built()
        shapes = np.load(self.shapes_path)
        self.hw = shapes[:, 0:2].astype(np.int64)  # resized (h, w)
        self.orig_wh = shapes[:, 2:4].astype(np.int64)  # original (w, h)
        self.ok = shapes[:, 4].astype(bool)

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_images"] = None
        return state

    def index_of(self, file: str | Path) -> int:
        """Slot of ``file`` in the cache (KeyError for a file that is not part of it)."""
        return self._slot[str(Path(file).resolve())]

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        return self._images

    def image(self, slot: int) -> np.ndarray:
        """The resized image in ``slot`` as a read-only (h, w, 3) uint8 view; copy before modifying."""
        h, w = self.hw[slot]
        return self.images[slot, :h, :w]

    # -- building -------------------------------------------------------------------------------------

    def _complete(self) -> bool:
        return self.path.is_file() and self.shapes_path.is_file()

    def _ensure_built(self) -> None:
        if self._complete():
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"image cache folder {self.folder} cannot be created ({exc}); "
                            f"set {ENV_VAR} to a writable folder") from exc
        with _locked(self.folder / f"{self.key}.lock"):
            if self._complete():  # another process built it while this one waited for the lock
                return
            self._build()

    def _check_space(self, nbytes: int) -> None:
        free = shutil.disk_usage(self.folder).free
        if nbytes > free:
            raise DataError(f"image cache needs {nbytes / 1e9:.2f} GB in {self.folder} but only "
                            f"{free / 1e9:.2f} GB are free; set {ENV_VAR} to a larger disk or lower imgsz")

    def _build(self) -> None:
        n, s = len(self.files), self.imgsz
        self._check_space(n * s * s * 3)
        t0 = time.perf_counter()
        pid = os.getpid()
        tmp_images = self.folder / f"{self.key}.npy.tmp{pid}"
        tmp_shapes = self.folder / f"{self.key}.shapes.npy.tmp{pid}"
        shapes = np.zeros((n, 5), dtype=np.int32)
        bad: list[str] = []
        try:
            images = np.lib.format.open_memmap(tmp_images, mode="w+", dtype=np.uint8, shape=(n, s, s, 3))

            def work(slot: int) -> None:
                try:
                    arr, (w0, h0) = decode_resized(self.files[slot], s)
                except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
                    LOGGER.debug("unreadable image %s: %s", self.files[slot], exc)
                    bad.append(self.files[slot])
                    return
                h, w = arr.shape[:2]
                images[slot, :h, :w] = arr
                shapes[slot] = (h, w, w0, h0, 1)

            # PIL releases the GIL while decoding, so threads scale with cores.
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                list(pool.map(work, range(n)))
            images.flush()
            del images
            with open(tmp_shapes, "wb") as fh:
                np.save(fh, shapes)
            seconds = time.perf_counter() - t0
            stats = {"key": self.key, "imgsz": s, "images": n, "decoded": n - len(bad),
                     "unreadable": sorted(bad), "seconds": round(seconds, 3), "built_at": time.time(),
                     "pid": pid, "format": FORMAT_VERSION}
            _atomic_write_text(self.stats_path, json.dumps(stats, indent=1))
            os.replace(tmp_shapes, self.shapes_path)
            os.replace(tmp_images, self.path)  # last: its presence marks the entry complete
        finally:
            for tmp in (tmp_images, tmp_shapes):
                tmp.unlink(missing_ok=True)
        self.built = True
        LOGGER.info("cached %d images at %d px in %s (%.1fs)", n - len(bad), s, self.path, seconds)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def cache_stats(cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Build statistics of every entry in the cache folder (one dict per entry, see ``K.json``)."""
    folder = default_cache_dir(cache_dir)
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
