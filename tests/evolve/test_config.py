"""Tests of evolve/config/: validation naming flags, round trips through the checkpoint, resume merging, and
flags declared once in the dataclass fields."""
from __future__ import annotations

import pytest

from evolve.config import (
    EvolveConfig,
    GAConfig,
    RayConfig,
    SurrogateOptions,
    TrialConfig,
    default_elite,
    flag_paths,
    get_setting,
    resumed_config,
    settings,
)
from evolve.errors import ConfigError


def make(**ga) -> EvolveConfig:
    return EvolveConfig(ga=GAConfig(population=6, generations=3, **ga), train=TrialConfig(epochs=2),
                        trainer="surrogate")


def test_defaults_are_those_of_an_evolution():
    cfg = EvolveConfig()
    cfg.validate()
    assert (cfg.ga.population, cfg.ga.generations, cfg.seed) == (50, 300, 0)
    assert (cfg.project, cfg.name, cfg.trainer) == ("runs/evolve", "exp", "detector")
    # Trials neither draw progress bars nor save weights unless asked.
    assert cfg.train.progress is False and cfg.train.save_weights is False
    assert cfg.train.surrogate == SurrogateOptions(landscape="smooth", noise=0.0, seconds=0.0,
                                                   seconds_spread=0.0, failure_rate=0.0, seed=0)


@pytest.mark.parametrize("path, value, flag", [
    ("ga.population", 1, "--population"),
    ("ga.generations", 0, "--generations"),
    ("ga.elite", (2, -1), "--elite"),
    ("ga.tournament", (0, 2), "--tournament"),
    ("ga.crossover_rate", (1.5, 0.5), "--crossover-rate"),
    ("ga.mutation_rate", (0.5, -0.1), "--mutation-rate"),
    ("ga.mutation_sigma", 0.0, "--mutation-sigma"),
    ("ga.crossover", "two_point", "--crossover"),
    ("ray.cpus_per_trial", -1.0, "--cpus-per-trial"),
    ("ray.max_concurrent", 0, "--max-concurrent"),
    ("train.epochs", 0, "--epochs"),
    ("trainer", " ", "--trainer"),
    ("train.surrogate.landscape", "flat", "--surrogate-landscape"),
    ("train.surrogate.failure_rate", 1.5, "--surrogate-failure-rate"),
    ("train.surrogate.seconds_spread", 2.0, "--surrogate-spread"),
    ("train.surrogate.seconds", -1.0, "--surrogate-seconds"),
    ("train.surrogate.noise", float("nan"), "--surrogate-noise"),
    ("mode", "steady", "--mode"),
    ("ray.early_stop", "median", "--early-stop"),
    ("ray.grace_epochs", 0, "--grace-epochs"),
    ("ray.reduction_factor", 1.0, "--reduction-factor"),
    ("ray.workers_per_trial", 0, "--workers-per-trial"),
    ("ray.storage", " ", "--storage"),
])
def test_validate_names_the_flag(path, value, flag):
    cfg = make()
    *parents, last = path.split(".")
    holder = cfg
    for part in parents:
        holder = holder[part] if isinstance(holder, dict) else getattr(holder, part)
    if isinstance(holder, dict):
        holder[last] = value
    else:
        setattr(holder, last, value)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert flag in str(err.value) and "\n" not in str(err.value)


def test_asha_needs_epochs_after_the_grace_period():
    cfg = make()
    cfg.ray.early_stop, cfg.ray.grace_epochs = "asha", 2  # the trials run 2 epochs
    with pytest.raises(ConfigError, match=r"^--grace-epochs must be below --epochs \(2\) .*got 2$"):
        cfg.validate()
    cfg.ray.grace_epochs = 1
    cfg.validate()
    cfg.ray.early_stop, cfg.ray.grace_epochs = "none", 5  # without early stopping the grace is unused
    cfg.validate()


def test_an_elite_typed_by_the_user_must_stay_below_the_population():
    cfg = make(elite=(2, 6))
    cfg.validate()  # a default schedule: the GA caps it at population - 1
    cfg.explicit = frozenset({"--elite"})
    with pytest.raises(ConfigError, match=r"^--elite must stay below --population \(6\).*got 2,6$"):
        cfg.validate()


def test_workers_per_trial_must_fit_the_gpus_of_a_trial():
    cfg = make()
    cfg.ray.workers_per_trial, cfg.ray.gpus_per_trial = 2, 1.0
    with pytest.raises(ConfigError, match="--workers-per-trial 2 with --gpus-per-trial 1"):
        cfg.validate()


@pytest.mark.parametrize("population, elite",
                         [(2, (1, 1)), (4, (1, 1)), (6, (1, 1)), (8, (2, 2)), (12, (2, 3)), (20, (2, 5)), (50, (2, 5))])
def test_the_default_elite_schedule_fits_small_populations(population, elite):
    assert default_elite((2, 5), population) == elite
    GAConfig(population=population, elite=elite)  # accepted


def test_num_cpus_with_an_address_is_refused():
    cfg = make()
    cfg.ray.address, cfg.ray.num_cpus = "auto", 4
    with pytest.raises(ConfigError, match="--num-cpus"):
        cfg.validate()


def test_round_trip_through_a_plain_dict():
    cfg = make(elite=(1, 3), seed=7)
    cfg.explicit = frozenset({"--seed", "--elite"})
    cfg.ray = RayConfig(address="auto", max_concurrent=3, early_stop="asha", grace_epochs=1,
                        reduction_factor=2.0, workers_per_trial=2, storage="s3://bucket/runs")
    cfg.mode = "async"
    data = cfg.to_dict()
    assert data["ga"]["elite"] == (1, 3) and data["explicit"] == ["--elite", "--seed"]
    back = EvolveConfig.from_dict(data)
    assert back == cfg


def test_a_config_saved_before_async_mode_existed_loads_with_the_defaults():
    data = make().to_dict()
    del data["mode"]
    for name in ("workers_per_trial", "early_stop", "grace_epochs", "reduction_factor"):
        del data["ray"][name]
    back = EvolveConfig.from_dict(data)
    assert back.mode == "generational" and back.ray.early_stop == "none"
    assert back.ray.workers_per_trial is None


def test_from_dict_of_another_version_is_a_config_error():
    data = make().to_dict()
    data["ga"]["crossover_points"] = 2
    with pytest.raises(ConfigError, match=r"^ckpt\.pkl: saved configuration does not match"):
        EvolveConfig.from_dict(data, source="ckpt.pkl")
    data = make().to_dict()
    del data["train"]
    with pytest.raises(ConfigError, match="ckpt.pkl"):
        EvolveConfig.from_dict(data, source="ckpt.pkl")


def test_result_settings_leave_out_execution_and_folders():
    a, b = make(), make()
    b.ray = RayConfig(address="auto", cpus_per_trial=2.0)
    b.train.device, b.train.workers = "cpu", 0
    b.project, b.name, b.exist_ok, b.resume = "elsewhere", "x", True, "runs/evolve/exp"
    assert a.result_settings() == b.result_settings()
    b.train.epochs = 3
    assert a.result_settings() != b.result_settings()
    # Early stopping decides which trials finish: it is a result setting although RayConfig holds it.
    c = make()
    c.ray.early_stop = "asha"
    assert a.result_settings() != c.result_settings()
    assert c.result_settings()["early_stop"] == {"early_stop": "asha", "grace_epochs": 1,
                                                 "reduction_factor": 3.0}


def test_resume_keeps_saved_settings_except_generations_and_execution():
    saved = make()
    new = make()
    new.ga = GAConfig(population=8, generations=5, seed=3)
    new.ray = RayConfig(address="auto")
    new.train.device = "cpu"
    new.train.epochs = 9
    new.resume = "runs/evolve/exp"
    new.explicit = frozenset({"--population", "--generations", "--address", "--device", "--epochs"})
    merged, notes = resumed_config(saved, new)
    assert merged.ga.population == 6 and merged.ga.generations == 5 and merged.seed == 0
    assert merged.train.epochs == 2
    assert merged.ray.address == "auto" and merged.train.device == "cpu"
    assert merged.resume == "runs/evolve/exp"
    # The seed differs too but was not typed, so only the typed conflicts are reported.
    assert notes == ["--population 8 ignored: the resumed run keeps 6",
                     "--epochs 9 ignored: the resumed run keeps 2"]
    assert saved.ga.generations == 3  # the saved config itself is left alone


def test_resume_keeps_mode_and_early_stopping_but_takes_storage_and_ddp_workers():
    saved = make()
    saved.mode = "async"
    saved.ray = RayConfig(early_stop="asha", grace_epochs=1, reduction_factor=2.0)
    new = make()
    new.ray = RayConfig(storage="/shared/ray", workers_per_trial=2, reduction_factor=4.0)
    new.explicit = frozenset({"--mode", "--early-stop", "--reduction-factor", "--storage",
                              "--workers-per-trial"})
    merged, notes = resumed_config(saved, new)
    assert merged.mode == "async"
    assert (merged.ray.early_stop, merged.ray.grace_epochs, merged.ray.reduction_factor) == ("asha", 1, 2.0)
    assert merged.ray.storage == "/shared/ray" and merged.ray.workers_per_trial == 2
    assert notes == ["--early-stop none ignored: the resumed run keeps asha",
                     "--reduction-factor 4.0 ignored: the resumed run keeps 2.0",
                     "--mode generational ignored: the resumed run keeps async"]


def test_resume_without_generations_flag_keeps_the_saved_count():
    saved = make()
    new = make()
    new.ga = GAConfig(generations=300)
    merged, notes = resumed_config(saved, new)
    assert merged.ga.generations == 3 and notes == []


def test_every_flag_path_names_a_real_setting():
    cfg = make()
    for path in flag_paths():
        value = cfg
        for part in path.split("."):
            assert (part in value) if isinstance(value, dict) else hasattr(value, part), path
            value = value[part] if isinstance(value, dict) else getattr(value, part)
        assert get_setting(cfg, path) == value
    assert get_setting(cfg, "ga.elite") == (2, 5)
    assert get_setting(cfg, "train.surrogate.landscape") == "smooth"


def test_every_flag_is_declared_once_with_help():
    flags = [spec.flag for _, spec in settings()]
    assert len(flags) == len(set(flags)) and len(flags) >= 45
    assert all(spec.help and spec.flag.startswith("--") for _, spec in settings())


def test_ray_host_must_be_an_ip_of_an_embedded_ray():
    assert RayConfig(ray_host="0.0.0.0").ray_host == "0.0.0.0" and RayConfig().ray_host is None
    with pytest.raises(ConfigError, match=r"^--ray-host 'my-laptop': expected an IP address"):
        RayConfig(ray_host="my-laptop")
    with pytest.raises(ConfigError, match=r"^--address 'auto': --ray-host sets where an embedded Ray listens"):
        RayConfig(address="auto", ray_host="0.0.0.0")
