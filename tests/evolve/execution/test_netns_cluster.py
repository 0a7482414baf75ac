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
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from netns_fixtures import harness, netns_cluster, orchestrate_argv, run_driver  # noqa: F401 - fixture `cluster`

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


def test_an_evolution_spreads_over_the_worker_hosts_and_equals_a_single_machine_run(cluster, tmp_path):
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
                                             "--name", "single"), capture_output=True, text=True, timeout=300,
                            check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    _same_results(rows, _rows(tmp_path / "single"))


def test_a_node_without_the_token_is_refused_and_the_run_goes_on(cluster, tmp_path):
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


def _start_driver(cluster, flags: list[str]) -> subprocess.Popen:
    # a session of its own: the driver is a child of nsenter in another PID namespace, and killpg reaches both
    return cluster.popen("driver", orchestrate_argv(*flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_worker_killed_mid_trial_is_retried_on_the_other_and_recorded_once(cluster, tmp_path):
    w1, w2 = cluster.nodes["w1"].ip, cluster.nodes["w2"].ip
    run_dir = tmp_path / "exp"
    driver = _start_driver(cluster, [*SURROGATE, "--generations", "1", "--population", "4",
                                     "--surrogate-seconds", "8", "--address", cluster.head_address,
                                     "--project", str(tmp_path),
                                     "--name", "exp"])

    def running_on_w2():
        for log in run_dir.glob("trials/*/trial.log"):
            text = log.read_text()
            if f"({w2})" in text and " ends: " not in text:
                return log.parent.name
        return None

    try:
        victim = _wait_for(running_on_w2, 240, "a trial running on w2")
        cluster.kill_node("w2")  # its raylet and workers, SIGKILL, no goodbye
        _, stderr = driver.communicate(timeout=400)
    finally:
        _stop(driver)
        cluster.restart_node("w2")
    assert driver.returncode == 0, stderr[-3000:]
    rows, finals = _rows(run_dir), _finals(run_dir)
    assert sorted(rows) == [f"g000i{i:03d}" for i in range(4)]  # nothing lost, nothing twice
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert finals[victim]["node_ip"] == w1  # retried on the node that was left
    log = (run_dir / "trials" / victim / "trial.log").read_text()
    assert log.count(f"trial {victim} (generation 0") == 2 and log.count(" ends: ") == 1


def test_a_worker_without_the_data_path_is_named_before_any_trial(cluster, tiny_data, tmp_path):
    folder = tiny_data.parent
    node = cluster.add_node("nodata", cpus=1, hidden=[str(folder)])
    try:
        proc = run_driver(cluster, [*SURROGATE, "--generations", "1", "--population", "2", "--data",
                                    str(tiny_data), "--address", cluster.head_address,
                                    "--project", str(tmp_path / "runs")])
    finally:
        cluster.kill_node("nodata")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    # one line says it all (after the progress line "Ray joined: ...")
    assert sum("error" in line for line in lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith(f"orchestrate.py: error: --data: node {node.ip} ")
    assert f"has no {tiny_data.resolve()}" in lines[-1]
    assert not (tmp_path / "runs").exists()  # refused before anything was written or trained


def test_the_head_lost_stops_the_driver_with_the_resume_command_and_a_new_head_completes_the_run(
        cluster, tmp_path):
    flags = [*SURROGATE, "--generations", "2", "--population", "4", "--surrogate-seconds", "3",
             "--seed", "11"]
    run_dir = tmp_path / "exp"
    old_head = cluster.head_address
    driver = _start_driver(cluster, [*flags, "--address", old_head, "--project", str(tmp_path),
                                     "--name", "exp"])
    try:
        _wait_for(lambda: (run_dir / "evolve.csv").exists()
                  and len((run_dir / "evolve.csv").read_text().splitlines()) >= 3, 240, "two finished trials")
        cluster.kill_node("head")
        _, stderr = driver.communicate(timeout=240)
    finally:
        _stop(driver)
    assert driver.returncode == 3, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert lines[-1].endswith(f"the Ray head at {old_head} is gone; start the cluster again, then resume "
                              f"with: python orchestrate.py --resume {run_dir} --address NEW_HEAD_IP:PORT"), \
        lines[-3:]
    assert "Traceback" not in stderr and sum("is gone" in line for line in lines) == 1
    before = _rows(run_dir)
    assert 2 <= len(before) < 7

    # a new cluster: the head on a new address, the workers and the driver's node joining it there
    new_ip = f"{cluster.subnet}.200"
    cluster.restart_node("head", ip=new_ip)
    for name in ("w1", "w2", "driver"):
        cluster.restart_node(name)
    assert cluster.head_address == f"{new_ip}:6379"
    resumed = run_driver(cluster, ["--resume", str(run_dir), "--address", cluster.head_address])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _rows(run_dir)
    assert {k: after[k] for k in before} == before  # the finished trials were not run again
    single = subprocess.run(orchestrate_argv(*flags, "--num-cpus", "2", "--project", str(tmp_path),
                                             "--name", "single"), capture_output=True, text=True, timeout=300,
                            check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    _same_results(after, _rows(tmp_path / "single"))


def test_the_detector_evolves_across_the_hosts_and_its_winner_is_validated(cluster, tiny_data,
                                                                          tmp_path):
    proc = run_driver(cluster, ["--data", str(tiny_data), "--model", "n", "--imgsz", "64", "--epochs", "1",
                                "--batch", "8", "--workers", "0", "--cpus-per-trial", "1",
                                "--generations", "2", "--population", "2", "--validate-top", "1",
                                "--validate-seeds", "2", "--validate-sentinels", "0",
                                "--validate-epochs", "1", "--address", cluster.head_address,
                                "--project", str(tmp_path), "--name", "exp"], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "exp"
    rows, finals = _rows(run_dir), _finals(run_dir)
    assert {r["status"] for r in rows.values()} == {"ok"} and len(rows) >= 2
    assert set(rows) <= set(finals)  # the evolution's trials; the validation runs are Tune trials too
    hosts = Counter(finals[t]["node_ip"] for t in rows)
    assert set(hosts) == {cluster.nodes["w1"].ip, cluster.nodes["w2"].ip}, hosts
    with (run_dir / "validation.csv").open() as handle:
        validated = list(csv.DictReader(handle))
    assert len(validated) == 4  # the winner and the base, two seeds each
    assert (run_dir / "hyp_validated.yaml").is_file()


# --- the harness itself -------------------------------------------------------------------------------------

def test_the_harness_says_why_it_cannot_run(monkeypatch):
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    assert harness.missing_requirements() == "needs root (network namespaces and mounts)"
    monkeypatch.setattr(harness.os, "geteuid", lambda: 0)
    monkeypatch.setattr(harness.shutil, "which", lambda tool: None if tool == "ip" else f"/usr/bin/{tool}")
    assert harness.missing_requirements() == "needs 'ip' on PATH"


def test_down_from_the_state_file_leaves_no_process_namespace_or_bridge(tmp_path):
    why = harness.missing_requirements()
    if why:
        pytest.skip(f"a cluster of network namespaces {why}")
    made = harness.NetnsCluster(tmp_path, tag="t" + str(os.getpid() % 10000))
    try:
        node = made.add_node("solo", start_ray=False)
        inside = made.popen("solo", ["sleep", "300"])  # a process of the node, as a raylet would be
        assert made.run("solo", ["ip", "-4", "-o", "addr", "show"]).stdout.count(node.ip) == 1
        # whoever made it is gone: the state file is all the next one has
        harness.NetnsCluster.load(tmp_path).down()
        assert inside.wait(timeout=30) == -signal.SIGKILL
    finally:
        made.down()
    assert node.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                            check=True).stdout
    assert subprocess.run(["ip", "link", "show", made.bridge], capture_output=True, check=False).returncode != 0
    assert not Path(f"/proc/{node.pid}").exists()
