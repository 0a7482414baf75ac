"""Tests of detector/threads.py: the CPU budget of a process and the thread governor's choices."""
from __future__ import annotations

import pytest
import torch

from detector import threads
from detector.threads import ThreadGovernor, cpu_budget, thread_options


RUNNABLE_OTHERS = threads._runnable_others  # the real reading, before the fixture pins it


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    old = torch.get_num_threads()
    # The governor's start reads the machine's load; these tests pin an idle one unless they say otherwise.
    monkeypatch.setattr(threads, "_runnable_others", lambda: 0)
    yield
    torch.set_num_threads(old)


def test_runnable_others_reads_the_fewest_running_tasks_besides_the_caller(tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("30.62 25.62 19.62 3/1135 8990\n")
    assert RUNNABLE_OTHERS(samples=3, interval=0.0, loadavg=loadavg) == 2
    loadavg.write_text("0.01 0.02 0.03 1/100 5\n")
    assert RUNNABLE_OTHERS(samples=1, loadavg=loadavg) == 0
    assert RUNNABLE_OTHERS(loadavg=tmp_path / "none") is None  # not Linux: no reading


def test_start_threads_leaves_the_cpus_of_the_runnable_others():
    assert threads.start_threads([2, 1], others=0, cpus=2) == 2  # idle
    assert threads.start_threads([2, 1], others=2, cpus=2) == 1  # one torch job with 2 threads beside
    assert threads.start_threads([2, 1], others=1, cpus=2) == 1
    assert threads.start_threads([8, 4, 1], others=3, cpus=8) == 4
    assert threads.start_threads([8, 4, 1], others=40, cpus=8) == 1
    assert threads.start_threads([8, 4, 1], others=None, cpus=8) == 8  # load unknown: the budget


def test_a_governor_started_on_a_busy_machine_runs_its_first_steps_at_one_thread(monkeypatch):
    monkeypatch.setattr(threads, "_runnable_others", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    gov = ThreadGovernor(2)
    assert gov.current == 1 and torch.get_num_threads() == 1
    assert feed(gov, {2: 2.7, 1: 0.59}, 8) == [1] * 8  # a short run: every step at the fast count
    assert ThreadGovernor(2, fixed=True).current == 2  # --threads is obeyed whatever the load


def test_budget_takes_the_tightest_limit(monkeypatch):
    monkeypatch.setattr(threads, "_affinity_cpus", lambda: 8)
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_budget() == 8
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: 2.5)  # a container with 2.5 CPUs
    assert cpu_budget() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # Ray's num_cpus for the trial, or a DDP rank's share
    assert cpu_budget() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert cpu_budget() == 2
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: 0.5)
    assert cpu_budget() == 1  # never 0
    assert cpu_budget(requested=6) == 6  # --threads wins
    with pytest.raises(ValueError, match="threads must be >= 1"):
        cpu_budget(requested=0)


def test_cgroup_quota_files(tmp_path):
    v2 = tmp_path / "cpu.max"
    v2.write_text("150000 100000\n")
    assert threads._cgroup_cpus(v2, tmp_path / "no", tmp_path / "no") == pytest.approx(1.5)
    v2.write_text("max 100000\n")
    assert threads._cgroup_cpus(v2, tmp_path / "no", tmp_path / "no") is None
    quota, period = tmp_path / "quota", tmp_path / "period"
    quota.write_text("300000\n")
    period.write_text("100000\n")
    assert threads._cgroup_cpus(tmp_path / "no", quota, period) == pytest.approx(3.0)
    quota.write_text("-1\n")  # cgroup v1 without a quota
    assert threads._cgroup_cpus(tmp_path / "no", quota, period) is None


def test_thread_options():
    assert thread_options(1) == [1]
    assert thread_options(2) == [2, 1]
    assert thread_options(8) == [8, 4, 1]


def feed(gov: ThreadGovernor, step_time: dict[int, float], steps: int) -> list[int]:
    """Run ``steps`` steps whose duration depends only on the thread count; the counts used."""
    used = []
    for _ in range(steps):
        used.append(gov.threads)
        assert torch.get_num_threads() == gov.threads
        gov.record(step_time[gov.threads])
    return used


def test_idle_machine_keeps_all_threads_and_probes_rarely():
    gov = ThreadGovernor(2, probe_every=10, max_probe_every=160)
    used = feed(gov, {2: 0.36, 1: 0.57}, 1000)
    assert gov.current == 2 and gov.switches == 0
    # probes back off: 10, 20, 40, 80, 160, 160, ... steps apart, 2 steps each
    assert used.count(1) <= 2 * 12
    assert used.count(1) / len(used) < 0.025


def test_busy_machine_switches_to_one_thread_and_back_when_idle_again():
    gov = ThreadGovernor(2, probe_every=10)
    feed(gov, {2: 2.7, 1: 0.6}, 30)  # another process spins on the cores
    assert gov.current == 1 and gov.switches == 1
    used = feed(gov, {2: 0.36, 1: 0.57}, 60)  # it ended
    assert gov.current == 2 and gov.switches == 2
    assert used[-10:] == [2] * 10


def test_a_sudden_slowdown_brings_the_probe_forward():
    gov = ThreadGovernor(2, probe_every=10, max_probe_every=320)
    feed(gov, {2: 0.36, 1: 0.57}, 700)  # idle: the interval has backed off to 320
    assert gov.probe_every == 320
    used = feed(gov, {2: 2.7, 1: 0.6}, 15)  # busy from now on
    assert gov.current == 1, used


def test_fixed_threads_never_probe():
    gov = ThreadGovernor(3, fixed=True)
    assert feed(gov, {3: 5.0}, 100) == [3] * 100
    assert torch.get_num_threads() == 3
