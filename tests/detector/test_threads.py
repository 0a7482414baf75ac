"""Tests of detector/threads.py: the CPU budget of a process and the thread governor's choices."""
from __future__ import annotations

import pytest
import torch

from detector import threads
from detector.threads import ThreadGovernor, cpu_budget, thread_options


@pytest.fixture(autouse=True)
def restore_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


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
