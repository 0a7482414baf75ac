"""Tests of evolve/contract.py: which trainer results are believed (``sanitised``) and how they rank."""
from __future__ import annotations

import math

import pytest

from evolve.contract import Metrics, invalid_reason, one_line, sanitised, selection_value, standing

NAN, INF = float("nan"), float("inf")


def good(**changes) -> Metrics:
    values = dict(precision=0.5, recall=0.25, map50=0.6, map50_95=0.4, box_loss=0.03, obj_loss=0.06,
                  cls_loss=0.01)
    values.update(changes)
    return Metrics(**values).with_fitness()


@pytest.mark.parametrize("changes, reason", [
    ({"map50": NAN}, "invalid result: map50 is nan"),
    ({"map50_95": INF}, "invalid result: map50_95 is inf"),
    ({"map50": 1.7}, "invalid result: map50 1.7 outside [0, 1]"),  # a wrapper returning 170 % / 100
    ({"map50_95": -0.5}, "invalid result: map50_95 -0.5 outside [0, 1]"),
    ({"precision": 87.5}, "invalid result: precision 87.5 outside [0, 1]"),
    ({"recall": -INF}, "invalid result: recall is -inf"),
    ({"box_loss": NAN}, "invalid result: box_loss is nan"),
    ({"map50": "0.5"}, None),  # a number given as text is still a number
    ({"map50": "high"}, "invalid result: map50 is not a number ('high')"),
    ({"map50_95": None}, "invalid result: map50_95 is not a number (None)"),
])
def test_metrics_that_make_no_sense_fail_the_trial_with_the_reason(changes, reason):
    m = good()
    for key, value in changes.items():
        setattr(m, key, value)
    if reason is None:
        assert invalid_reason(m) == "" and sanitised(m).status == "ok"
        return
    out = sanitised(m)
    assert (out.status, out.reason, out.fitness) == ("failed", reason, 0.0)
    assert m.status == "ok"  # the trainer's object is left as it was
    assert standing(out)[0] == 0 and selection_value(out) == 0.0


def test_a_nan_fitness_beside_valid_maps_is_a_failure_not_a_zero():
    m = good()
    m.fitness = NAN
    out = sanitised(m)
    assert (out.status, out.reason) == ("failed", "invalid result: fitness is nan")


def test_a_stopped_trial_is_judged_too_and_unreported_optional_values_are_fine():
    assert sanitised(good(map50=2.0, status="stopped")).status == "failed"
    m = good(precision=None, recall=None, box_loss=None)
    assert sanitised(m) is m and m.status == "ok"
    assert sanitised(good(map50=1.0, map50_95=0.0)).status == "ok"  # the bounds themselves are valid


def test_failed_and_diverged_are_worth_zero_whatever_they_claim():
    failed = Metrics(map50=0.9, map50_95=0.9, fitness=0.7, status="failed", reason="boom")
    diverged = Metrics(map50=NAN, fitness=NAN, status="diverged")
    assert sanitised(failed).fitness == 0.0 and sanitised(failed).reason == "boom"
    assert sanitised(diverged).fitness == 0.0 and sanitised(diverged).status == "diverged"
    assert math.isnan(diverged.fitness)


def test_a_reason_is_one_bounded_line():
    assert one_line("Traceback:\n  File x\nValueError: boom") == "Traceback: File x ValueError: boom"
    assert len(one_line("x" * 1000)) == 300 and one_line(None) == ""
