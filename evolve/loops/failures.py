"""When a run stops because its trials fail systematically (``--max-failed-generations``), decided here.

A trial failing is data, but every trial failing for one reason is a broken set-up (a missing package in
the workers, a GPU that is gone, data the checks could not see), and a 300-generation budget would be
spent recording it. So:

- generational: a generation whose trials (2 or more were run) all failed with one reason counts; N such
  generations in a row stop the run (default N = 1). A generation that ran fewer than 2 trials tells
  nothing and leaves the count as it is;
- async: N x population trials in a row failing with one reason stop the run (the same number of
  failures as N generations);
- N = 0: never stop.

Reasons are compared with their numbers masked (``reason_key``), so "CUDA out of memory. Tried to
allocate 20.00 MiB" is one reason whatever the sizes. Stopping raises ``RunStopped`` naming the reason
and the resume command; the loops keep the run resumable once the cause is fixed (see each loop).
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

from evolve.contract import Metrics

_NUMBER = re.compile(r"\d+(\.\d+)?")
MIN_TRIALS = 2  # a generation with fewer trials than this says nothing about the set-up


def reason_key(metrics: Metrics) -> Optional[str]:
    """What a failed trial failed of, numbers masked; None for a trial that did not fail."""
    if metrics.status != "failed":
        return None
    return _NUMBER.sub("#", metrics.reason or "no reason given").strip()


class FailureStreak:
    """Counts generations (or trials, in async mode) failing in a row with one reason."""

    def __init__(self, generations: int) -> None:
        self.limit = int(generations)
        self.count = 0
        self.key: Optional[str] = None
        self.reason = ""

    def _add(self, keys: set, reason: str, amount: int) -> None:
        key = next(iter(keys)) if len(keys) == 1 else None
        if key is None or (self.key is not None and key != self.key):
            self.count, self.key = 0, None
        if key is not None:
            self.key, self.reason = key, reason
            self.count += amount

    def generation(self, results: Iterable[Metrics]) -> Optional[str]:
        """A generation ended with these results; the reason to stop the run, or None."""
        results = list(results)
        if self.limit <= 0 or len(results) < MIN_TRIALS:
            return None
        self._add({reason_key(m) for m in results}, results[-1].reason, 1)
        return self.reason if self.count >= self.limit else None

    def trial(self, metrics: Metrics, population: int) -> Optional[str]:
        """One async result; the reason to stop the run once N x population failed in a row with it."""
        if self.limit <= 0:
            return None
        self._add({reason_key(metrics)}, metrics.reason, 1)
        return self.reason if self.count >= self.limit * max(MIN_TRIALS, population) else None
