"""A surrogate evolution on a three-node local Ray cluster (a head and two worker nodes on this machine).

The cluster lives in a subprocess (``cluster_job.py cluster``): the session's Ray is initialised in the
pytest process, which can hold only one. The evolution's records (evolve.csv) and Ray Tune's own trial
records are read back here.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from cluster_job import run_job


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("cluster")
    summary = run_job("cluster", out, timeout=240)
    summary["out"] = out
    return summary


def test_trials_spread_over_the_worker_nodes_and_all_are_recorded(cluster_run):
    run_dir = Path(cluster_run["run_dir"])
    assert run_dir == cluster_run["out"] / "exp"
    workers = cluster_run["worker_nodes"]
    assert len(workers) == 2  # the head has no CPUs, so every trial runs on a worker node
    with (run_dir / "evolve.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    finals: dict[str, dict] = {}
    for path in (run_dir / "ray").glob("tune-*/*/result.json"):
        reports = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert [r["epoch"] for r in reports] == [1, 2, 2] and reports[-1]["final"], path
        finals[reports[-1]["config"]["trial_id"]] = reports[-1]
    # one row per trial Ray ran, none lost and none twice: all 6 of generation 0, then the new genomes of
    # generation 1 (how many depends on the GA; its repeats are not trained again)
    assert sorted(r["trial_id"] for r in rows) == sorted(finals)
    assert sorted(r["trial_id"] for r in rows if r["generation"] == "0") == [f"g000i{i:03d}" for i in range(6)]
    assert {r["generation"] for r in rows} <= {"0", "1"}
    assert {r["status"] for r in rows} == {"ok"}
    for row in rows:
        assert float(row["fitness"]) == pytest.approx(finals[row["trial_id"]]["fitness"], abs=1e-6)
    nodes = Counter(rec["node_id"] for rec in finals.values())
    assert set(nodes) == set(workers), nodes  # both worker nodes ran trials, the head none
    assert sorted(p.name for p in (run_dir / "trials").iterdir()) == sorted(finals)
    assert cluster_run["ray_after"] is False
