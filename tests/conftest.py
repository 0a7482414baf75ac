"""Fixtures shared by the whole test suite.

- ``evolve_cache`` (autouse): a session-private ``YOLO_EVOLVE_CACHE`` so tests never write to ~/.cache.
- ``torch_threads`` (autouse): one intra-op thread (and ``OMP_NUM_THREADS=1``); test tensors are tiny
  and extra threads only fight over the CI machine's two cores (with other processes busy, 2 threads
  ran a tiny epoch 10x slower).
- ``tiny_data``: the synthetic data set at its smallest useful size (16 train / 8 val images, 64 px).
- ``tiny_cfg``: a factory of fast ``TrainConfig``s on ``tiny_data``.
- ``trained_run``: one 2-epoch training run on ``tiny_data``, trained once and shared by the train, val
  and CLI tests (treat its folder as read-only; copy it before resuming).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def evolve_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("yolo-evolve-cache")
    old = os.environ.get("YOLO_EVOLVE_CACHE")
    os.environ["YOLO_EVOLVE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("YOLO_EVOLVE_CACHE", None)
    else:
        os.environ["YOLO_EVOLVE_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def torch_threads() -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    old_env = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    # The detector takes its thread count from the CPUs a process may use (OMP_NUM_THREADS first), and so
    # do Ray's trial workers, which inherit this environment: one thread everywhere in the tests.
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(old)
    if old_env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old_env


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data YAML of a 16/8-image, 64 px synthetic set (4 classes)."""
    from detector.synthetic import make_synthetic

    return make_synthetic(root=tmp_path_factory.mktemp("synthetic"), n_train=16, n_val=8, imgsz=64)


@pytest.fixture
def tiny_cfg(tiny_data: Path, tmp_path: Path) -> Callable[..., Any]:
    """``tiny_cfg(**overrides) -> TrainConfig``: model n, 64 px, batch 8, 1 epoch, no workers, in tmp_path."""
    from detector.config import TrainConfig

    def make(**overrides: Any) -> TrainConfig:
        values: dict[str, Any] = dict(data=str(tiny_data), model="n", imgsz=64, epochs=1, batch=8, workers=0,
                                      project=str(tmp_path / "runs"), name="exp", progress=False)
        values.update(overrides)
        return TrainConfig(**values)

    return make


@dataclass
class TrainedRun:
    metrics: Any
    reports: list[tuple[int, Any]]
    save_dir: Path
    cfg: Any
    hyp: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="session")
def trained_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """2 epochs of model n on ``tiny_data``, validated every epoch, weights saved."""
    from detector.config import TrainConfig
    from detector.hyp import DEFAULT_HYP
    from detector.train import train

    project = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(data=str(tiny_data), model="n", imgsz=64, epochs=2, batch=8, workers=0,
                      project=str(project), name="exp", progress=False)
    reports: list[tuple[int, Any]] = []
    hyp = dict(DEFAULT_HYP)
    metrics = train(hyp, cfg, report=lambda epoch, m: reports.append((epoch, m)))
    return TrainedRun(metrics=metrics, reports=reports, save_dir=project / "exp", cfg=cfg, hyp=hyp)
