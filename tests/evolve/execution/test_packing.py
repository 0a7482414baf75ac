"""Tests of GPU packing and per-trial resources (evolve/runner.py, evolve/trainable.py) on logical GPUs.

The packing run needs a Ray declaring GPUs, which the session's Ray does not, so it runs in a subprocess
(``cluster_job.py packing``) and is checked afterwards from Ray Tune's own trial records.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest
from cluster_job import final_records, max_overlap, run_job

from evolve.config import RayConfig, TrialConfig
from evolve.execution.runner import TrialRunner


@pytest.fixture(scope="module")
def packing(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("packing")
    summary = run_job("packing", out, timeout=300)
    summary["out"] = out
    return summary


def test_quarter_gpu_trials_pack_four_to_a_gpu_on_both_gpus(packing):
    quarter = packing["quarter"]
    assert quarter["limit"] == 8  # 2 GPUs / 0.25, fewer than 8 CPUs / 0.5
    assert sorted(quarter["results"]) == [f"q{i:02d}" for i in range(16)]
    assert set(quarter["results"].values()) == {"ok"}
    records = final_records(Path(quarter["storage"]))
    assert sorted(records) == sorted(quarter["results"])
    by_gpu: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for trial_id, rec in records.items():
        assert len(rec["gpu_ids"]) == 1, trial_id  # each trial saw exactly one GPU ...
        assert rec["cuda_visible_devices"] == rec["gpu_ids"][0], trial_id  # ... and only that one
        assert rec["start_time"] < rec["end_time"]
        by_gpu[rec["gpu_ids"][0]].append((rec["start_time"], rec["end_time"]))
    assert sorted(by_gpu) == ["0", "1"]  # both GPUs used
    overlaps = {gpu: max_overlap(intervals) for gpu, intervals in by_gpu.items()}
    # the first wave (8 trials waiting for each other) ran at once: 4 on each GPU, never more
    assert overlaps == {"0": 4, "1": 4}, overlaps
    logs = list((packing["out"] / "quarter" / "trials").glob("*/trial.log"))
    assert len(logs) == 16


def test_two_gpu_trials_get_two_gpus_and_the_surrogate_runs_in_one_process(packing):
    double = packing["double"]
    assert (double["limit"], double["layout"]) == (1, [1, 0])
    assert double["results"] == {"d00": "ok", "d01": "ok"}
    records = final_records(Path(double["storage"]))
    assert sorted(records) == ["d00", "d01"]
    for rec in records.values():
        assert sorted(rec["gpu_ids"]) == ["0", "1"]
        assert sorted(rec["cuda_visible_devices"].split(",")) == ["0", "1"]
    assert max_overlap([(r["start_time"], r["end_time"]) for r in records.values()]) == 1
    assert packing["ray_after"] is False  # the runner that started the embedded Ray shut it down


@pytest.mark.parametrize("ray_kwargs, trainer, workers, expected", [
    ({"cpus_per_trial": 1}, "detector", 2, (1, 0)),  # one CPU: load in the training process
    ({"cpus_per_trial": 0.5, "gpus_per_trial": 0.25}, "detector", 2, (1, 0)),
    ({"cpus_per_trial": 4}, "detector", 2, (1, 2)),  # never more than --workers
    ({"cpus_per_trial": 8}, "detector", 3, (1, 3)),
    ({"cpus_per_trial": 2, "workers_per_trial": 2}, "detector", 2, (2, 0)),
    ({"cpus_per_trial": 8, "gpus_per_trial": 2}, "detector", 8, (2, 3)),  # 4 CPUs a rank: 3 loaders
    ({"cpus_per_trial": 8, "gpus_per_trial": 2}, "surrogate", 8, (1, 7)),  # the surrogate: one process
    ({"cpus_per_trial": 2, "workers_per_trial": 2}, "surrogate", 0, (1, 0)),
])
def test_trial_layout_fits_ranks_and_loader_workers_to_the_cpus(tmp_path, ray_kwargs, trainer, workers,
                                                                   expected):
    runner = TrialRunner(RayConfig(**ray_kwargs), trainer, TrialConfig(workers=workers), tmp_path)
    assert runner.trial_layout() == expected
    spec = runner.trial_spec()
    assert (spec.nproc, spec.cfg.workers) == expected
    assert spec.cpus_per_trial == ray_kwargs["cpus_per_trial"]


def test_placement_sets_cuda_visible_devices_from_rays_gpu_ids(monkeypatch):
    import ray

    from evolve.execution import trainable

    class Context:
        def get_node_id(self) -> str:
            return "n" * 56

    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [1, 3])
    monkeypatch.setattr(ray, "get_runtime_context", lambda: Context())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    where = trainable.placement()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert (where["gpu_ids"], where["cuda_visible_devices"], where["node_id"], where["pid"]) == \
        (["1", "3"], "1,3", "n" * 56, os.getpid())
    # a user who told Ray to leave the variable alone keeps it as it is
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.setenv("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", "1")
    assert trainable.placement()["cuda_visible_devices"] == "0,1,2,3"
    # no GPU reserved: nothing to set
    monkeypatch.delenv("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert trainable.placement()["gpu_ids"] == [] and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
