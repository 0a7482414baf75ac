"""Tests of evolve/execution/jobs.py: what the ``JobSource`` base decides for every source (start times,
a result taken once and judged once, pickling)."""
from __future__ import annotations

import pickle

from evolve.contract import Metrics
from evolve.execution.jobs import WAIT, JobSource, TrialJob, as_job_source


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


def test_the_source_is_the_one_record_of_start_times_and_a_plain_object_gets_one():
    a = TrialJob("a", 0, 0, {})
    source = ListSource([a], clock=iter([3.0, 3.5, 4.0, 7.5]).__next__)
    source.next_job()
    assert source.running_since("a") is None  # handed out; Ray has not begun it yet
    source.began("a")
    source.began("a")  # a retry after a lost worker keeps the first time
    source.began("never")  # not handed out: nothing to time
    assert (source.started_at("a"), source.running_since("a"), source.now()) == (3.0, 3.5, 4.0)
    assert source.running_since("never") is None
    source.on_result(a, Metrics(map50=0.5, map50_95=0.5, fitness=0.5))
    assert source.recorded == [("a", "ok", 0.5, 4.5)]  # seconds from hand-out to result
    assert (source.started_at("a"), source.running_since("a")) == (None, None)

    class Plain:
        def __init__(self):
            self.jobs, self.results = [a], []

        def next_job(self):
            return self.jobs.pop() if self.jobs else None

        def on_result(self, job, metrics):
            self.results.append((job.trial_id, metrics.status))

    plain = Plain()
    wrapped = as_job_source(plain)
    assert as_job_source(source) is source and isinstance(wrapped, JobSource)
    assert wrapped.next_job() is a and wrapped.started_at("a") is not None
    wrapped.on_result(a, Metrics(map50=2.0, map50_95=0.5, fitness=0.5))  # judged as any source's result
    wrapped.on_result(a, Metrics())  # and taken once
    assert plain.results == [("a", "failed")] and wrapped.next_job() is None
    wrapped.on_tick()  # a plain object without on_tick or on_epoch is fine
    wrapped.on_epoch(a, 1, Metrics())
