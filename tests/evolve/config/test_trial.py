"""Tests of evolve/config/trial.py: the ``TrialSpec`` every trial of a run gets, and what
``TrialConfig.from_any`` accepts."""
from __future__ import annotations

import dataclasses
import pickle

import pytest

from detector.config import TrainConfig
from evolve.config.trial import SurrogateOptions, TrialConfig, TrialSpec
from evolve.errors import ConfigError


def test_a_trial_spec_is_frozen_and_gives_each_trial_its_folder_and_seed(tmp_path):
    cfg = TrialConfig(epochs=3, seed=7, surrogate=SurrogateOptions(landscape="rugged"))
    spec = TrialSpec(trainer="surrogate", cfg=cfg, run_dir=str(tmp_path), nproc=2, cpus_per_trial=4.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.nproc = 1  # type: ignore[misc]
    one = spec.for_trial("g001i002")
    assert (one.project, one.name, one.seed) == (str(tmp_path / "trials"), "g001i002", 7)
    assert one.exist_ok and not one.progress and one.epochs == 3
    assert one.surrogate is cfg.surrogate  # typed options travel as they are, not rebuilt from a dict
    assert spec.for_trial("val-top1-s9", seed=9).seed == 9
    assert cfg.name == "trial" and cfg.seed == 7  # the run's config is left as it was
    # Ray ships it to the workers by pickling.
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_replace_checks_the_changed_values():
    with pytest.raises(ConfigError, match="--epochs"):
        TrialConfig().replace(epochs=0)


def test_from_any_refuses_a_foreign_configs_settings_by_name():
    with pytest.raises(ConfigError, match=r"^trial config: TrainConfig has settings a TrialConfig lacks: "
                                          r"amp, autoanchor, .*cos_lr, .*; pass a TrialConfig") as caught:
        TrialConfig.from_any(TrainConfig(epochs=4, cache_dir="/somewhere", cos_lr=True))
    assert "cache_dir" not in str(caught.value)  # a TrialConfig has it: the detector's image cache
    with pytest.raises(ConfigError, match=r"^trial config: dict has settings a TrialConfig lacks: cos_lr; "):
        TrialConfig.from_any({"epochs": 2, "cos_lr": True})
    cfg = TrialConfig.from_any({"epochs": 4, "cache_dir": "/somewhere", "extra": {"mine": 1}})
    assert (cfg.epochs, cfg.cache_dir, cfg.extra) == (4, "/somewhere", {"mine": 1})
    assert TrialConfig.from_any({"epochs": 2, "surrogate": {"noise": 0.1}}).surrogate.noise == 0.1
    assert TrialConfig.from_any(cfg.to_dict()) == cfg  # a DDP job file's config comes back as it was


def test_surrogate_options_in_extra_are_refused_not_ignored():
    words = r"^trial config: surrogate options in extra\['surrogate'\] reach no trainer; use TrialConfig\(surrogate="
    with pytest.raises(ConfigError, match=words):
        TrialConfig(extra={"surrogate": {"seconds": 0.3}})
    with pytest.raises(ConfigError, match=words):
        TrialConfig.from_any({"epochs": 2, "extra": {"surrogate": {"noise": 0.1}}})
    assert TrialConfig(extra={"mine": {"seconds": 0.3}}).surrogate.seconds == 0.0  # a user's own key passes
