"""How long a trial may run (``--trial-timeout``) and which running trials are overdue or slow.

A hung trainer would hold its generation (and its GPU) forever, so every trial has a deadline, decided
here and nowhere else (``timeout_for``):

- ``--trial-timeout SECONDS``: that many seconds from the trial's start; ``0``: no deadline;
- by default, derived from the work itself: ``max(FLOOR_S, FACTOR x median)`` of the durations of the
  trials that finished ``ok`` so far in the run (a resumed run counts those on record). Before any trial
  has finished there is no median, and no deadline: a first trial may legitimately take hours.

A trial past its deadline is ended by the runner (``evolve.execution.tune_glue``): its Ray worker is
killed, which ends its DDP ranks (they die with their parent) and its data-loader workers (they leave once
their parent is gone; one stuck in a hung read of its own cannot see that), and it is recorded
``failed`` with reason ``timeout``; it is not retried. Its row in evolve.csv means a resumed run never runs
it again either (only a trial interrupted before its deadline, which has no row, runs again on resume).

``slow`` names the running trials that already took ``SLOW_FACTOR`` times the median, for the progress line.
"""
from __future__ import annotations

import statistics
from typing import Iterable, Mapping, Optional, Sequence

FLOOR_S = 600.0  # the derived deadline is never shorter: start-up, data caching and a slow node fit in it
FACTOR = 4.0  # trials of one run differ by their hyps and packing, rarely by 2x; 4x the median is a hang
SLOW_FACTOR = 2.0  # shown as slow on the progress line from this multiple of the median on


def median(durations: Sequence[float]) -> Optional[float]:
    """The median of the positive durations, None without any."""
    values = [float(d) for d in durations if d and d > 0]
    return statistics.median(values) if values else None


def timeout_for(setting: Optional[float], durations: Sequence[float]) -> Optional[float]:
    """The deadline in seconds of a trial starting now (None: none), for ``--trial-timeout`` ``setting``
    (None: derived) and the durations of the trials finished ``ok`` so far."""
    if setting is not None:
        return float(setting) if setting > 0 else None
    mid = median(durations)
    return None if mid is None else max(FLOOR_S, FACTOR * mid)


class TrialClock:
    """The deadline of the running trials, from the durations of the finished ones.

    It keeps no start times: the job source owns them, and the runner asks it when Ray began running each
    trial (``JobSource.running_since``, on the source's clock), so a trial waiting for a worker is not
    charged for the wait.
    """

    def __init__(self, setting: Optional[float] = None, history: Iterable[float] = ()) -> None:
        self.setting = setting
        self.durations = [float(d) for d in history if d and d > 0]
        self._named: set[str] = set()  # overdue trials already handed to the runner to end

    def finish(self, key: str, seconds: Optional[float], ok: bool) -> None:
        """The trial ended after ``seconds``; they count towards the median only if it finished ``ok``."""
        self._named.discard(key)
        if ok and seconds is not None:
            self.durations.append(float(seconds))

    def timeout(self) -> Optional[float]:
        return timeout_for(self.setting, self.durations)

    def overdue(self, running: Mapping[str, float], now: float) -> list[tuple[str, float]]:
        """(key, seconds running) of each running trial (key -> start time) past the deadline at ``now``;
        each is named once."""
        limit = self.timeout()
        if limit is None:
            return []
        late = [(key, now - t) for key, t in running.items() if now - t > limit and key not in self._named]
        self._named.update(key for key, _ in late)
        return late


def slow(running: dict[str, float], durations: Sequence[float], now: float) -> list[tuple[str, float]]:
    """(name, seconds) of the running trials (name -> start time) past ``SLOW_FACTOR`` x the median."""
    mid = median(durations)
    if mid is None:
        return []
    return sorted(((name, now - t) for name, t in running.items() if now - t > SLOW_FACTOR * mid),
                  key=lambda item: -item[1])
