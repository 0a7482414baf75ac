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
    ValidationConfig,
    config_from_argv,
    default_elite,
    flag_paths,
    get_setting,
    resumed_config,
    settings,
)
from evolve.config.fidelity import (
    early_stop,
    validation_epochs,
)
from evolve.config.run import TARGET_MARK
from evolve.config.winners import ValidationConfig
from evolve.errors import ConfigError


def make(fidelity: str = "prefix", **ga) -> EvolveConfig:
    return EvolveConfig(ga=GAConfig(population=6, generations=3, **ga), train=TrialConfig(epochs=2),
                        trainer="surrogate", fidelity=fidelity)


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


@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "../x", "/tmp/x", "a\0b"])
def test_a_run_name_is_one_folder_name_inside_the_project(name):
    cfg = make()
    cfg.name = name
    with pytest.raises(ConfigError, match=r"^--name must be one folder name inside --project .*, got "):
        cfg.validate()


@pytest.mark.parametrize("seed", [-1, 2**32, 2**64, 1.5, True])
def test_a_seed_outside_numpys_range_is_refused(seed):
    with pytest.raises(ConfigError, match=r"^--seed must be a whole number from 0 to 4294967295"):
        make(seed=seed)


def test_seeds_at_the_top_of_the_range_leave_room_for_the_validation_seeds():
    import numpy as np

    make(seed=np.int64(7)).validate()  # a numpy integer is a whole number too
    cfg = make(seed=2**32 - 4)
    cfg.validate()  # validation seeds 2**32 - 3 ... 2**32 - 1 (3 by default)
    cfg.validation.seeds = 4
    with pytest.raises(ConfigError, match="validation seeds run to 4294967296"):
        cfg.validate()


def test_asha_needs_epochs_after_the_grace_period():
    cfg = make(fidelity="compressed")
    cfg.ray.early_stop, cfg.ray.grace_epochs = "asha", 2  # the trials run 2 epochs
    with pytest.raises(ConfigError, match=r"^--grace-epochs must be below --epochs \(2\) .*got 2$"):
        cfg.validate()
    cfg.ray.grace_epochs = 1
    cfg.validate()
    cfg.ray.early_stop, cfg.ray.grace_epochs = "none", 5  # without early stopping the grace is unused
    cfg.validate()


def test_an_elite_given_must_stay_below_the_population_and_the_default_fits_it():
    cfg = make()
    assert cfg.ga.elite is None and cfg.ga.elite_schedule == (1, 1)  # the default, fitted to 6
    cfg.ga.elite = (2, 6)
    with pytest.raises(ConfigError, match=r"^--elite must stay below --population \(6\).*got 2,6$"):
        cfg.validate()
    with pytest.raises(ConfigError, match=r"^--elite must stay below --population \(6\)"):
        GAConfig(population=6, elite=(2, 6))
    cfg.ga.elite = None
    cfg.ga.population = 3  # changed after construction: the default follows
    cfg.validate()
    assert cfg.ga.elite_schedule == (1, 1)


def test_trials_train_with_the_run_seed_however_the_config_was_made():
    cfg = EvolveConfig(ga=GAConfig(seed=7), train=TrialConfig(seed=1))
    assert cfg.train.seed == 7
    cfg.ga.seed = 8  # changed after construction: validate applies the policy again
    cfg.validate()
    assert cfg.train.seed == 8


@pytest.mark.parametrize("address, expected", [("", None), ("  ", None), (None, None), ("auto", "auto")])
def test_an_empty_address_means_an_embedded_ray(address, expected):
    assert RayConfig(address=address).address == expected
    cfg = make()
    cfg.ray.address = address
    cfg.validate()
    assert cfg.ray.address == expected


def test_explicit_flags_may_be_given_as_any_collection():
    cfg = EvolveConfig(explicit={"--generations"})  # type: ignore[arg-type]
    assert cfg.explicit == frozenset({"--generations"}) and isinstance(cfg.explicit, frozenset)


def test_workers_per_trial_must_fit_the_gpus_of_a_trial():
    cfg = make()
    cfg.ray.workers_per_trial, cfg.ray.gpus_per_trial = 2, 1.0
    with pytest.raises(ConfigError, match="--workers-per-trial 2 with --gpus-per-trial 1"):
        cfg.validate()


@pytest.mark.parametrize("population, elite",
                         [(2, (1, 1)), (4, (1, 1)), (6, (1, 1)), (8, (2, 2)), (12, (2, 3)), (20, (2, 5)), (50, (2, 5))])
def test_the_default_elite_schedule_fits_small_populations(population, elite):
    assert default_elite(population) == elite
    assert GAConfig(population=population).elite_schedule == elite
    GAConfig(population=population, elite=elite)  # accepted when given


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
    del data["mode"], data["fidelity"], data[TARGET_MARK]
    for name in ("workers_per_trial", "early_stop", "grace_epochs", "reduction_factor"):
        del data["ray"][name]
    back = EvolveConfig.from_dict(data)
    assert back.mode == "generational" and (back.ray.early_stop, early_stop(back)) == (None, "none")
    assert back.fidelity == "compressed"  # the only kind before --fidelity existed
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
    b.train.cache_dir = "/elsewhere"  # where decoded images are kept: no result changes, same fingerprint
    b.project, b.name, b.exist_ok, b.resume = "elsewhere", "x", True, "runs/evolve/exp"
    b.quiet, b.report = True, "runs/evolve/exp"  # what the console shows, a report: no result changes
    assert a.result_settings() == b.result_settings()
    b.train.epochs = 3
    assert a.result_settings() != b.result_settings()
    # Early stopping decides which trials finish: it is a result setting although RayConfig holds it.
    c = make()
    c.ray.early_stop = "asha"
    assert a.result_settings() != c.result_settings()
    # grace_epochs unset: prepare decides it before any fingerprint (tests/evolve/loops/test_plan.py)
    assert c.result_settings()["early_stop"] == {"early_stop": "asha", "grace_epochs": None,
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
    new.ray = RayConfig(storage="/shared/ray", workers_per_trial=2, reduction_factor=4.0, early_stop="none")
    new.explicit = frozenset({"--mode", "--early-stop", "--reduction-factor", "--storage",
                              "--workers-per-trial"})
    merged, notes = resumed_config(saved, new)
    assert merged.mode == "async"
    assert (merged.ray.early_stop, merged.ray.grace_epochs, merged.ray.reduction_factor) == ("asha", 1, 2.0)
    assert merged.ray.storage == "/shared/ray" and merged.ray.workers_per_trial == 2
    assert notes == ["--early-stop none ignored: the resumed run keeps asha",
                     "--reduction-factor 4.0 ignored: the resumed run keeps 2.0",
                     "--mode generational ignored: the resumed run keeps async"]


def test_resume_takes_quiet_from_the_new_command_and_report_excludes_resume_and_validate():
    saved, new = make(), make()
    new.quiet, new.explicit = True, frozenset({"--quiet"})
    merged, notes = resumed_config(saved, new)
    assert merged.quiet and notes == []
    for other in ({"resume": "runs/evolve/exp"}, {"validation": ValidationConfig(run_dir="runs/evolve/exp")}):
        cfg = make()
        cfg.report = "runs/evolve/exp"
        for name, value in other.items():
            setattr(cfg, name, value)
        with pytest.raises(ConfigError, match="^--report RUN_DIR only writes the report of a run: it "
                                              "excludes --resume and --validate$"):
            cfg.validate()


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
    assert get_setting(cfg, "ga.tournament") == (10, 2) and get_setting(cfg, "ga.elite") is None
    assert get_setting(cfg, "train.surrogate.landscape") == "smooth"


def test_every_flag_is_declared_once_with_help():
    flags = [spec.flag for _, spec in settings()]
    assert len(flags) == len(set(flags)) and len(flags) >= 45
    assert all(spec.help and spec.flag.startswith("--") for _, spec in settings())


def test_prefix_refuses_early_stop_none_from_python_and_the_command_line_alike(tmp_path):
    words = r"^--early-stop none: --fidelity prefix stops the hopeless trials at ASHA rungs; drop --early-stop"
    argv = ["--trainer", "surrogate", "--project", str(tmp_path), "--fidelity", "prefix"]
    with pytest.raises(ConfigError, match=words) as from_python:
        EvolveConfig(trainer="surrogate", project=str(tmp_path), fidelity="prefix",
                     ray=RayConfig(early_stop="none")).validate()
    with pytest.raises(ConfigError, match=words) as from_argv:
        config_from_argv([*argv, "--early-stop", "none"])
    assert str(from_python.value) == str(from_argv.value)
    by_default = EvolveConfig(trainer="surrogate", project=str(tmp_path), fidelity="prefix")
    by_default.validate()
    parsed = config_from_argv(argv)
    assert (parsed.ray.early_stop, by_default.ray.early_stop, early_stop(parsed)) == (None, None, "asha")
    assert parsed.result_settings() == by_default.result_settings()
    assert early_stop(config_from_argv([*argv, "--early-stop", "asha"])) == "asha"


def test_a_prefix_run_saved_with_the_old_default_none_resumes_under_asha_with_its_fingerprint(tmp_path):
    cfg = EvolveConfig(trainer="surrogate", project=str(tmp_path), fidelity="prefix")
    saved = cfg.to_dict()
    assert saved["ray"]["early_stop"] == "none"  # as every prefix run before saved its default
    assert cfg.result_settings()["early_stop"]["early_stop"] == "none"  # hence the same fingerprint
    back = EvolveConfig.from_dict(saved)
    back.validate()
    assert (back.ray.early_stop, early_stop(back), back.to_dict()) == (None, "asha", saved)
    compressed = EvolveConfig.from_dict(EvolveConfig(trainer="surrogate", project=str(tmp_path),
                                                     fidelity="compressed").to_dict())
    assert (compressed.ray.early_stop, early_stop(compressed)) == ("none", "none")


def test_prefix_grace_must_stay_below_the_target_length():
    cfg = make()
    cfg.train.epochs, cfg.ray.grace_epochs = 6, 6  # --epochs is the target
    with pytest.raises(ConfigError, match=r"^--grace-epochs must be below --epochs \(6\) for --early-stop asha "
                                          r"to stop anything, got 6$"):
        cfg.validate()
    cfg.ray.grace_epochs = 5
    cfg.validate()


def test_a_prefix_run_saved_when_its_trials_trained_the_validation_length_keeps_that_length():
    saved = make().to_dict()
    del saved[TARGET_MARK]  # as every prefix run saved before --epochs was its target
    back = EvolveConfig.from_dict(saved)
    assert (back.train.epochs, validation_epochs(back)) == (6, 6)  # 3 x --epochs 2, validated at the same
    saved["validation"]["epochs"] = 9
    assert EvolveConfig.from_dict(saved).train.epochs == 9
    saved["validation"]["top"] = 0  # validation off: its trials trained --epochs
    assert EvolveConfig.from_dict(saved).train.epochs == 2
    assert EvolveConfig.from_dict(saved, upgrade=False).train.epochs == 2
    assert TARGET_MARK in back.to_dict() and EvolveConfig.from_dict(back.to_dict()).train.epochs == 6


def test_a_resumed_prefix_run_may_be_validated_at_another_length():
    saved = make()
    new = make()
    new.validation = ValidationConfig(epochs=9)
    new.explicit = frozenset({"--validate-epochs"})
    merged, notes = resumed_config(saved, new)
    assert (merged.train.epochs, validation_epochs(merged), notes) == (2, 9, [])


def test_ray_host_must_be_an_ip_of_an_embedded_ray():
    assert RayConfig(ray_host="0.0.0.0").ray_host == "0.0.0.0" and RayConfig().ray_host is None
    with pytest.raises(ConfigError, match=r"^--ray-host 'my-laptop': expected an IP address"):
        RayConfig(ray_host="my-laptop")
    with pytest.raises(ConfigError, match=r"^--address 'auto': --ray-host sets where an embedded Ray listens"):
        RayConfig(address="auto", ray_host="0.0.0.0")


def test_early_stop_none_is_refused_under_prefix_only_for_a_run_that_starts(tmp_path):
    with pytest.raises(ConfigError, match=r"^--early-stop none: --fidelity prefix"):
        config_from_argv(["--early-stop", "none"])
    # A run folder resumed or validated keeps its own fidelity and early stopping (a compressed run's
    # old command line, with --resume added, still works).
    assert config_from_argv(["--resume", str(tmp_path), "--early-stop", "none"]).ray.early_stop == "none"
    assert config_from_argv(["--validate", str(tmp_path), "--early-stop", "none"]).ray.early_stop == "none"
