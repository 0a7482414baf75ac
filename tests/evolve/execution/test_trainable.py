"""Tests of evolve/execution/trainable.py's conversions of metrics, one at each process boundary: a
trainer's result in the worker (``trial_metrics``) and a reported row in the driver
(``metrics_from_result``)."""
from __future__ import annotations

import math

import pytest

from evolve.contract import DEFAULT_FITNESS_WEIGHTS, Metrics
from evolve.execution.trainable import metrics_from_result, result_row, trial_metrics


def test_a_trainer_result_becomes_judged_metrics_with_the_runs_weights():
    m = trial_metrics({"map50": 0.6, "map50_95": 0.4, "precision": 0.8, "recall": 0.5}, (0.0, 1.0, 0.0, 0.0))
    assert m.status == "ok" and m.fitness == pytest.approx(0.5)  # recall only
    default = trial_metrics({"map50": 0.6, "map50_95": 0.4}, DEFAULT_FITNESS_WEIGHTS)
    assert default.fitness == pytest.approx(0.1 * 0.6 + 0.9 * 0.4)
    bad = trial_metrics({"map50": 60.0, "map50_95": 40.0}, DEFAULT_FITNESS_WEIGHTS)  # percentages
    assert (bad.status, bad.fitness) == ("failed", 0.0) and "map50 60 outside [0, 1]" in bad.reason
    with pytest.raises(TypeError):
        trial_metrics(0.5, DEFAULT_FITNESS_WEIGHTS)


def test_a_reported_row_comes_back_as_the_same_metrics_in_the_driver():
    m = Metrics(precision=0.7, recall=0.6, map50=0.5, map50_95=0.3, box_loss=0.02, fitness=0.32, epochs=3,
                seconds=1.5)
    row = result_row(m, 3, final=True)
    assert row["final"] is True and row["epoch"] == 3
    assert metrics_from_result(row) == m
    stopped = metrics_from_result(result_row(m, 2, final=False), status="stopped")
    assert stopped.status == "stopped" and stopped.fitness == pytest.approx(0.32)
    diverged = Metrics(status="diverged", box_loss=math.nan, reason="loss is nan")
    back = metrics_from_result(result_row(diverged, 1, final=True))
    assert (back.status, back.box_loss, back.reason) == ("diverged", 0.0, "loss is nan")  # Tune gets no NaN
