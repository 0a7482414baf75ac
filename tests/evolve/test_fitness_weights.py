"""Tests for --fitness-weights: the weighted fitness (evolve/contract.py), its flag and checks
(evolve/config/trial.py), the trial result the GA selects on (evolve/execution/trainable.py), the records'
header and resume refusing a change (evolve/config/run.py, orchestrate.py)."""
from __future__ import annotations

import pytest

from evolve.config import config_from_argv
from evolve.config.trial import TrialConfig
from evolve.contract import Metrics, describe_weights
from evolve.errors import ConfigError
from evolve.execution.trainable import execute
from evolve.output.records import RunRecords, TrialRecord
from evolve.search.space import SearchSpace
from tests.test_orchestrate import FAST, cli, make_run, snapshot

WEIGHTS = (0.2, 0.3, 0.0, 0.5)


def test_reweighted_fitness_uses_all_four_metrics():
    m = Metrics(precision=0.8, recall=0.6, map50=0.5, map50_95=0.3).with_fitness()
    assert m.fitness == pytest.approx(0.1 * 0.5 + 0.9 * 0.3)
    assert m.reweighted(WEIGHTS).fitness == pytest.approx(0.2 * 0.8 + 0.3 * 0.6 + 0.5 * 0.3)
    failed = Metrics(precision=0.8, recall=0.6, status="failed").with_fitness().reweighted(WEIGHTS)
    assert failed.fitness == 0.0


def test_default_weights_change_nothing():
    m = Metrics(precision=0.8, recall=0.6, map50=0.5, map50_95=0.3, fitness=0.123)
    assert m.reweighted((0.0, 0.0, 0.1, 0.9)).fitness == 0.123
    assert describe_weights() == "0.1 * mAP_0.5 + 0.9 * mAP_0.5:0.95"


@pytest.mark.parametrize("weights, words", [((0.1, 0.9), "four weights"), ((0, 0, 0, 0), "positive sum"),
                                            ((0, 0, -0.1, 1), ">= 0")])
def test_bad_weights_are_refused_naming_the_flag(weights, words):
    with pytest.raises(ConfigError, match="--fitness-weights") as exc:
        TrialConfig(fitness_weights=weights)
    assert words in str(exc.value)


def test_trial_result_carries_the_weighted_fitness():
    hyp = SearchSpace.load().base
    cfg = TrialConfig(epochs=2, fitness_weights=WEIGHTS)
    seen = []
    metrics, error = execute("surrogate", hyp, cfg, lambda epoch, m: seen.append(m.fitness))
    assert error == ""
    expected = 0.2 * metrics.precision + 0.3 * metrics.recall + 0.5 * metrics.map50_95
    assert metrics.fitness == pytest.approx(expected)
    assert len(seen) == 2 and seen[-1] == pytest.approx(expected)  # early stopping sees the same number


def test_records_name_the_weights(tmp_path):
    records = RunRecords(tmp_path, weights=WEIGHTS)
    hyp = SearchSpace.load().base
    records.append(TrialRecord(0, 0, "g000i000", hyp, Metrics(precision=0.5, map50_95=0.3).reweighted(WEIGHTS)))
    header = (tmp_path / "hyp_evolve.yaml").read_text()
    assert "0.2 * metrics/precision + 0.3 * metrics/recall + 0.5 * mAP_0.5:0.95" in header


def test_cli_parses_the_weights():
    cfg = config_from_argv([*FAST, "--fitness-weights", "0,0.5,0,0.5"])
    assert cfg.train.fitness_weights == (0.0, 0.5, 0.0, 0.5)


@pytest.mark.parametrize("text", ["1,2", "a,b,c,d", "0,0,0,0", "0,0,-1,2"])
def test_cli_refuses_bad_weights_with_one_line(text, tmp_path, capsys):
    code, err = cli([*FAST, "--project", str(tmp_path), "--fitness-weights", text], capsys)
    assert code == 2 and err.count("\n") == 1 and "--fitness-weights" in err
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_changed_weights(tmp_path, capsys):
    run = make_run(tmp_path / "runs", ["--fitness-weights", "0,0,0.5,0.5"])
    before = snapshot(run)
    code, err = cli(["--resume", str(run), "--fitness-weights", "0,0,0.1,0.9"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--fitness-weights 0.0,0.0,0.1,0.9" in err and "0.0,0.0,0.5,0.5" in err
    assert snapshot(run) == before
