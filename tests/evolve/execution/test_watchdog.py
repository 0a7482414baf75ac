"""Tests of evolve/execution/watchdog.py: the deadline policy of --trial-timeout, and a hung trial ended by
the runner on the session's Ray, its processes killed, recorded failed (timeout) and not retried."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from detector.hyp import DEFAULT_HYP
from evolve.config import RayConfig, TrialConfig
from evolve.execution.jobs import TrialJob
from evolve.execution.runner import TrialRunner
from evolve.execution.watchdog import FACTOR, FLOOR_S, TrialClock, slow, timeout_for


def test_the_deadline_is_the_flag_or_derived_from_the_finished_trials():
    assert timeout_for(30, []) == 30 and timeout_for(0, [5000]) is None  # given; 0 turns it off
    assert timeout_for(None, []) is None  # nothing finished yet: no median, no deadline
    assert timeout_for(None, [10, 20, 30]) == FLOOR_S  # short trials: the floor
    assert timeout_for(None, [1000, 2000, 9000]) == FACTOR * 2000  # the median, not the mean


def test_overdue_trials_are_named_once_and_only_ok_durations_count():
    watch = TrialClock(None, history=[100.0])
    running = {"a": 0.0}  # start times of the running trials, as the job source keeps them
    watch.finish("b", 150.0, ok=False)
    assert watch.durations == [100.0]  # a failure says nothing
    assert watch.overdue(running, now=FLOOR_S + 1) == [("a", FLOOR_S + 1)]
    assert watch.overdue(running, now=FLOOR_S + 2) == []  # named once: the runner ends it
    watch.finish("a", FLOOR_S + 3, ok=True)
    assert watch.durations == [100.0, FLOOR_S + 3]
    assert TrialClock(0).overdue(running, now=1e9) == []


def test_slow_trials_are_those_past_twice_the_median():
    assert slow({"a": 0.0, "b": 90.0}, [40.0, 50.0], now=100.0) == [("a", 100.0)]
    assert slow({"a": 0.0}, [], now=1e6) == []


class ListSource:
    def __init__(self, jobs: list[TrialJob]):
        self.pending = list(jobs)
        self.results: dict[str, object] = {}
        self.ticks = 0

    def next_job(self):
        return self.pending.pop(0) if self.pending else None

    def on_result(self, job, metrics):
        self.results[job.trial_id] = metrics

    def on_tick(self):
        self.ticks += 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has ended; only its parent has not collected it yet
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.usefixtures("ray_cluster")
def test_a_hung_trial_is_ended_with_its_processes_and_nonsense_metrics_fail(tmp_path):
    names = ["hangs", "linear", "nan_map", "percent"]
    jobs = [TrialJob(f"{name}-{i}", 0, i, dict(DEFAULT_HYP)) for i, name in enumerate(names)]
    source = ListSource(jobs)
    cfg = TrialConfig(epochs=1, extra={"pid_dir": str(tmp_path)})
    runner = TrialRunner(RayConfig(trial_timeout=4), "trainers_for_tests:by_trial_id", cfg, tmp_path / "run")
    start = time.monotonic()
    runner.run(source)
    assert time.monotonic() - start < 120
    hung = source.results["hangs-0"]
    assert (hung.status, hung.fitness) == ("failed", 0.0) and hung.reason.startswith("timeout: ended after")
    worker, child = map(int, (tmp_path / "hangs-0.pids").read_text().split())
    deadline = time.monotonic() + 30
    while (_alive(worker) or _alive(child)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker) and not _alive(child)
    log = (tmp_path / "run" / "trials" / "hangs-0" / "trial.log").read_text()
    assert log.count("starts with trainer") == 1  # not retried
    assert source.results["linear-1"].status == "ok"
    for name, reason in (("nan_map-2", "invalid result: map50 is nan"),
                         ("percent-3", "invalid result: map50 70 outside [0, 1]")):
        m = source.results[name]
        assert (m.status, m.reason, m.fitness) == ("failed", reason, 0.0), name
        assert reason in (tmp_path / "run" / "trials" / name / "trial.log").read_text()
    assert source.ticks > 0
