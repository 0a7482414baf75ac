"""How many CPU threads a training process may use, and a governor that keeps them from spinning.

Two questions are answered here, once for every process that trains (the CLI, an evolution trial, a DDP
rank):

- **How many CPUs does this process have?** ``cpu_budget()``: the smallest of the CPUs in the process's
  affinity mask, the cgroup CPU quota (containers, Kubernetes, Slurm), and an explicit allocation in
  ``OMP_NUM_THREADS`` (Ray sets it to a task's ``num_cpus``; torchrun and our DDP launcher set it per
  rank). torch's own default, the number of cores of the machine, ignores all three.
- **How many of them are worth using right now?** On a busy machine OpenMP threads that wait at a
  barrier for a descheduled sibling spin: measured on 2 cores beside one process doing torch matrix
  products, a training step took 2.7 s with 2 threads and 0.59 s with 1 (0.36 s with 2 on an idle
  machine). No static choice is right on both an idle and a busy machine, so ``ThreadGovernor`` times
  the training steps and now and then tries the other thread counts for a couple of steps, keeping
  whichever is faster. Probes back off while the choice holds, so an idle run pays well under 1%.
  Probing needs steps, and a short run (one epoch of 128 images is 8 steps) ends before the first probe,
  so the governor starts from what the machine looks like now (``start_threads``): the tasks runnable
  beside this one, read from ``/proc/loadavg``, take their CPUs out of the budget. Measured on 2 cores
  beside a process multiplying matrices with 2 threads in the same session: one epoch took 4.3x its idle
  time at 2 threads from the start, about 1.5x at 1.

Data-loading workers are single-threaded: torch sets one thread in each DataLoader worker.
"""
from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path
from typing import Optional

LOGGER = logging.getLogger(__name__)

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def _cgroup_cpus(v2: Path = CGROUP_V2_MAX, v1_quota: Path = CGROUP_V1_QUOTA,
                 v1_period: Path = CGROUP_V1_PERIOD) -> Optional[float]:
    """CPUs allowed by the cgroup quota (fractional), or None when there is no quota."""
    try:
        quota, period = v2.read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(v1_quota.read_text())
        period_us = int(v1_period.read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def _env_threads() -> Optional[int]:
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 1 else None


def cpu_budget(requested: Optional[int] = None) -> int:
    """Threads this process may use: ``requested`` when given, else the tightest of affinity, cgroup quota
    and ``OMP_NUM_THREADS``; at least 1."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return int(requested)
    limits: list[float] = [float(_affinity_cpus())]
    quota = _cgroup_cpus()
    if quota is not None:
        limits.append(quota)
    env = _env_threads()
    if env is not None:
        limits.append(float(env))
    return max(1, int(min(limits)))


def _runnable_others(samples: int = 5, interval: float = 0.01,
                     loadavg: Path = Path("/proc/loadavg")) -> Optional[int]:
    """Tasks runnable on this machine besides the caller: the fewest of a few readings of ``loadavg``'s
    running count (the reading thread is one of them); None where there is no such file."""
    counts = []
    for i in range(samples):
        try:
            counts.append(int(loadavg.read_text().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, min(counts) - 1)


def start_threads(options: list[int], others: Optional[int], cpus: Optional[int] = None) -> int:
    """The thread count to start with: the largest option that fits in the CPUs the ``others`` runnable
    tasks leave free (1 when they take them all); the largest when the load is unknown."""
    if others is None:
        return options[0]
    free = (cpus or os.cpu_count() or 1) - others
    return next((n for n in options if n <= free), options[-1])


def thread_options(budget: int) -> list[int]:
    """Thread counts worth trying, largest first: the budget, half of it, and 1."""
    return sorted({budget, max(budget // 2, 1), 1}, reverse=True)


class ThreadGovernor:
    """Chooses torch's intra-op thread count from timed training steps.

    Call ``step_started()`` before and ``step_finished()`` after the compute of each step (not the wait
    for data). The governor runs at the largest count, and every ``probe_every`` steps runs ``probe_steps``
    steps at the next candidate; if those are faster (by ``margin``) than the recent steps at the current
    count, it switches. A probe that confirms the choice doubles the interval up to ``max_probe_every``;
    a step much slower than the recent median (the machine got busy) brings the next probe forward.
    ``fixed`` pins the count (the ``--threads`` flag) and turns probing off.
    """

    def __init__(self, budget: int, fixed: bool = False, probe_every: int = 20, probe_steps: int = 2,
                 max_probe_every: int = 320, margin: float = 0.1, window: int = 9):
        import torch

        self._torch = torch
        self.options = [budget] if fixed else thread_options(budget)
        # One option (a pinned count, or a budget of 1 as in every evolution trial): nothing to read.
        self.current = self.options[0] if len(self.options) == 1 else start_threads(self.options,
                                                                                    _runnable_others())
        if self.current != self.options[0]:
            LOGGER.info("threads: %d of %d to start with (the machine is busy)", self.current, budget)
        self.min_probe_every = self.probe_every = probe_every
        self.max_probe_every = max_probe_every
        self.probe_steps, self.margin, self.window = probe_steps, margin, window
        self.recent: list[float] = []
        self._probe: Optional[int] = None  # thread count being probed
        self._probe_times: list[float] = []
        self._next_alt = 0
        self._steps_since_probe = 0
        self._t0 = 0.0
        self.switches = 0
        torch.set_num_threads(self.current)

    @property
    def threads(self) -> int:
        """The thread count that runs the current step."""
        return self._probe if self._probe is not None else self.current

    def step_started(self) -> None:
        self._t0 = time.perf_counter()

    def step_finished(self) -> None:
        self.record(time.perf_counter() - self._t0)

    def record(self, seconds: float) -> None:
        """Account one step that took ``seconds`` at ``self.threads`` threads; maybe start or end a probe."""
        if len(self.options) == 1:
            return
        if self._probe is not None:
            self._probe_times.append(seconds)
            if len(self._probe_times) >= self.probe_steps:
                self._end_probe()
            return
        self.recent = (self.recent + [seconds])[-self.window:]
        self._steps_since_probe += 1
        slow = len(self.recent) >= 3 and seconds > 1.5 * statistics.median(self.recent[:-1])
        if slow:
            self.probe_every = self.min_probe_every
        if self._steps_since_probe >= self.probe_every and len(self.recent) >= 3:
            self._start_probe()

    def _start_probe(self) -> None:
        alternatives = [n for n in self.options if n != self.current]
        self._probe = alternatives[self._next_alt % len(alternatives)]
        self._next_alt += 1
        self._probe_times = []
        self._torch.set_num_threads(self._probe)

    def _end_probe(self) -> None:
        assert self._probe is not None
        # The first step after a change pays the thread pool's start, so it is left out when there are more.
        probe = statistics.median(self._probe_times[1:] or self._probe_times)
        now = statistics.median(self.recent)
        if probe < (1.0 - self.margin) * now:
            LOGGER.info("threads %d -> %d: %.3f s a step against %.3f s", self.current, self._probe, probe,
                        now)
            self.current = self._probe
            self.recent = [probe]
            self.probe_every = self.min_probe_every
            self.switches += 1
        else:
            self.probe_every = min(self.probe_every * 2, self.max_probe_every)
        self._probe = None
        self._steps_since_probe = 0
        self._torch.set_num_threads(self.current)
