"""Tests of evolve/config/fidelity.py: how ``--fidelity`` sets a trial's length, its early stopping, its rungs
and the validation length."""
from __future__ import annotations

import pytest

from evolve.config import EvolveConfig, GAConfig, TrialConfig, ValidationConfig
from evolve.config.fidelity import (
    early_stop,
    grace_epochs,
    rung_epochs,
    rungs,
    trial_configs,
    trial_epochs,
    validation_epochs,
)


def make(fidelity: str = "prefix") -> EvolveConfig:
    """Trials of 2 epochs, the grace period left to the fidelity."""
    return EvolveConfig(ga=GAConfig(population=6, generations=3), train=TrialConfig(epochs=2),
                        trainer="surrogate", fidelity=fidelity)


def test_compressed_trials_run_epochs_with_the_early_stopping_asked_for():
    cfg = make(fidelity="compressed")
    assert (cfg.fidelity, trial_epochs(cfg), early_stop(cfg), rungs(cfg)) == ("compressed", 2, "none", [])
    cfg.ray.early_stop = "asha"
    ray_cfg, train_cfg = trial_configs(cfg)
    assert (ray_cfg.early_stop, train_cfg.epochs, rungs(cfg)) == ("asha", 2, [1])


def test_prefix_trials_run_the_target_length_under_asha_and_are_validated_at_it():
    cfg = make()
    assert cfg.fidelity == EvolveConfig().fidelity == "prefix"  # the default
    cfg.train.epochs, cfg.ray.grace_epochs = 6, 1
    cfg.validate()
    ray_cfg, train_cfg = trial_configs(cfg)
    assert (ray_cfg.early_stop, train_cfg.epochs, rungs(cfg), validation_epochs(cfg)) == ("asha", 6, [1, 3], 6)
    assert (cfg.ray.early_stop, cfg.train.epochs) == (None, 6)  # the run's own configs are left alone
    cfg.validation = ValidationConfig(epochs=20)  # validated longer than the trials: they are still --epochs
    cfg.ray.reduction_factor = 2.0
    assert (trial_epochs(cfg), rungs(cfg), validation_epochs(cfg)) == (6, [1, 2, 4], 20)
    cfg.fidelity = "compressed"
    cfg.validation = ValidationConfig()
    assert (trial_epochs(cfg), validation_epochs(cfg)) == (6, 18)  # a stand-in for a target 3x as long


def test_a_prefix_run_without_a_first_rung_trains_every_trial_to_the_end():
    cfg = make()  # --grace-epochs unset and not yet decided (a run decides it from the base hyp's warmup)
    cfg.validate()
    ray_cfg, train_cfg = trial_configs(cfg)
    assert (grace_epochs(cfg), rungs(cfg), ray_cfg.early_stop, train_cfg.epochs) == (None, [], "none", 2)
    assert EvolveConfig.from_dict(cfg.to_dict()).ray.grace_epochs is None


@pytest.mark.parametrize("grace, reduction, max_t, epochs", [
    (1, 3.0, 9, [1, 3]), (1, 3.0, 10, [1, 3, 9]), (2, 2.0, 20, [2, 4, 8, 16]), (1, 2.5, 10, [1, 3, 7]),
    (3, 3.0, 3, []), (4, 3.0, 9, [4]),
])
def test_rung_epochs_are_those_asha_judges_at(grace, reduction, max_t, epochs):
    assert rung_epochs(grace, reduction, max_t) == epochs
