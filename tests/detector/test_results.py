"""Metrics and the fitness that selection uses: 0.1 * mAP50 + 0.9 * mAP50-95, nothing else."""
from __future__ import annotations

import math

import pytest

from detector.results import Metrics, fitness


def test_fitness_weights():
    assert fitness(0.5, 0.3) == pytest.approx(0.32)
    assert fitness(1.0, 0.0) == pytest.approx(0.1)
    assert fitness(math.nan, 0.3) == 0.0


def test_with_fitness_is_zero_unless_the_run_finished_or_was_stopped():
    assert Metrics(map50=0.5, map50_95=0.3).with_fitness().fitness == pytest.approx(0.32)
    assert Metrics(map50=0.5, map50_95=0.3, status="stopped").with_fitness().fitness == pytest.approx(0.32)
    assert Metrics(map50=0.5, map50_95=0.3, status="diverged").with_fitness().fitness == 0.0
    assert Metrics(map50=0.5, map50_95=0.3, status="failed").with_fitness().fitness == 0.0


def test_unknown_status_is_refused():
    with pytest.raises(ValueError, match="status must be one of"):
        Metrics(status="done")


def test_from_any_accepts_a_mapping_from_a_user_trainer():
    m = Metrics.from_any({"map50": 0.6, "map50_95": 0.4, "precision": 0.7, "extra": 1})
    assert m.fitness == pytest.approx(0.42) and m.precision == 0.7 and m.status == "ok"
    assert Metrics.from_any({"map50": 0.6, "map50_95": 0.4, "fitness": 0.9}).fitness == 0.9


def test_from_any_refuses_incomplete_or_other_results():
    with pytest.raises(ValueError, match="lacks map50_95"):
        Metrics.from_any({"map50": 0.6})
    with pytest.raises(TypeError, match="got float"):
        Metrics.from_any(0.5)
