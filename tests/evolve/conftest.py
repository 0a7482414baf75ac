"""Fixtures shared by the evolution tests: a private cache folder and one local Ray for the whole session.

``ray_cluster`` (alias ``ray_address``) starts Ray once, in this process, with 2 CPUs, and yields its
address so that subprocess drivers can join it with ``--address``; TrialRunners created in the tests
find Ray initialised and reuse it. ``YOLO_EVOLVE_CACHE`` (the root conftest's ``evolve_cache``) is set
before Ray starts, so every Ray worker inherits the session's private cache folder.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ContextManager

import pytest

HERE = Path(__file__).resolve().parent

# Test trainers are named ``trainers_for_tests:<function>``; the driver finds them here, and Ray workers
# through PYTHONPATH (set in ray_cluster before Ray starts its worker processes).
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@pytest.fixture(scope="session")
def ray_cluster(evolve_cache: Path) -> Iterator[str]:
    """One local Ray (2 CPUs, no dashboard) for the whole test session; yields its address."""
    import ray

    old_pythonpath = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), old_pythonpath) if p)
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        started = True
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        if started:
            ray.shutdown()
        _set_env("PYTHONPATH", old_pythonpath)


@pytest.fixture(scope="session")
def ray_address(ray_cluster: str) -> str:
    """Alias of ``ray_cluster``."""
    return ray_cluster


def optimizer_meta(folder: Path, source: Path | None = None) -> Path:
    """``source`` (default: the shipped meta.yaml) with the optimizer gene turned on, the one edit a user
    makes, written to ``folder/meta.optimizer.yaml``."""
    import hyps

    text = (source or hyps.path(hyps.META)).read_text()
    edited = text.replace("optimizer:       {evolve: false,", "optimizer:       {evolve: true,")
    assert edited != text, "the optimizer entry of the meta file changed its form"
    path = folder / "meta.optimizer.yaml"
    path.write_text(edited)
    return path


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _collecting(name: str) -> Iterator[list[str]]:
    logger, handler, old_level = logging.getLogger(name), _Collect(), logging.getLogger(name).level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture(scope="session")
def collect_logs() -> Callable[[str], contextlib.AbstractContextManager[list[str]]]:
    """``with collect_logs("evolve.loops") as messages:``: the INFO messages that logger and its children
    log inside the block (module-scoped fixtures cannot use pytest's function-scoped ``caplog``)."""
    return _collecting
