"""An evolution on a Ray cluster of separate network hosts (benchmarks/netns_cluster.py): head, two
worker hosts and a driver host, each its own network namespace with its own address, token
authentication on. Trials land on both workers, the records say which host ran each, the results equal a
single-machine run of the same seed, and the faults of docs/cluster.md behave as stated there.

One cluster serves the whole module (starting four Ray nodes costs a minute of the machine's two cores);
a test that kills a node brings it back before it ends.
"""
from __future__ import annotations

import csv
import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from netns_fixtures import netns_cluster, orchestrate_argv, run_driver  # noqa: F401 - netns_cluster: fixture

pytestmark = pytest.mark.slow

SURROGATE = ["--trainer", "surrogate", "--epochs", "2", "--validate-top", "0", "--cpus-per-trial", "1"]


def _rows(run_dir: Path) -> dict[str, dict]:
    with (run_dir / "evolve.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids)), Counter(ids)  # nothing recorded twice
    return {r["trial_id"]: r for r in rows}


def _finals(run_dir: Path) -> dict[str, dict]:
    """The final report of every trial (Ray Tune's result.json), by trial id."""
    out = {}
    for path in (run_dir / "ray").glob("tune-*/*/result.json"):
        reports = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        finals = [r for r in reports if r.get("final")]
        if finals:
            out[finals[-1]["config"]["trial_id"]] = finals[-1]
    return out


def _same_results(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert sorted(a) == sorted(b)
    for trial_id, row in a.items():
        # everything but the measured duration: status, fitness, metrics, every hyp
        assert {k: v for k, v in row.items() if k != "seconds"} == \
            {k: v for k, v in b[trial_id].items() if k != "seconds"}, trial_id


def test_an_evolution_spreads_over_the_worker_hosts_and_equals_a_single_machine_run(netns_cluster, tmp_path):
    cluster = netns_cluster
    workers = {cluster.nodes["w1"].ip, cluster.nodes["w2"].ip}
    flags = [*SURROGATE, "--generations", "2", "--population", "4", "--surrogate-seconds", "2", "--seed", "7"]
    proc = run_driver(cluster, [*flags, "--address", cluster.head_address, "--project", str(tmp_path),
                                "--name", "cluster"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "cluster"
    rows, finals = _rows(run_dir), _finals(run_dir)
    assert sorted(rows) == sorted(finals) and len(rows) >= 5  # all 4 of generation 0 and the new genomes of 1
    assert {r["status"] for r in rows.values()} == {"ok"}
    hosts = Counter(f["node_ip"] for f in finals.values())
    assert set(hosts) == workers, hosts  # both workers ran trials; the head and the driver (no CPUs) none
    for trial_id, final in finals.items():
        log = (run_dir / "trials" / trial_id / "trial.log").read_text()
        assert f"({final['node_ip']})" in log  # the trial's own log names its host too

    single = subprocess.run(orchestrate_argv(*flags, "--num-cpus", "2", "--project", str(tmp_path),
                                             "--name", "single"), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    _same_results(rows, _rows(tmp_path / "single"))


def test_a_node_without_the_token_is_refused_and_the_run_goes_on(netns_cluster, tmp_path):
    cluster = netns_cluster
    before = {n["ip"] for n in cluster.alive_nodes()}
    node = cluster.add_node("notoken", cpus=1, token=False, start_ray=False)
    try:
        start = cluster.start_ray(node)
        assert start.returncode != 0
        assert "Authentication token is missing or incorrect" in start.stdout + start.stderr
        assert {n["ip"] for n in cluster.alive_nodes()} == before  # the head never listed it
        proc = run_driver(cluster, [*SURROGATE, "--generations", "1", "--population", "2", "--address",
                                    cluster.head_address, "--project", str(tmp_path), "--name", "exp"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        hosts = {f["node_ip"] for f in _finals(tmp_path / "exp").values()}
        assert hosts and hosts <= {cluster.nodes["w1"].ip, cluster.nodes["w2"].ip}
        assert len(_rows(tmp_path / "exp")) == 2
    finally:
        cluster.kill_node("notoken")
