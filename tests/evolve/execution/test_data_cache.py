"""Decoded images are shared by every trial of an evolution on one node: real detector trials run through
the TrialRunner on the session's local Ray, and the images of the data set are decoded exactly once.

Two ways of counting, which must agree: the build statistics the image cache writes per entry
(``detector.cache``'s ``K.json``), and the "cached N images" line the cache logs each time it builds an
entry, which lands in the ``trial.log`` of whichever trial built it (each trial log collects every record
its worker emits while it runs).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from detector.hyp import DEFAULT_HYP
from detector.synthetic import make_synthetic
from evolve.config import RayConfig, TrialConfig
from evolve.execution.jobs import TrialJob
from evolve.execution.runner import TrialRunner

pytestmark = pytest.mark.usefixtures("ray_cluster")

N_TRAIN, N_VAL, IMGSZ = 16, 8, 64
TRIALS = 4
BUILD_LINE = re.compile(r"detector\.cache: cached (\d+) images at (\d+) px")


class ListSource:
    """Hands out a fixed list of jobs and keeps each trial's metrics."""

    def __init__(self, jobs: list[TrialJob]):
        self.pending = list(jobs)
        self.results: dict[str, object] = {}

    def next_job(self):
        return self.pending.pop(0) if self.pending else None

    def on_result(self, job, metrics):
        self.results[job.trial_id] = metrics


@pytest.fixture(scope="module")
def cache_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four 1-epoch detector trials, two at a time, on one synthetic set with a fresh image cache."""
    root = tmp_path_factory.mktemp("data-cache")
    data = make_synthetic(root=root / "data", n_train=N_TRAIN, n_val=N_VAL, imgsz=IMGSZ)
    cache_dir = root / "image-cache"
    cfg = TrialConfig(data=str(data), epochs=1, imgsz=IMGSZ, batch=8, workers=0, cache_dir=str(cache_dir),
                      save_weights=False, progress=False)
    jobs = [TrialJob(f"g0i{i}", 0, i, dict(DEFAULT_HYP, lr0=0.005 + 0.002 * i)) for i in range(TRIALS)]
    source = ListSource(jobs)
    run_dir = root / "run"
    with TrialRunner(RayConfig(cpus_per_trial=1, max_concurrent=2), "detector", cfg, run_dir) as runner:
        runner.run(source)
    return {"source": source, "jobs": jobs, "cache_dir": cache_dir, "run_dir": run_dir}


def test_every_detector_trial_succeeds(cache_run):
    results = cache_run["source"].results
    assert sorted(results) == sorted(j.trial_id for j in cache_run["jobs"])
    for trial_id, metrics in results.items():
        assert metrics.status == "ok", trial_id
        assert metrics.epochs == 1
        log = (cache_run["run_dir"] / "trials" / trial_id / "trial.log").read_text()
        assert f"{N_TRAIN} train / {N_VAL} val images at {IMGSZ} px" in log


def test_cache_stats_show_each_image_decoded_once(cache_run):
    stats = [json.loads(p.read_text()) for p in sorted(Path(cache_run["cache_dir"]).glob("*.json"))]
    # one entry per split, each built once with every image decoded
    assert sorted(s["images"] for s in stats) == [N_VAL, N_TRAIN]
    assert sum(s["decoded"] for s in stats) == N_TRAIN + N_VAL
    assert all(s["imgsz"] == IMGSZ and s["unreadable"] == [] for s in stats)
    assert len(list(Path(cache_run["cache_dir"]).glob("*.npy.tmp*"))) == 0


def test_trial_logs_show_one_build_per_split_across_all_trials(cache_run):
    builds = []
    for job in cache_run["jobs"]:
        log = (cache_run["run_dir"] / "trials" / job.trial_id / "trial.log").read_text()
        builds += [(job.trial_id, int(n), int(px)) for n, px in BUILD_LINE.findall(log)]
    # four trials, two splits each, but only two builds in total: the other six openings were cache hits
    assert sorted(n for _, n, _ in builds) == [N_VAL, N_TRAIN]
    assert {px for _, _, px in builds} == {IMGSZ}
    assert sum(n for _, n, _ in builds) == N_TRAIN + N_VAL
