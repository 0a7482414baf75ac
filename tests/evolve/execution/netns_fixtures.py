"""The ``cluster`` fixture (``netns_cluster``): a Ray cluster of separate network hosts (benchmarks/netns_cluster.py).

A head (no CPUs), two worker hosts of one CPU each and a driver host (no CPUs), each its own network, PID
and mount namespace on a private bridge, token authentication on. Started once per test module that uses
it, torn down by pid and namespace name when the module ends, whatever happened; a node a test kills
is that test's to bring back (``restart_node``). Skipped, with the reason, where the machine cannot make
namespaces (not root, no ``ip``).

``run_driver`` runs ``orchestrate.py`` on the driver host and returns the finished process.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _harness():
    spec = importlib.util.spec_from_file_location("netns_cluster", ROOT / "benchmarks" / "netns_cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("netns_cluster", module)
    spec.loader.exec_module(module)
    return module


harness = _harness()


@pytest.fixture(scope="module", name="cluster")
def netns_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.NetnsCluster]:
    why = harness.missing_requirements()
    if why:
        pytest.skip(f"a cluster of network namespaces {why}")
    cluster = harness.NetnsCluster(tmp_path_factory.mktemp("netns"))
    try:
        cluster.up(workers=2, worker_cpus=1)
        yield cluster
    finally:
        cluster.down()


def orchestrate_argv(*flags: str) -> list[str]:
    return [sys.executable, str(ROOT / "orchestrate.py"), *flags]


def run_driver(cluster, flags: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``orchestrate.py FLAGS`` on the driver host."""
    return cluster.run("driver", orchestrate_argv(*flags), timeout=timeout)
