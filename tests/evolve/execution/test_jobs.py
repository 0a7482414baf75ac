"""Tests of evolve/execution/jobs.py: what the ``JobSource`` base decides for every source (start times,
a result taken once and judged once, pickling)."""
from __future__ import annotations

import pickle

from evolve.contract import Metrics
from evolve.execution.jobs import WAIT, JobSource, TrialJob


class ListSource(JobSource):
    """Hands out its jobs in order, then None; keeps what it records."""

    def __init__(self, jobs, clock):
        super().__init__(clock)
        self.jobs = list(jobs)
        self.started: list[str] = []
        self.recorded: list[tuple[str, str, float, float]] = []

    def _next(self):
        if self.jobs:
            return self.jobs.pop(0)
        return WAIT if self.running() else None

    def _on_start(self, job):
        self.started.append(job.trial_id)

    def _record(self, job, metrics, seconds):
        self.recorded.append((job.trial_id, metrics.status, metrics.fitness, seconds))


def test_the_base_times_each_trial_takes_a_result_once_and_judges_it(caplog):
    a, b = TrialJob("a", 0, 0, {}), TrialJob("b", 0, 1, {})
    source = ListSource([a, b], clock=iter([1.0, 2.0, 5.0, 9.5]).__next__)
    assert source.next_job() is a and source.next_job() is b and source.running() == 2
    assert source.next_job() is WAIT and source.started == ["a", "b"]
    source.on_result(b, Metrics(map50=0.5, map50_95=1.5, fitness=0.9))  # mAP over 1: not believed
    source.on_result(a, Metrics(map50=0.5, map50_95=0.5, fitness=0.5))
    source.on_result(a, Metrics(fitness=0.7))  # reported twice: ignored
    source.on_result(TrialJob("never", 0, 2, {}), Metrics())  # never handed out: ignored
    assert source.recorded == [("b", "failed", 0.0, 3.0), ("a", "ok", 0.5, 8.5)]
    assert caplog.text.count("reported twice or was never started") == 2
    assert source.next_job() is None and source.running() == 0


def test_a_source_pickles_empty():
    source = ListSource([TrialJob("a", 0, 0, {})], clock=lambda: 0.0)
    source.next_job()
    clone = pickle.loads(pickle.dumps(source))
    assert type(clone) is ListSource and vars(clone) == {}
