"""Tests of benchmarks/fidelity_transfer.py's planning: the equal budget and each strategy's flags, as
orchestrate.py's own parser reads them (the runs themselves are the benchmark, not a test)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import fidelity_transfer
import harness

sys.path.remove(str(ROOT / "benchmarks"))

from evolve.config import config_from_argv
from evolve.config.fidelity import trial_epochs, validation_epochs


def test_flags_after_a_double_dash_pass_through():
    assert harness.split_passthrough(["--data", "d.yaml", "--", "--hyp", "h.yaml"]) == (
        ["--data", "d.yaml"], ["--hyp", "h.yaml"])
    assert harness.split_passthrough(["--data", "d.yaml"]) == (["--data", "d.yaml"], [])


def test_compressed_gets_the_whole_generations_closest_to_the_budget():
    assert fidelity_transfer.generations_for(62, 7, 4) == 2  # 56 trial-epochs, the nearest to 62
    assert fidelity_transfer.generations_for(70, 7, 4) == 2  # 2.5 rounds to even
    assert fidelity_transfer.generations_for(90, 7, 4) == 3
    assert fidelity_transfer.generations_for(5, 7, 4) == 1  # never none


def test_each_strategy_trains_its_trials_at_its_length_and_validates_at_the_target(tmp_path):
    args, extra = fidelity_transfer.parse_args(["--data", "d.yaml", "--target", "20", "--compressed-epochs", "7",
                                                "--project", str(tmp_path), "--", "--optimizer", "SGD"])
    assert extra == ["--optimizer", "SGD"] and args.strategies == ["prefix", "compressed"]
    prefix = config_from_argv(fidelity_transfer.strategy_argv(args, "prefix", 4, extra))
    compressed = config_from_argv(fidelity_transfer.strategy_argv(args, "compressed", 2, extra))
    assert (prefix.fidelity, trial_epochs(prefix), prefix.ray.grace_epochs) == ("prefix", 20, 4)  # first rung after the 3-epoch warmup
    assert (compressed.fidelity, trial_epochs(compressed)) == ("compressed", 7)
    for cfg in (prefix, compressed):
        assert cfg.mode == "async" and cfg.train.optimizer == "SGD" and cfg.train.imgsz == 192
        assert (cfg.validation.top, cfg.validation.sentinels_wanted, cfg.validation.seeds) == (3, 2, 3)
        assert validation_epochs(cfg) == 20
    assert (prefix.ga.generations, compressed.ga.generations) == (4, 2)


def test_compressed_alone_needs_a_budget(capsys):
    with pytest.raises(SystemExit) as exc:
        fidelity_transfer.parse_args(["--data", "d.yaml", "--strategies", "compressed"])
    assert exc.value.code == 2 and "--budget is needed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fidelity_transfer.parse_args(["--data", "d.yaml", "--strategies", "scaled"])
    assert "--strategies takes prefix, compressed, got scaled" in capsys.readouterr().err
