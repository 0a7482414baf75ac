"""Driver scripts for the scale-out tests, each run in a subprocess with a Ray of its own.

The test session's Ray lives in the pytest process, and one process can hold only one Ray, so the tests
that need another shape of cluster run one of these and read the results back from disk:

- ``python cluster_job.py packing OUT``: an embedded Ray declaring 8 CPUs and 2 logical GPUs; 16
  surrogate trials of a quarter GPU each, then 2 trials of 2 GPUs each; run folders under ``OUT``.
- ``python cluster_job.py cluster OUT``: a ``ray.cluster_utils.Cluster`` of a head (no CPUs) and two
  worker nodes (1 CPU each) on this machine, and a 2-generation surrogate evolution on it in ``OUT``.

Each prints one JSON line with what the driver saw; the tests (through ``run_job``) check Ray Tune's own
trial records.

Trials run ``gathered_surrogate``: the surrogate trainer, except that the trials named in
``extra["gather"]["names"]`` first wait (up to a timeout) until all of them have started. Ray would
otherwise be free to run everything on the first worker to come up (a finished trial's worker takes the
next trial), and on a busy machine it often does; with the wait, that first wave must be running at
once, so the placement Ray chooses for a full wave is what the tests see.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from evolve.config import TrialConfig
from detector.hyp import DEFAULT_HYP

HERE = Path(__file__).resolve().parent
TRAINER = "cluster_job:gathered_surrogate"
TRIAL_SECONDS = 0.5
GATHER_TIMEOUT_S = 90.0


def gathered_surrogate(hyp, cfg, report=None):
    """The surrogate trainer, after the first wave of trials has gathered (see the module docstring)."""
    from evolve.search.surrogate import train

    gather = cfg.extra["gather"]
    if cfg.name in gather["names"]:
        folder = Path(gather["dir"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / cfg.name).touch()
        deadline = time.monotonic() + GATHER_TIMEOUT_S
        while len(list(folder.iterdir())) < len(gather["names"]) and time.monotonic() < deadline:
            time.sleep(0.05)
    return train(hyp, cfg, report)


class ListSource:
    """Hands out the jobs in order and keeps each trial's metrics."""

    def __init__(self, jobs: list) -> None:
        self.pending = list(jobs)
        self.results: dict[str, str] = {}

    def next_job(self):
        return self.pending.pop(0) if self.pending else None

    def on_result(self, job, metrics) -> None:
        self.results[job.trial_id] = metrics.status


def surrogate_cfg(epochs: int = 1, seconds: float = TRIAL_SECONDS, gather_dir: Path | None = None,
                  gather: tuple[str, ...] = ()) -> TrialConfig:
    extra = {"gather": {"dir": str(gather_dir), "names": list(gather)}}
    return TrialConfig(epochs=epochs, workers=0, surrogate={"seconds": seconds}, extra=extra)


def packing(out: Path) -> dict:
    from evolve.config import RayConfig
    from evolve.execution.jobs import TrialJob
    from evolve.execution.runner import TrialRunner

    def jobs(prefix: str, n: int) -> list:
        return [TrialJob(f"{prefix}{i:02d}", 0, i, dict(DEFAULT_HYP, lr0=0.002 + 0.0005 * i))
                for i in range(n)]

    wave = tuple(f"q{i:02d}" for i in range(8))  # a full wave: 8 quarter-GPU trials on 2 GPUs
    quarter = TrialRunner(RayConfig(num_cpus=8, num_gpus=2, gpus_per_trial=0.25, cpus_per_trial=0.5),
                          TRAINER, surrogate_cfg(gather_dir=out / "gather", gather=wave), out / "quarter")
    summary: dict = {}
    with quarter:
        source = ListSource(jobs("q", 16))
        quarter.run(source)
        summary["quarter"] = {"results": source.results, "limit": quarter.concurrency(),
                              "storage": quarter.storage_path()}
        # the Ray the first runner started is found and reused, and shut down by it afterwards
        double = TrialRunner(RayConfig(gpus_per_trial=2, cpus_per_trial=1), "surrogate",
                             surrogate_cfg(seconds=0.1), out / "double")
        source = ListSource(jobs("d", 2))
        double.run(source)
        summary["double"] = {"results": source.results, "limit": double.concurrency(),
                             "layout": list(double.trial_layout()), "storage": double.storage_path()}
    import ray

    summary["ray_after"] = ray.is_initialized()
    return summary


def cluster(out: Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    import evolve
    from evolve.config import EvolveConfig
    from evolve.config import GAConfig
    from evolve.config import RayConfig
    from evolve.config import ValidationConfig

    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            head.add_node(num_cpus=1)
        head.wait_for_nodes()
        nodes = sorted(n["NodeID"] for n in ray_nodes(head.address) if n["Resources"].get("CPU"))
        # the first two trials must run at once: one on each worker node, the only place each fits
        cfg = EvolveConfig(ga=GAConfig(population=6, generations=2, seed=1),
                           ray=RayConfig(address=head.address, cpus_per_trial=1),
                           train=surrogate_cfg(epochs=2, seconds=0.3, gather_dir=out / "gather",
                                               gather=("g000i000", "g000i001")),
                           trainer=TRAINER, project=str(out), name="exp",
                           validation=ValidationConfig(top=0))  # the test counts the evolution's trials
        run_dir = evolve.run(cfg)
        return {"run_dir": str(run_dir), "worker_nodes": nodes, "ray_after": ray.is_initialized()}
    finally:
        head.shutdown()


def ray_nodes(address: str) -> list[dict]:
    """The cluster's nodes as ``ray.nodes()`` lists them, from a short-lived connection."""
    import ray

    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        return [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()


# -- the tests' side -------------------------------------------------------------------------------------
def run_job(mode: str, out: Path, timeout: float) -> dict:
    """Run ``cluster_job.py <mode> <out>`` in a session of its own; kill it (and the Ray it started) by
    its process group on timeout. Returns the JSON line it printed."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, str(HERE / "cluster_job.py"), mode, str(out)],
                            cwd=HERE.parents[1], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout  # Ray and Tune print nothing of their own on stdout
    return json.loads(lines[0])


def final_records(storage: Path) -> dict[str, dict]:
    """The final report of every trial as Ray Tune logged it (result.json), by the job's trial id."""
    out = {}
    for path in storage.glob("tune-*/*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        finals = [r for r in rows if r["final"]]
        assert len(finals) == 1, path
        out[finals[0]["config"]["trial_id"]] = finals[0]
    return out


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    # an end and a start at the same instant do not overlap: ends (-1) sort first
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    # Ray's worker processes inherit this before Ray starts, and so can import the trainer above.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    mode, out = argv[0], Path(argv[1])
    summary = {"packing": packing, "cluster": cluster}[mode](out)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
