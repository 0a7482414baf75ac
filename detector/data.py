"""Data sets in the YOLOv5/Ultralytics format: the data YAML, YOLO txt labels, the Dataset and DataLoader.

A data YAML names ``train`` and ``val`` image sources (a folder searched recursively, a .txt list of
image paths, or a list of those) relative to ``path``, and the class ``names``. Labels live beside the
images with the last ``/images/`` folder swapped for ``/labels/`` and a ``.txt`` suffix, one
``class xc yc w h`` row per object, normalised to the image. Every problem in them is a ``DataError``
naming the file and line. Image paths are kept as listed, never resolved: a symlinked folder or image
(DVC, git-annex, shared storage) keeps its label, which is found from the listed path, as YOLOv5 and
Ultralytics find it. Decoded images come from the shared disk cache (``detector.cache``);
augmentation is ``detector.augment``.
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from detector.augment import AugmentConfig, augment_sample, letterbox
from detector.batch_augment import BatchAugmenter
from detector.cache import IMG_EXTENSIONS, ImageCache
from detector.errors import DataError
from detector.hyp import DEFAULT_HYP
from detector.labels import img2label_path, read_labels, text_lines
from detector.threads import cpu_budget

LOGGER = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """A resolved data YAML: the image files of each split and the class names."""

    yaml_path: Path
    root: Path
    train: list[Path]
    val: list[Path]
    names: list[str]
    nc: int


# -- the data YAML --------------------------------------------------------------------------------------

def load_data_config(path: str | Path) -> DataConfig:
    """Read a data YAML and list its images; ``DataError`` naming the file and key on bad input."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data YAML not found")
    try:
        data = yaml.safe_load(path.read_bytes())  # a non-UTF-8 byte is a YAMLError
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping with keys path, train, val, names")
    # The YAML's folder as listed, as Ultralytics takes it: a symlinked YAML is read where it is linked.
    here = path.absolute().parent
    root = here
    if data.get("path"):
        root = Path(str(data["path"])).expanduser()
        root = root if root.is_absolute() else (here / root)
        if not root.is_dir():
            raise DataError(f"{path}: key 'path': folder not found: {root}")
    names = _names(path, data)
    splits = {}
    for key in ("train", "val"):
        if not data.get(key):
            raise DataError(f"{path}: missing key '{key}'")
        splits[key] = _list_images(path, key, data[key], root)
    return DataConfig(yaml_path=path, root=root, train=splits["train"], val=splits["val"], names=names,
                      nc=len(names))


def _names(path: Path, data: dict[str, Any]) -> list[str]:
    names = data.get("names")
    nc = data.get("nc")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 1):
        raise DataError(f"{path}: key 'nc' must be a positive integer, got {nc!r}")
    if names is None:
        if nc is None:
            raise DataError(f"{path}: missing key 'names'")
        return [f"class{i}" for i in range(nc)]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{path}: key 'names': dict keys must be 0..{len(names) - 1}, "
                            f"got {sorted(names, key=str)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: key 'names' must be a non-empty list or a dict {{index: name}}")
    if nc is not None and nc != len(names):
        raise DataError(f"{path}: key 'nc' is {nc} but 'names' has {len(names)} entries")
    return [str(n) for n in names]


def _list_images(yaml_path: Path, key: str, value: Any, root: Path) -> list[Path]:
    sources = value if isinstance(value, list) else [value]
    files: list[Path] = []
    for src in sources:
        if not isinstance(src, (str, Path)):
            raise DataError(f"{yaml_path}: key '{key}': expected a path or a list of paths, got {src!r}")
        p = Path(src).expanduser()
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            files += _folder_images(p)
        elif p.is_file() and p.suffix.lower() == ".txt":
            files += _read_list(p, root)
        elif p.is_file() and p.suffix.lower() in IMG_EXTENSIONS:
            files.append(p)
        else:
            raise DataError(f"{yaml_path}: key '{key}': folder or file not found: {p}")
    if not files:
        raise DataError(f"{yaml_path}: key '{key}': no images found in {', '.join(map(str, sources))} "
                        f"(extensions: {', '.join(sorted(IMG_EXTENSIONS))})")
    # Listed paths, not resolved ones: two links to one blob are two images with two label files.
    return list(dict.fromkeys(files))


def _folder_images(folder: Path) -> list[Path]:
    """The images under ``folder``, sorted, through symlinked subfolders too, each path as listed.

    ``Path.rglob`` does not enter a symlinked subfolder; a link back to a folder above it is entered once.
    """
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        above = {os.path.realpath(p) for p in here.parents if p == folder or folder in p.parents}
        if os.path.realpath(here) in above:
            dirnames[:] = []  # a symlink loop: this folder is one of its own ancestors
            continue
        out += [here / n for n in filenames if Path(n).suffix.lower() in IMG_EXTENSIONS]
    return sorted(f for f in out if f.is_file())


def _read_list(txt: Path, root: Path) -> list[Path]:
    # A .txt listing one image path a line. A line starting with ./ is relative to the list's own folder,
    # as YOLOv5 and Ultralytics read it; other relative lines, which they take from the working folder (no
    # trial shares the user's), are taken from the data set root.
    out = []
    for lineno, line in enumerate(text_lines(txt), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        p = p if p.is_absolute() else (txt.parent if line.startswith("./") else root) / p
        if not p.is_file():
            raise DataError(f"{txt}:{lineno}: image not found: {p}")
        if p.suffix.lower() in IMG_EXTENSIONS:
            out.append(p)
    return out


# -- the Dataset ----------------------------------------------------------------------------------------

class YoloDataset(Dataset):
    """Images and labels of one split, as square ``imgsz`` samples.

    Without ``augment`` a sample is the letterboxed image (grey 114 padding). With ``augment`` it is
    built by ``detector.augment.augment_sample`` from the hyps, with a random generator seeded by
    ``(seed, epoch, index)``: reproducible, different every epoch. ``set_epoch`` reaches DataLoader
    workers, persistent ones included, through a shared-memory tensor.

    With ``augment`` and ``batch_augment`` a sample is the letterboxed image plus a fourth item, int64
    ``[x1, y1, x2, y2, index]`` (where the picture sits in the square, and its index), and augmentation
    is left to a ``detector.batch_augment.BatchAugmenter`` applied to whole batches (``self.augmenter``).
    """

    def __init__(self, files: Sequence[Path], nc: int, imgsz: int, hyp: dict[str, float] | None = None,
                 augment: bool = False, cache_dir: Path | None = None, seed: int = 0,
                 batch_augment: bool = False):
        if not files:
            raise DataError("no images given to the data set")
        self.nc, self.imgsz, self.augment, self.seed = int(nc), int(imgsz), bool(augment), int(seed)
        self.aug = AugmentConfig.from_hyp({**DEFAULT_HYP, **(hyp or {})})
        self.batch_augment = self.augment and bool(batch_augment)
        self.augmenter = BatchAugmenter(self.aug, self.imgsz) if self.batch_augment else None
        # Labels first: a label error should stop the run before minutes of decoding.
        all_labels = [read_labels(img2label_path(Path(f)), self.nc) for f in files]
        self.cache = ImageCache(files, self.imgsz, cache_dir)
        slots = np.array([self.cache.index_of(f) for f in files], dtype=np.int64)
        ok = self.cache.ok[slots]
        bad = [str(f) for f, good in zip(files, ok) if not good]
        self.skipped = len(bad)
        if bad:
            LOGGER.warning("%d unreadable image(s) skipped, e.g. %s", len(bad), ", ".join(bad[:3]))
        if not ok.any():
            raise DataError(f"none of the {len(files)} images could be read, e.g. {bad[0]}")
        self.files = [Path(f) for f, good in zip(files, ok) if good]
        self.labels: list[np.ndarray] = [lab for lab, good in zip(all_labels, ok) if good]
        self._slots = slots[ok]
        self.shapes = self.cache.orig_wh[self._slots].copy()  # (N, 2) original (w, h)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.files)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch that seeds augmentation (seen by every worker from the next iteration on)."""
        self._epoch[0] = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, int(index)))

    def load_image(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index`` resized to long side ``imgsz`` (read-only) and labels [cls, x1, y1, x2, y2] px."""
        img = self.cache.image(int(self._slots[index]))
        h, w = img.shape[:2]
        lab = self.labels[index]
        out = np.empty((len(lab), 5), np.float32)
        out[:, 0] = lab[:, 0]
        out[:, 1] = (lab[:, 1] - lab[:, 3] / 2) * w
        out[:, 2] = (lab[:, 2] - lab[:, 4] / 2) * h
        out[:, 3] = (lab[:, 1] + lab[:, 3] / 2) * w
        out[:, 4] = (lab[:, 2] + lab[:, 4] / 2) * h
        return img, out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        s = self.imgsz
        info = None
        if self.augment and not self.batch_augment:
            img, lab = augment_sample(self.load_image, index, len(self), s, self.aug, self.rng(index))
        else:
            img, lab = self.load_image(index)
            h, w = img.shape[:2]
            img, r, (left, top) = letterbox(img, s)
            lab[:, 1:5] = lab[:, 1:5] * r + (left, top, left, top)
            if self.batch_augment:
                nw, nh = max(1, round(w * r)), max(1, round(h * r))
                info = torch.tensor([left, top, left + nw, top + nh, index], dtype=torch.int64)
        targets = torch.zeros((len(lab), 6), dtype=torch.float32)
        if len(lab):
            xyxy = lab[:, 1:5]
            targets[:, 1] = torch.from_numpy(lab[:, 0])
            targets[:, 2] = torch.from_numpy((xyxy[:, 0] + xyxy[:, 2]) / 2 / s)
            targets[:, 3] = torch.from_numpy((xyxy[:, 1] + xyxy[:, 3]) / 2 / s)
            targets[:, 4] = torch.from_numpy((xyxy[:, 2] - xyxy[:, 0]) / s)
            targets[:, 5] = torch.from_numpy((xyxy[:, 3] - xyxy[:, 1]) / s)
        chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        if info is not None:
            return chw, targets, str(self.files[index]), info
        return chw, targets, str(self.files[index])

    @staticmethod
    def collate_fn(batch: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        """Stack images; concatenate targets with column 0 set to the image's index in the batch.

        Samples of a ``batch_augment`` data set give a fourth item, stacked into ``(b, 5)``.
        """
        imgs, targets, paths, *info = zip(*batch)
        for i, t in enumerate(targets):
            t[:, 0] = i
        out = (torch.stack(imgs, 0), torch.cat(targets, 0), list(paths))
        return (*out, torch.stack(info[0], 0)) if info else out

    def augment_batch(self, imgs: torch.Tensor, targets: torch.Tensor, info: torch.Tensor,
                      *keys: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply ``self.augmenter`` to a collated batch on its device; the generator is seeded by the data
        set's seed and epoch, ``keys`` (e.g. the rank) and the batch's sample indices."""
        assert self.augmenter is not None, "augment_batch needs a data set built with batch_augment=True"
        info_cpu = info.cpu()
        g = self.augmenter.generator(imgs.device, self.seed, self.epoch, *keys, *info_cpu[:, 4].tolist())
        return self.augmenter(imgs, targets, info[:, :4].to(imgs.device), g)


class AugmentingCollate:
    """A ``collate_fn`` that collates and then runs the batch augmenter, on CPU in the DataLoader's worker
    processes, so batches come out in the plain ``(images, targets, paths)`` format."""

    def __init__(self, dataset: YoloDataset):
        self.dataset = dataset

    def __call__(self, batch: list[tuple[Any, ...]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        imgs, targets, paths, info = YoloDataset.collate_fn(batch)
        imgs, targets = self.dataset.augment_batch(imgs, targets, info)
        return imgs, targets, paths


# -- the DataLoader -------------------------------------------------------------------------------------

def _seed_worker(worker_id: int) -> None:
    # Samples are seeded per index; this only tames any stray global randomness in workers.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_dataloader(dataset: Dataset, batch: int, workers: int, shuffle: bool, seed: int = 0,
                     distributed: bool = False, augment_in_loader: bool = False
                     ) -> tuple[DataLoader, Sampler | None]:
    """A DataLoader with ``collate_fn``, seeded shuffling and workers, and a ``DistributedSampler``
    (rank and world size from ``torch.distributed``) when ``distributed``. ``batch`` is per process.

    ``augment_in_loader`` (a ``batch_augment`` data set): batches are augmented on CPU by the loader's
    collate (``AugmentingCollate``); otherwise they keep their fourth item for augmentation on a device.
    """
    sampler = None
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    # A worker process needs a CPU of its own besides the training thread's: on a 1-CPU trial, workers
    # would only take turns with training on the same core, so the data is loaded in-process.
    workers = max(0, min(int(workers), cpu_budget() - 1))
    generator = torch.Generator()
    generator.manual_seed(seed)
    collate = AugmentingCollate(dataset) if augment_in_loader else YoloDataset.collate_fn
    loader = DataLoader(dataset, batch_size=batch, shuffle=shuffle and sampler is None, sampler=sampler,
                        num_workers=workers, pin_memory=torch.cuda.is_available(), collate_fn=collate,
                        worker_init_fn=_seed_worker, generator=generator,
                        persistent_workers=workers > 0)
    return loader, sampler


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's data set (augmentation seed) and distributed sampler (shuffle) the epoch.

    Call before iterating the loader for that epoch.
    """
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def resolve_data(data: str | None) -> tuple[DataConfig, bool]:
    """The DataConfig of ``data`` (a data YAML path), or of the embedded set when None; and which it was."""
    from detector.synthetic import make_synthetic

    if data is None:
        return load_data_config(make_synthetic()), True
    return load_data_config(data), False


def default_imgsz(imgsz: int | None, embedded: bool) -> int:
    """256 px for the embedded data set (its native size), 640 px otherwise, unless given."""
    if imgsz is not None:
        return int(imgsz)
    return 256 if embedded else 640
