"""Tests of evolve/execution/cluster.py: a surrogate evolution on a three-node local Ray cluster (a head
and two worker nodes on this machine), and Ray started, joined and checked before anything is written.

The cluster lives in a subprocess (``cluster_job.py cluster``): the session's Ray is initialised in the
pytest process, which can hold only one. The evolution's records (evolve.csv) and Ray Tune's own trial
records are read back here.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import orchestrate
from cluster_job import run_job

from evolve.config import RayConfig, config_from_argv
from evolve.driver import run
from evolve.errors import ConfigError
from evolve.execution import cluster
from evolve.execution.cluster import (
    check_paths_on_nodes,
    check_reachable,
    data_paths,
    head_watch,
)


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


# --- ray_session: Ray and the resource flags checked before anything is written -------------------------

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"http.server on port {port} did not start")


def test_an_address_where_a_web_server_listens_is_refused_quickly_and_writes_nothing(tmp_path):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        _wait_listening(port, server)
        start = time.monotonic()
        with pytest.raises(ConfigError, match="something listens there but it is not a Ray cluster"):
            check_reachable(f"127.0.0.1:{port}")
        seconds = time.monotonic() - start
        proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--trainer", "surrogate",
                               "--address", f"127.0.0.1:{port}", "--project", str(tmp_path / "runs")],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        server.kill()
        server.wait(timeout=30)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--address '127.0.0.1:{port}'" in lines[0], proc.stderr
    # The probe itself is bounded (2 x 5 s at most); the CLI's imports before it depend on the machine's load.
    assert seconds < 30, seconds
    assert not (tmp_path / "runs").exists()


def test_a_closed_port_is_refused_and_a_ray_gcs_is_accepted(ray_cluster):
    with pytest.raises(ConfigError, match="no Ray cluster answers there"):
        check_reachable(f"127.0.0.1:{_free_port()}")
    check_reachable(ray_cluster)  # the session's Ray answers the probe


def _config(argv: list[str]):
    return config_from_argv(argv)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flags, message", [
    (["--cpus-per-trial", "5"], "--cpus-per-trial 5: the largest node of the cluster has only 2 CPUs"),
    (["--gpus-per-trial", "3"], "--gpus-per-trial 3: the largest node of the cluster has only 0 GPUs"),
])
def test_a_trial_no_node_can_hold_is_refused_before_a_run_folder_exists(flags, message, ray_cluster,
                                                                        tmp_path):
    with pytest.raises(ConfigError, match=message):
        run(_config(["--trainer", "surrogate", "--project", str(tmp_path / "runs"), "--address", ray_cluster,
                     *flags]))
    assert not (tmp_path / "runs").exists()


def test_a_refused_resume_changes_no_byte_of_the_run(ray_cluster, tmp_path):
    run_dir = run(_config(["--trainer", "surrogate", "--generations", "1", "--population", "2", "--epochs",
                           "1", "--project", str(tmp_path), "--address", ray_cluster]))
    before = _snapshot(run_dir)
    assert "checkpoint.pkl" in before and "evolve_population.yaml" in before
    with pytest.raises(ConfigError, match="--cpus-per-trial 5"):
        run(_config(["--resume", str(run_dir), "--generations", "6", "--cpus-per-trial", "5", "--address",
                     ray_cluster]))
    assert _snapshot(run_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [run_dir.name]


# --- the data every node needs, and the head watched --------------------------------------------------------

def test_data_paths_are_the_yamls_and_the_folders_they_name_resolved_as_the_detector_does(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.yaml").write_text("path: ../sets/one\ntrain: images/train\nval: [images/val, "
                                             "/abs/val.txt]\nnames: [x]\n")
    (tmp_path / "two.yaml").write_text("train: /data/train\nval: val\nnames: [x]\n")
    paths = data_paths(f"{tmp_path}/a/one.yaml,{tmp_path}/two.yaml,{tmp_path}/missing.yaml")
    root = tmp_path / "a" / ".." / "sets" / "one"
    assert paths == [str(tmp_path / "a" / "one.yaml"), str(root), str(root / "images/train"),
                     str(root / "images/val"), "/abs/val.txt", str(tmp_path / "two.yaml"), "/data/train",
                     str(tmp_path / "val"), str(tmp_path / "missing.yaml")]
    assert data_paths(None) == []


def test_a_path_missing_on_a_node_is_named_with_the_node(ray_cluster, tmp_path):
    import ray

    check_paths_on_nodes([str(tmp_path)])  # every node has it: nothing to say
    ip = next(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
    with pytest.raises(ConfigError, match=rf"^--data: node {ip} \(Ray node \w{{12}}\) has no {tmp_path}/nope;"):
        check_paths_on_nodes([str(tmp_path), str(tmp_path / "nope")])


def test_head_watch_calls_on_lost_once_the_head_stops_answering(ray_cluster, monkeypatch):
    monkeypatch.setattr(cluster, "WATCH_INTERVAL_S", 0.05)
    monkeypatch.setattr(cluster, "HEAD_LOST_AFTER_S", 0.3)
    lost: list[str] = []
    with head_watch(RayConfig(address=ray_cluster), lost.append):
        time.sleep(0.5)
        assert lost == []  # the session's head answers
        monkeypatch.setattr(cluster, "check_reachable", lambda address: (_ for _ in ()).throw(ConfigError("x")))
        start = time.monotonic()
        while not lost and time.monotonic() - start < 10:
            time.sleep(0.05)
        assert lost == [ray_cluster] and time.monotonic() - start >= 0.3
        time.sleep(0.3)
        assert lost == [ray_cluster]  # once
    with head_watch(RayConfig(address=None), lost.append):  # a local Ray is not watched
        time.sleep(0.5)
    assert len(lost) == 1


LISTEN_SCRIPT = """
import json, sys
import psutil, ray
from evolve.config.ray import RayConfig
from evolve.execution.cluster import shutdown, start_or_join
out = {}
for host in (None, "0.0.0.0"):
    start_or_join(RayConfig(num_cpus=1, ray_host=host))
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    listening = sorted({c.laddr.ip for c in psutil.net_connections("tcp")
                        if c.status == psutil.CONN_LISTEN and c.pid in pids})
    out[str(host)] = {"gcs": ray.get_runtime_context().gcs_address, "listening": listening}
    shutdown()
print(json.dumps(out))
"""


def test_the_embedded_ray_listens_on_loopback_unless_ray_host_opens_it():
    # In a subprocess: the pytest process holds the session's Ray, and a process holds one Ray at a time.
    root = Path(orchestrate.__file__).resolve().parent
    done = subprocess.run([sys.executable, "-c", LISTEN_SCRIPT], capture_output=True, text=True, timeout=300,
                          cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    local = out["None"]
    assert local["gcs"].startswith("127.0.0.1:")
    assert local["listening"] and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in local["listening"])
    opened = out["0.0.0.0"]
    assert not opened["gcs"].startswith("127.") and any(ip in ("0.0.0.0", "::") for ip in opened["listening"])


def test_a_failed_start_of_the_local_ray_is_one_line_and_exit_3(tmp_path):
    # Ray cannot make its session folder under a temp folder that is a file: a real failed start.
    env = {**os.environ, "RAY_TMPDIR": "/dev/null/ray", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(Path(orchestrate.__file__)), "--trainer", "surrogate",
                           "--generations", "1", "--population", "2", "--project", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 3, done.stderr[-2000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the local Ray did not start (NotADirectoryError")
    assert "/dev/null/ray" in lines[0] and not (tmp_path / "runs").exists()
