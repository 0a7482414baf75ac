"""Tests of evolve/progress.py: the status line, its counts, the ETA, and TTY versus log output."""
from __future__ import annotations

import io
import logging

import pytest

from evolve.contract import Metrics
from evolve.output.console import ERASE_LINE, ConsoleFormatter
from evolve.output.progress import Budget, Progress, format_duration


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def ok(fitness: float) -> Metrics:
    return Metrics(fitness=fitness, status="ok")


@pytest.mark.parametrize("seconds, text", [(None, "?"), (0, "0s"), (12.4, "12s"), (185, "3m05s"),
                                           (3720, "1h02m"), (-5, "0s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_counts_best_and_eta():
    lines: list[str] = []
    p = Progress(generations=3, stream=io.StringIO(), log=lines.append)
    p.start_generation(0, trials=4)
    assert p.line() == "gen 1/3 | trials 0/0/0 | best - | ETA ?"
    for _ in range(2):
        p.started()
    p.finished("g000i000", ok(0.25), seconds=10.0)
    p.finished("g000i001", Metrics(status="failed"), seconds=30.0)
    # mean 20 s; remaining 2 in this generation + 2 future generations x 4 trials = 10; 2 ran at once.
    assert p.remaining_trials() == 10
    assert p.eta_seconds() == pytest.approx(20.0 * 10 / 2)
    assert p.line() == "gen 1/3 | trials 2/0/1 | best 0.25000 | ETA 1m40s"
    assert lines == ["gen 1/3 | trials 1/1/0 | best 0.25000 | ETA 55s | g000i000 ok fitness 0.25000",
                     "gen 1/3 | trials 2/0/1 | best 0.25000 | ETA 1m40s | g000i001 failed fitness 0.00000"]


def test_future_generations_use_observed_trial_counts():
    p = Progress(generations=4, stream=io.StringIO(), log=lambda s: None)
    p.start_generation(0, trials=6)
    for i in range(6):
        p.started()
        p.finished(f"g000i00{i}", ok(0.1), seconds=1.0)
    p.end_generation()
    p.start_generation(1, trials=2)
    p.started()
    p.finished("g001i000", ok(0.3), seconds=1.0)
    # 1 left now, then 2 generations estimated at 6 trials each (the one finished generation).
    assert p.remaining_trials() == 1 + 12
    assert p.best == 0.3


def test_resumed_totals_carry_over():
    p = Progress(generations=2, stream=io.StringIO(), done_before=7, failed_before=2, best_before=0.5,
                 log=lambda s: None)
    p.start_generation(1, trials=3)
    p.started()
    assert p.line().startswith("gen 2/2 | trials 7/1/2 | best 0.50000 |")
    p.finished("g001i002", ok(0.4), seconds=2.0)
    assert (p.done, p.failed, p.best) == (8, 2, 0.5)


def test_a_stopped_trial_never_shows_as_best_while_a_finished_one_exists():
    p = Progress(generations=1, stream=io.StringIO(), log=lambda s: None)
    p.finished("a", Metrics(fitness=0.6, status="stopped"), seconds=1.0)
    assert p.best == 0.6  # the best there is, until a trial finishes
    p.finished("b", ok(0.2), seconds=1.0)
    p.finished("c", Metrics(fitness=0.9, status="stopped"), seconds=1.0)
    assert p.best == 0.2
    resumed = Progress(generations=1, stream=io.StringIO(), best_before=0.6, best_status_before="stopped",
                       log=lambda s: None)
    resumed.finished("d", ok(0.3), seconds=1.0)
    assert resumed.best == 0.3


def test_the_loop_note_is_shown_in_the_line():
    p = Progress(generations=1, stream=io.StringIO(), log=lambda s: None)
    p.note = "rung~final epoch 1 Spearman +0.62 (n 7)"
    assert p.line() == "gen 1/1 | trials 0/0/0 | best - | ETA ? | rung~final epoch 1 Spearman +0.62 (n 7)"


def test_tty_redraws_one_line_in_place():
    stream = FakeTTY()
    logged: list[str] = []
    p = Progress(generations=1, stream=stream, log=logged.append)
    assert p.tty
    p.start_generation(0, trials=1)
    p.started()
    p.finished("g000i000", ok(0.125), seconds=1.0)
    p.end_generation()
    out = stream.getvalue()
    assert logged == []  # on a terminal nothing goes to the log
    assert out.count("\n") == 1 and out.endswith("\n")
    frames = [f.replace("\x1b[K", "") for f in out.rstrip("\n").split("\r") if f]
    assert frames[0] == "gen 1/1 | trials 0/0/0 | best - | ETA ?"
    assert frames[1] == "gen 1/1 | trials 0/1/0 | best - | ETA ?"
    assert frames[-1] == "gen 1/1 | trials 1/0/0 | best 0.12500 | ETA 0s"


def test_not_a_tty_writes_nothing_to_the_stream():
    stream = io.StringIO()
    p = Progress(generations=1, stream=stream, log=lambda s: None)
    p.start_generation(0, trials=1)
    p.started()
    p.finished("g000i000", ok(0.1), seconds=1.0)
    p.end_generation()
    assert not p.tty and stream.getvalue() == ""


def test_default_log_goes_to_logging(caplog):
    caplog.set_level("INFO", logger="evolve.output.progress")
    p = Progress(generations=1, stream=io.StringIO())
    p.start_generation(0, trials=1)
    p.started()
    p.finished("g000i000", Metrics(status="diverged"), seconds=1.0)
    assert [r.getMessage() for r in caplog.records] == [
        "gen 1/1 | trials 1/0/1 | best - | ETA 0s | g000i000 diverged fitness 0.00000"]


def test_a_trial_running_far_longer_than_the_median_shows_on_the_line_and_warns_once(caplog):
    now = [0.0]
    p = Progress(generations=1, stream=io.StringIO(), log=lambda line: None)
    p._clock = lambda: now[0]
    p.start_generation(0, trials=3)
    for trial_id in ("a", "b", "hung"):
        p.started(trial_id, now[0])
    now[0] = 10.0
    p.finished("a", ok(0.5), 10.0)
    p.finished("b", ok(0.4), 10.0)
    assert "slow" not in p.line()
    now[0] = 19.0
    assert "slow" not in p.line()  # under twice the median
    now[0] = 125.0
    assert p.line().endswith(" | slow: hung 2m05s (median 10s)")
    with caplog.at_level("WARNING"):
        p.tick()
        p.tick()
    assert caplog.text.count("trial hung has run 2m05s, far longer than the median 10s") == 1
    p.finished("hung", Metrics(status="failed", reason="timeout: ended after 125 s"), 125.0)
    assert "slow" not in p.line()


def test_tick_redraws_a_terminal_line_while_nothing_finishes():
    now = [0.0]
    stream = FakeTTY()
    p = Progress(generations=1, stream=stream)
    p._clock = lambda: now[0]
    p.start_generation(0, trials=1)
    p.started("x", now[0])
    drawn = stream.getvalue().count("\r")
    now[0] = 5.0
    p.tick()
    p.tick()  # within TICK_S of the last redraw: nothing
    assert stream.getvalue().count("\r") == drawn + 1


# --- live mode: epochs of running trials, the budget and the cost, the heartbeat, the rich display -----

def budget(**kw):
    return Budget(**{"trials": 8, "epochs": 5, "validation_runs": 2, "validation_epochs": 15, "exact": False,
                     **kw})


def test_the_budget_line_counts_evolution_and_validation_trial_epochs():
    assert budget().line() == ("planned: at most 70 trial-epochs = evolution at most 8 trials x 5 epochs + "
                               "validation 2 runs x 15 epochs")
    assert Budget(12, 3).line() == "planned: 36 trial-epochs = evolution 12 trials x 3 epochs (no validation)"


def live_progress(now, lines, stream=None, **kw):
    p = Progress(generations=2, stream=stream or io.StringIO(), log=lines.append, live=True, planned=budget(),
                 **kw)
    p._clock = lambda: now[0]
    return p


def test_a_trial_stopped_at_a_rung_is_no_measure_of_a_whole_trial_s_length(caplog):
    now, lines = [0.0], []
    p = live_progress(now, lines)  # trials of 5 epochs
    p.start_generation(0, trials=2)
    p.started("full", now[0])
    p.started("cut", now[0])
    now[0] = 8.0
    p.finished("cut", Metrics(fitness=0.01, status="stopped", epochs=2), 8.0)  # stopped at epoch 2
    assert p.seconds_per_epoch() == pytest.approx(4.0)  # 8 s over the 2 epochs it trained, not over 5
    now[0] = 19.0
    with caplog.at_level("WARNING"):
        p.tick()
    assert "slow" not in p.line() and "far longer" not in caplog.text  # 19 s is no hang beside 8 s cut short
    now[0] = 20.0
    p.finished("full", Metrics(fitness=0.3, status="ok", epochs=5), 20.0)
    assert p.seconds_per_epoch() == pytest.approx(4.0)  # median of 4.0 and 4.0
    p.started("next", now[0])
    now[0] = 61.0
    assert p.line().endswith(" | slow: next 41s (median 20s)")  # the median of whole trials only


def test_epochs_of_running_trials_give_the_speed_the_eta_and_one_estimate_line():
    now, lines = [0.0], []
    p = live_progress(now, lines)
    assert lines == [budget().line()]  # before the first trial
    p.start_generation(0, trials=4)
    p.started("a", now[0])
    p.started("b", now[0])
    now[0] = 12.0
    p.epoch("a", 1, ok(0.2))  # the first epoch: 12 s, start-up included
    assert p.seconds_per_epoch() == pytest.approx(12.0)
    assert len(lines) == 1  # a first epoch alone is mostly start-up: no estimate yet
    now[0] = 16.0
    p.epoch("a", 2, ok(0.3))  # a later epoch: 4 s
    # per trial: 12 + 4 x 4 = 28 s over 5 epochs; left: (4 in this generation + 4 in the next) x 5 epochs,
    # less the 2 done, plus 30 of validation
    assert p.seconds_per_epoch() == pytest.approx(28.0 / 5)
    assert p.remaining_epochs() == (4 + 4) * 5 - 2 + 30
    assert p.eta_seconds() == pytest.approx(28.0 / 5 * 68 / 2)
    assert lines[1] == ("estimated wall time of the whole run: 3m10s (68 trial-epochs left at 5.6 s each, "
                        "2 at once)")
    assert p.running_trials() == [("a", 2, 0.3, 16.0), ("b", None, None, 16.0)]
    assert p.line() == "gen 1/2 | trials 0/2/0 of <=8 | best - | ETA 3m10s"
    now[0] = 30.0
    p.finished("a", ok(0.35), seconds=30.0)  # a whole trial now sets the speed: 30 s / 5 epochs
    assert p.seconds_per_epoch() == pytest.approx(6.0)
    assert len([line for line in lines if line.startswith("estimated")]) == 1  # printed once


def test_without_a_terminal_a_heartbeat_names_running_trials_at_most_once_a_minute():
    now, lines = [0.0], []
    p = live_progress(now, lines)
    p.start_generation(0, trials=2)
    p.started("g000i000", now[0])
    p.started("g000i001", now[0])
    p.tick()
    now[0] = 20.0
    p.epoch("g000i000", 3, ok(0.25))
    now[0] = 59.0
    p.tick()
    assert not [line for line in lines if line.startswith("running:")]
    now[0] = 61.0
    p.tick()
    p.tick()
    beats = [line for line in lines if line.startswith("running:")]
    assert len(beats) == 1
    assert beats[0].startswith("running: g000i000 epoch 3/5 fitness 0.25000 (1m01s), g000i001 1m01s, no "
                               "epoch reported | gen 1/2 | trials 0/2/0 of <=8")
    now[0] = 121.0
    p.tick()
    assert len([line for line in lines if line.startswith("running:")]) == 2


def test_the_plain_mode_has_no_heartbeat_and_no_budget():
    now, lines = [0.0], []
    p = Progress(generations=1, stream=io.StringIO(), log=lines.append)
    p._clock = lambda: now[0]
    p.start_generation(0, trials=1)
    p.started("x", now[0])
    p.tick()
    now[0] = 500.0
    p.epoch("x", 1, ok(0.1))
    p.tick()
    assert lines == [] and p.seconds_per_epoch() is None


def test_on_a_terminal_rich_draws_the_status_and_each_running_trial_and_logs_print_above(caplog):
    stream = FakeTTY()
    now, lines = [0.0], []
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter(erase=True))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        p = live_progress(now, lines, stream=stream)
        p.start_generation(0, trials=2)
        p.started("g000i000", now[0])
        p.started("g000i001", now[0])
        now[0] = 10.0
        p.epoch("g000i000", 2, ok(0.125))
        logging.getLogger("evolve.test").warning("a line from the run")
        assert handler.formatter.prefix == ""  # routed through the display while it runs
        p.close()
        assert handler.stream is stream and handler.formatter.prefix == ERASE_LINE
    finally:
        root.removeHandler(handler)
    out = stream.getvalue()
    assert "gen 1/2 | trials 0/2/0 of <=8" in out
    assert "g000i000 epoch 2/5 fitness 0.12500 (10s)" in out
    assert "g000i001 10s, no epoch reported" in out
    assert "warning: a line from the run" in out
    assert "\x1b[?25l" in out and out.rstrip().endswith("\x1b[?25h")  # cursor hidden while live, shown after
