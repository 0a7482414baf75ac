"""Progress display of an evolution: ``gen g/G | trials done/running/failed | best fitness | ETA``, plus
``| slow: g003i004 9m12s (median 2m01s)`` while a trial runs far longer than the median (``SLOW_FACTOR``
times, ``evolve.execution.watchdog``), so a hang shows before its timeout ends it.

On a terminal the line is redrawn in place on stderr (on every change, and every few seconds by
``tick``); anywhere else (a log file, CI) each finished trial gives one plain log line instead, and a trial
turning slow one warning, so logs stay readable. The ETA is the mean wall time of a trial times the trials
still to run, divided by how many trials were seen running at once.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable, TextIO

from evolve.contract import FAILED_STATUSES, Metrics, standing
from evolve.execution.watchdog import median, slow

TICK_S = 2.0  # how often a terminal's line is redrawn while nothing happens

LOGGER = logging.getLogger(__name__)


def format_duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``12s``; ``?`` while unknown."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """Counts trials of a run and shows where it stands after every change.

    ``done_before``/``failed_before``/``best_before`` carry the totals of a resumed run's earlier part so
    the counts cover the whole run.
    """

    def __init__(self, generations: int, stream: TextIO | None = None, done_before: int = 0,
                 failed_before: int = 0, best_before: float | None = None,
                 log: Callable[[str], None] | None = None, best_status_before: str = "ok") -> None:
        self.generations = generations
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self._log = log if log is not None else LOGGER.info
        self.done = done_before
        self.failed = failed_before
        self.best = best_before
        # The best is ranked as selection ranks (evolve.contract.standing): a stopped trial's rung fitness
        # never shows as the best while a finished trial exists.
        self._best_rank = standing(Metrics(fitness=best_before, status=best_status_before)) \
            if best_before is not None else (0, float("-inf"))
        self.running = 0
        self.generation = 0
        self._gen_trials = 0
        self._gen_finished = 0
        self._trials_per_finished_gen: list[int] = []
        self._seconds: list[float] = []
        self._concurrency = 1
        self._drawn = False
        self._clock: Callable[[], float] = time.monotonic
        self._running_since: dict[str, float] = {}  # trial id -> start, for the slow ones
        self._warned_slow: set[str] = set()
        self._ticked = 0.0
        self.note = ""  # set by the loop: a few more words for the line (rung-to-final agreement)

    def start_generation(self, generation: int, trials: int) -> None:
        """Generation ``generation`` (0-based) begins with ``trials`` trials to run."""
        self.generation = generation
        self._gen_trials = trials
        self._gen_finished = 0
        self.running = 0
        if self.tty:
            self._draw()

    def started(self, trial_id: str | None = None) -> None:
        """A trial was handed to Ray."""
        if trial_id is not None:
            self._running_since[trial_id] = self._clock()
        self.running += 1
        self._concurrency = max(self._concurrency, self.running)
        if self.tty:
            self._draw()

    def finished(self, trial_id: str, metrics: Metrics, seconds: float) -> None:
        """A trial ended after ``seconds`` of wall time (start to result)."""
        self.running = max(0, self.running - 1)
        self._running_since.pop(trial_id, None)
        self.done += 1
        self._gen_finished += 1
        if metrics.status in FAILED_STATUSES:
            self.failed += 1
        elif self.best is None or standing(metrics) > self._best_rank:
            self.best, self._best_rank = metrics.fitness, standing(metrics)
        if seconds > 0:
            self._seconds.append(seconds)
        if self.tty:
            self._draw()
        else:
            self._log(f"{self.line()} | {trial_id} {metrics.status} fitness {metrics.fitness:.5f}")

    def end_generation(self) -> None:
        """The generation's trials are all done; the in-place line is finished with a newline."""
        self._trials_per_finished_gen.append(self._gen_trials)
        self.running = 0
        if self.tty and self._drawn:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def remaining_trials(self) -> int:
        """Trials still to run in this generation plus an estimate for the generations after it."""
        in_gen = max(0, self._gen_trials - self._gen_finished)
        future = max(0, self.generations - self.generation - 1)
        history = self._trials_per_finished_gen or [self._gen_trials]
        per_gen = sum(history) / len(history)
        return in_gen + int(round(future * per_gen))

    def eta_seconds(self) -> float | None:
        """Estimated seconds to the end of the run; None before any trial has finished."""
        if not self._seconds:
            return None
        mean = sum(self._seconds) / len(self._seconds)
        return mean * self.remaining_trials() / self._concurrency

    def slow(self) -> list[tuple[str, float]]:
        """(trial id, seconds) of the running trials far past the median duration, longest first."""
        return slow(self._running_since, self._seconds, self._clock())

    def tick(self) -> None:
        """Called while trials run: redraw a terminal's line now and then; warn once per slow trial."""
        now = self._clock()
        if self.tty and now - self._ticked >= TICK_S:
            self._ticked = now
            self._draw()
        for trial_id, seconds in self.slow():
            if not self.tty and trial_id not in self._warned_slow:
                self._warned_slow.add(trial_id)
                LOGGER.warning("trial %s has run %s, far longer than the median %s", trial_id,
                               format_duration(seconds), format_duration(median(self._seconds)))

    def line(self) -> str:
        best = "-" if self.best is None else f"{self.best:.5f}"
        text = (f"gen {self.generation + 1}/{self.generations}"
                f" | trials {self.done}/{self.running}/{self.failed}"
                f" | best {best} | ETA {format_duration(self.eta_seconds())}")
        if self.note:
            text += f" | {self.note}"
        late = self.slow()
        if late:
            more = f" +{len(late) - 1}" if len(late) > 1 else ""
            text += (f" | slow: {late[0][0]} {format_duration(late[0][1])}{more} "
                     f"(median {format_duration(median(self._seconds))})")
        return text

    def _draw(self) -> None:
        # Carriage return plus erase-to-end-of-line redraws the same terminal line.
        self.stream.write("\r" + self.line() + "\x1b[K")
        self.stream.flush()
        self._drawn = True
