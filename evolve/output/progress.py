"""Progress display of an evolution: ``gen g/G | trials done/running/failed | best fitness | ETA``, plus
``| slow: g003i004 9m12s (median 2m01s)`` while a trial runs far longer than the median (``SLOW_FACTOR``
times, ``evolve.execution.watchdog``), so a hang shows before its timeout ends it.

Two modes. Plain (``--quiet``, and ``Progress``'s default): on a terminal the line is redrawn in place on
stderr; anywhere else (a log file, CI) each finished trial gives one plain log line, and a trial turning
slow one warning. Live (the command line's default): on a terminal a ``rich`` display
(``evolve.output.console.LiveDisplay``) shows the line with the budget and one row per running trial (its
epoch k/E and latest fitness, or its elapsed time when its trainer reports no epochs), redrawn at least
every ``TICK_S``; elsewhere the per-trial lines plus at most one heartbeat line a ``HEARTBEAT_S`` naming
the running trials and their epochs.

The cost: with a ``Budget``, the planned trial-epochs (evolution and validation) are logged before the
first trial, and once the first epochs have run the estimated wall time of the whole run at the measured
seconds per trial-epoch and the number of trials seen running at once, logged once and kept as the ETA.
Without epoch reports the ETA is the mean wall time of a trial times the trials still to run, divided by
how many trials were seen running at once.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from evolve.contract import FAILED_STATUSES, Metrics, standing
from evolve.execution.watchdog import median, slow

TICK_S = 2.0  # how often a terminal's line is redrawn while nothing happens
HEARTBEAT_S = 60.0  # without a terminal, at most one line naming the running trials this often

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


@dataclass(frozen=True)
class Budget:
    """The planned work of a run in trial-epochs: ``trials`` evolution trials of ``epochs`` epochs (``exact``
    False: at most that many, as carried elites and repeats are not trained again), then ``validation_runs``
    runs of ``validation_epochs``."""

    trials: int
    epochs: int
    validation_runs: int = 0
    validation_epochs: int = 0
    exact: bool = True

    @property
    def evolution(self) -> int:
        return self.trials * self.epochs

    @property
    def validation(self) -> int:
        return self.validation_runs * self.validation_epochs

    def line(self) -> str:
        most = "" if self.exact else "at most "
        text = (f"planned: {most}{self.evolution + self.validation} trial-epochs = evolution {most}"
                f"{self.trials} trials x {self.epochs} epochs")
        if self.validation_runs:
            return text + f" + validation {self.validation_runs} runs x {self.validation_epochs} epochs"
        return text + " (no validation)"


def seconds_text(seconds: float | None) -> str:
    """``12.3 s`` for per-epoch speeds, which ``format_duration`` would round to whole seconds."""
    return "?" if seconds is None else f"{seconds:.1f} s"


class Progress:
    """Counts trials of a run and shows where it stands after every change.

    ``done_before``/``failed_before``/``best_before`` carry the totals of a resumed run's earlier part so
    the counts cover the whole run. ``live`` picks the live mode over the plain one (see the module);
    ``planned`` the run's budget in trial-epochs, from which the cost is estimated. ``clock`` is the job
    source's (``JobSource.now``): start times come from the source, which owns them, and are read here
    against the same clock.
    """

    def __init__(self, generations: int, stream: TextIO | None = None, done_before: int = 0,
                 failed_before: int = 0, best_before: float | None = None,
                 log: Callable[[str], None] | None = None, best_status_before: str = "ok", live: bool = False,
                 planned: Budget | None = None, clock: Callable[[], float] = time.monotonic) -> None:
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
        self._seconds: list[float] = []  # wall seconds of every trial that ended, for the ETA without epochs
        # ... and of those that ran their whole length (ok), as the watchdog's deadline counts them, for the
        # slow warning: a trial stopped at a rung is no measure of how long a whole one takes.
        self._whole_seconds: list[float] = []
        self._trained_epoch_seconds: list[float] = []  # per epoch trained, of every trial that ended unfailed
        self._concurrency = 1
        self._drawn = False
        self._clock = clock
        self._running_since: dict[str, float] = {}  # trial id -> its source's start time, for the slow ones
        self._warned_slow: set[str] = set()
        self._ticked = 0.0
        self.note = ""  # set by the loop: a few more words for the line (rung-to-final agreement)
        self.live = live
        self.planned = planned
        self._epochs: dict[str, tuple[int, float, float]] = {}  # running trial -> (epoch, fitness, when)
        self._epoch_seconds: list[float] = []  # wall seconds of trial-epochs after a trial's first
        self._first_epoch_seconds: list[float] = []  # of trials' first epochs, start-up included
        self._estimated = False
        self._heartbeat: float | None = None  # when the last heartbeat was due; set by the first tick
        self._display: Any = None  # the rich display, started at the first draw on a terminal
        if planned is not None:
            self._log(planned.line())

    def start_generation(self, generation: int, trials: int) -> None:
        """Generation ``generation`` (0-based) begins with ``trials`` trials to run."""
        self.generation = generation
        self._gen_trials = trials
        self._gen_finished = 0
        self.running = 0
        if self.tty:
            self._draw()

    def started(self, trial_id: str | None = None, since: float | None = None) -> None:
        """A trial was handed to Ray at ``since`` (its job source's start time, on ``clock``), which its
        elapsed time and the slow-trial warning count from."""
        if trial_id is not None and since is not None:
            self._running_since[trial_id] = since
        self.running += 1
        self._concurrency = max(self._concurrency, self.running)
        if self.tty:
            self._draw()

    def epoch(self, trial_id: str, epoch: int, metrics: Metrics) -> None:
        """A running trial reported its epoch ``epoch`` (from 1) with ``metrics``."""
        now = self._clock()
        started = self._running_since.get(trial_id, now)
        last_epoch, _, last_time = self._epochs.get(trial_id, (0, 0.0, started))
        if epoch > last_epoch and now > last_time:
            # A trial's first epoch also holds its start-up (a worker, imports, data), which every trial
            # pays once: it is kept apart from the later epochs.
            samples = self._first_epoch_seconds if last_epoch == 0 else self._epoch_seconds
            samples.append((now - last_time) / (epoch - last_epoch))
        self._epochs[trial_id] = (epoch, float(metrics.fitness), now)
        self._estimate_once()
        if self.tty:
            self._draw()

    def finished(self, trial_id: str, metrics: Metrics, seconds: float) -> None:
        """A trial ended after ``seconds`` of wall time (start to result)."""
        self.running = max(0, self.running - 1)
        self._running_since.pop(trial_id, None)
        self._epochs.pop(trial_id, None)
        self.done += 1
        self._gen_finished += 1
        if metrics.status in FAILED_STATUSES:
            self.failed += 1
        elif self.best is None or standing(metrics) > self._best_rank:
            self.best, self._best_rank = metrics.fitness, standing(metrics)
        if seconds > 0:
            self._seconds.append(seconds)
            if metrics.status == "ok":
                self._whole_seconds.append(seconds)
        trained = metrics.epochs or (self.planned.epochs if self.planned is not None else 0)
        if seconds > 0 and trained > 0 and metrics.status not in FAILED_STATUSES:
            self._trained_epoch_seconds.append(seconds / trained)
        self._estimate_once()
        if self.tty:
            self._draw()
        else:
            self._log(f"{self.line()} | {trial_id} {metrics.status} fitness {metrics.fitness:.5f}")

    def end_generation(self) -> None:
        """The generation's trials are all done; the in-place line is finished with a newline."""
        self._trials_per_finished_gen.append(self._gen_trials)
        self.running = 0
        if self.tty and self._drawn and self._display is None:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def close(self) -> None:
        """The trials are over (or interrupted): hand a live display's terminal back."""
        if self._display is not None:
            self._draw()
            self._display.stop()
            self._display = None

    def remaining_trials(self) -> int:
        """Trials still to run in this generation plus an estimate for the generations after it."""
        in_gen = max(0, self._gen_trials - self._gen_finished)
        future = max(0, self.generations - self.generation - 1)
        history = self._trials_per_finished_gen or [self._gen_trials]
        per_gen = sum(history) / len(history)
        return in_gen + int(round(future * per_gen))

    def seconds_per_epoch(self) -> float | None:
        """Measured wall seconds of one trial-epoch, start-up shared out: the ended trials' median seconds
        per epoch they trained (a trial stopped at a rung counts its own epochs) once a trial has ended,
        before that a trial's median first epoch plus E - 1 median later epochs, over E; None before any
        epoch or trial (or without a budget)."""
        if self.planned is None:
            return None
        epochs = max(1, self.planned.epochs)
        if self._trained_epoch_seconds:
            return median(self._trained_epoch_seconds)
        first, later = median(self._first_epoch_seconds), median(self._epoch_seconds)
        if first is None:
            return later
        return (first + (epochs - 1) * (later if later is not None else first)) / epochs

    def remaining_epochs(self) -> int | None:
        """Trial-epochs still to run: the evolution's (less what running trials have done) and validation."""
        if self.planned is None:
            return None
        done_now = sum(epoch for epoch, _, _ in self._epochs.values())
        return max(0, self.remaining_trials() * self.planned.epochs - done_now) + self.planned.validation

    def eta_seconds(self) -> float | None:
        """Estimated seconds to the end of the run (validation included with a budget); None before the
        first epoch or trial has given a speed."""
        per_epoch, left = self.seconds_per_epoch(), self.remaining_epochs()
        if per_epoch is not None and left is not None:
            return per_epoch * left / self._concurrency
        if not self._seconds:
            return None
        mean = sum(self._seconds) / len(self._seconds)
        return mean * self.remaining_trials() / self._concurrency

    def _estimate_once(self) -> None:
        # Printed once a later epoch or a whole trial has been timed: a first epoch alone is mostly start-up.
        if self._estimated or self.planned is None or not (self._trained_epoch_seconds or self._epoch_seconds):
            return
        self._estimated = True
        self._log(f"estimated wall time of the whole run: {format_duration(self.eta_seconds())} "
                  f"({self.remaining_epochs()} trial-epochs left at {seconds_text(self.seconds_per_epoch())} "
                  f"each, {self._concurrency} at once)")

    def slow(self) -> list[tuple[str, float]]:
        """(trial id, seconds) of the running trials far past the median duration, longest first."""
        return slow(self._running_since, self._whole_seconds, self._clock())

    def tick(self) -> None:
        """Called while trials run: redraw a terminal's line now and then; warn once per slow trial."""
        now = self._clock()
        if self.tty and now - self._ticked >= TICK_S:
            self._ticked = now
            self._draw()
        if self._heartbeat is None:
            self._heartbeat = now
        if self.live and not self.tty and self._running_since and now - self._heartbeat >= HEARTBEAT_S:
            self._heartbeat = now
            trials = ", ".join(self._trial_text(*row) for row in self.running_trials())
            self._log(f"running: {trials} | {self.line()}")
        for trial_id, seconds in self.slow():
            if not self.tty and trial_id not in self._warned_slow:
                self._warned_slow.add(trial_id)
                LOGGER.warning("trial %s has run %s, far longer than the median %s", trial_id,
                               format_duration(seconds), format_duration(median(self._whole_seconds)))

    def running_trials(self) -> list[tuple[str, int | None, float | None, float]]:
        """(trial id, epoch or None, latest fitness or None, seconds running) of each running trial."""
        now = self._clock()
        rows = []
        for trial_id, since in sorted(self._running_since.items()):
            epoch, fitness, _ = self._epochs.get(trial_id, (None, None, 0.0))
            rows.append((trial_id, epoch, fitness, now - since))
        return rows

    def _trial_text(self, trial_id: str, epoch: int | None, fitness: float | None, seconds: float) -> str:
        if epoch is None:
            return f"{trial_id} {format_duration(seconds)}, no epoch reported"
        of = f"/{self.planned.epochs}" if self.planned is not None else ""
        return f"{trial_id} epoch {epoch}{of} fitness {fitness:.5f} ({format_duration(seconds)})"

    def line(self) -> str:
        best = "-" if self.best is None else f"{self.best:.5f}"
        budget = ""
        if self.planned is not None:
            budget = f" of {'' if self.planned.exact else '<='}{self.planned.trials}"
        text = (f"gen {self.generation + 1}/{self.generations}"
                f" | trials {self.done}/{self.running}/{self.failed}{budget}"
                f" | best {best} | ETA {format_duration(self.eta_seconds())}")
        if self.note:
            text += f" | {self.note}"
        late = self.slow()
        if late:
            more = f" +{len(late) - 1}" if len(late) > 1 else ""
            text += (f" | slow: {late[0][0]} {format_duration(late[0][1])}{more} "
                     f"(median {format_duration(median(self._whole_seconds))})")
        return text

    def _draw(self) -> None:
        if self.live:
            if self._display is None:
                from evolve.output.console import LiveDisplay

                self._display = LiveDisplay(self.stream)
                self._display.start()
            self._display.update(self.line(), [self._trial_text(*row) for row in self.running_trials()])
            self._drawn = True
            return
        # Carriage return plus erase-to-end-of-line redraws the same terminal line.
        self.stream.write("\r" + self.line() + "\x1b[K")
        self.stream.flush()
        self._drawn = True
