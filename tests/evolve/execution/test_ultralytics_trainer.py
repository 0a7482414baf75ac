"""Tests of --trainer ultralytics (evolve/execution/ultralytics_trainer.py, ultralytics_inputs.py): its key
set and files, the inputs handed to Ultralytics, the refusals before any run folder exists, one trial
trained in this process, and tiny evolutions on the session's Ray (a 2x2 one and one whose trials fail)."""
from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

import hyps
import orchestrate
from detector.errors import DataError
from evolve.config import config_from_argv
from evolve.config.trial import TrialConfig
from evolve.contract import fitness
from evolve.driver import run
from evolve.errors import ConfigError
from evolve.output.records import LEAD_COLUMNS, TAIL_COLUMNS, RunRecords
from evolve.search.keyset import ULTRALYTICS
from evolve.search.space import SearchSpace, load_meta

ultralytics = pytest.importorskip("ultralytics")

from evolve.execution.ultralytics_inputs import load_data, resolve_model  # noqa: E402
from evolve.execution.ultralytics_trainer import Diverged, _Epochs, metrics_of, train  # noqa: E402

TINY = ["--trainer", "ultralytics", "--model", "yolov8n.yaml", "--imgsz", "64", "--epochs", "1", "--batch", "8",
        "--workers", "0", "--seed", "3"]


def config(argv: list[str]):
    return config_from_argv(argv)


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        orchestrate.main(argv)
    return exc.value.code, capsys.readouterr().err


# -- key set and files ------------------------------------------------------------------------------------

def test_shipped_hyp_file_holds_ultralytics_defaults_and_loads_in_ultralytics():
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

    path = hyps.path(hyps.HYP_ULTRALYTICS)
    hyp = ULTRALYTICS.load(path)
    assert list(hyp) == list(ULTRALYTICS.keys)
    assert {k: DEFAULT_CFG_DICT[k] for k in hyp if k != "optimizer"} == {k: v for k, v in hyp.items()
                                                                         if k != "optimizer"}
    assert hyp["optimizer"] == "SGD"  # never auto, which would override lr0 and momentum
    args = get_cfg(cfg=str(path))  # Ultralytics' own loading and type checks of a cfg file
    assert (args.lr0, args.close_mosaic, args.optimizer) == (0.01, 10, "SGD")


def test_search_space_evolves_every_key_but_copy_paste_and_the_optimizer():
    space = SearchSpace.load(hyps.path(hyps.META_ULTRALYTICS), hyps.path(hyps.HYP_ULTRALYTICS), ULTRALYTICS)
    assert set(ULTRALYTICS.keys) - set(space.keys) == {"copy_paste", "optimizer"}
    hyp = space.decode([1.0] * len(space))
    assert hyp["optimizer"] == "SGD" and isinstance(hyp["close_mosaic"], int) and hyp["lr0"] == 0.1


def test_a_named_choice_cannot_be_evolved_as_a_number_or_hold_an_unknown_name(tmp_path):
    meta = yaml.safe_load(hyps.path(hyps.META_ULTRALYTICS).read_text())
    meta["optimizer"] = {"evolve": True, "low": 0, "high": 1}
    bad = tmp_path / "meta.yaml"
    bad.write_text(yaml.safe_dump(meta))
    with pytest.raises(ConfigError, match="key 'optimizer': names a choice"):
        load_meta(bad, ULTRALYTICS)
    with pytest.raises(ConfigError, match="key 'optimizer' must be one of SGD"):
        ULTRALYTICS.validate({"optimizer": "auto"}, source="h.yaml")


def test_a_hyp_file_of_ultralytics_own_tuner_loads_and_reaches_ultralytics(tmp_path, tiny_data):
    from ultralytics.cfg import get_cfg
    from ultralytics.engine.tuner import Tuner

    from evolve.execution.ultralytics_trainer import trainer_args

    space = Tuner({"project": str(tmp_path / "tune"), "data": str(tiny_data)}, model=object()).space
    assert "cls_pw" in space and set(space) <= set(ULTRALYTICS.keys)
    tuned = {k: (b[0] + b[1]) / 2 for k, b in space.items()}
    tuned["close_mosaic"] = round(tuned["close_mosaic"])
    path = tmp_path / "best_hyperparameters.yaml"  # what the tuner writes: the keys it searched
    path.write_text(yaml.safe_dump(tuned, sort_keys=False))
    hyp = ULTRALYTICS.load(path)
    assert hyp["cls_pw"] == 0.5 and hyp["close_mosaic"] == 5
    args = trainer_args(hyp, TrialConfig(model="yolov8n.yaml", device="cpu"), tiny_data, embedded=True)
    assert args["cls_pw"] == 0.5 and get_cfg(overrides=args).cls_pw == 0.5  # Ultralytics' own checks


def test_a_key_unknown_to_the_installed_ultralytics_is_left_out_at_its_default_else_refused():
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

    from evolve.execution.ultralytics_inputs import supported_hyps

    version = ultralytics.__version__
    hyp = ULTRALYTICS.default_hyp()
    assert supported_hyps(hyp, DEFAULT_CFG_DICT, version) == hyp  # this version knows the whole key set
    older = set(DEFAULT_CFG_DICT) - {"cls_pw"}  # an Ultralytics from before cls_pw
    args = supported_hyps(hyp, older, version)
    assert list(args) == [k for k in ULTRALYTICS.keys if k != "cls_pw"]
    assert get_cfg(overrides=args).cls_pw == 0.0  # leaving it out trains what the records say
    with pytest.raises(ValueError) as err:
        supported_hyps({**hyp, "cls_pw": 0.25}, older, version)
    assert str(err.value).startswith(f"hyp 'cls_pw' = 0.25: Ultralytics {version} has no such argument")


# -- inputs ----------------------------------------------------------------------------------------------

def test_a_relative_data_path_is_resolved_against_the_yaml_folder(tmp_path, monkeypatch):
    from PIL import Image

    (tmp_path / "set" / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "set" / "images" / "a.jpg")
    data = tmp_path / "set" / "data.yaml"
    data.write_text("path: .\ntrain: images\nval: images\nnames: [a]\ndownload: bash get.sh\n")
    monkeypatch.chdir(tmp_path)
    content = load_data("set/data.yaml")
    assert content["path"] == str((tmp_path / "set").resolve())
    assert "download" not in content and content["train"] == "images"
    data.write_text("path: ../nowhere\ntrain: images\nval: images\nnames: [a]\n")
    with pytest.raises(DataError, match="key 'path': folder not found"):
        load_data(data)


def test_models_are_built_from_yaml_or_read_locally_never_downloaded(tmp_path):
    assert resolve_model("yolov8n.yaml") == "yolov8n.yaml"
    assert resolve_model("n") == "yolo11n.yaml"
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"x")
    assert resolve_model(str(weights)) == str(weights)
    for name in ("yolo11n.pt", "yolo11n", "https://example.com/m.pt"):
        with pytest.raises(ConfigError, match="nothing is downloaded here"):
            resolve_model(name)
    with pytest.raises(ConfigError, match="no such model YAML"):
        resolve_model("yolo99z.yaml")


@pytest.mark.parametrize("flags, message", [
    (["--model", "yolo11n.pt"], "--model yolo11n.pt: not a local file"),
    (["--gpus-per-trial", "2"], "--gpus-per-trial 2: --trainer ultralytics trains each trial on one GPU"),
    (["--max-images", "4"], "--max-images is not supported"),
])
def test_refusals_are_one_line_exit_2_before_any_run_folder(flags, message, tmp_path, capsys):
    code, err = cli([*TINY, *flags, "--project", str(tmp_path / "runs")], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_missing_package_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # what an environment without it looks like
    code, err = cli([*TINY, "--project", str(tmp_path / "runs")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "the 'ultralytics' package is not installed" in err and 'pip install -e ".[ultralytics]"' in err
    assert not (tmp_path / "runs").exists()


def test_the_detector_refuses_an_ultralytics_model(capsys):
    code, err = cli(["--model", "yolov8n.yaml"], capsys)
    assert code == 2 and "--model must be one of n, s, m for --trainer detector" in err


def test_validation_every_epoch_only_under_early_stopping(tmp_path):
    from evolve.config import RayConfig
    from evolve.execution.runner import TrialRunner

    from evolve.execution.asha import epoch_asha

    cfg = TrialConfig(epochs=4)
    for trainer in ("ultralytics", "detector"):
        for scheduler, val_every in ((None, 0), (epoch_asha(4, 1, 3), 1)):
            runner = TrialRunner(RayConfig(), trainer, cfg, tmp_path, scheduler=scheduler)
            assert runner.trial_spec().cfg.val_every == val_every, trainer


# -- results ---------------------------------------------------------------------------------------------

def test_fitness_is_ours_from_ultralytics_validation_results():
    m = metrics_of({"metrics/precision(B)": 0.5, "metrics/recall(B)": 0.4, "metrics/mAP50(B)": 0.6,
                    "metrics/mAP50-95(B)": 0.3, "val/box_loss": 1.2, "val/cls_loss": 0.8, "fitness": 0.3}, 3)
    assert m.fitness == pytest.approx(0.1 * 0.6 + 0.9 * 0.3) and m.fitness != 0.3
    assert (m.precision, m.recall, m.box_loss, m.cls_loss, m.epochs, m.status) == (0.5, 0.4, 1.2, 0.8, 3, "ok")
    assert metrics_of({"metrics/mAP50(B)": math.nan}, 1).status == "diverged"


def test_non_finite_losses_stop_the_trial_and_unvalidated_epochs_are_not_reported():
    import torch

    reports = []
    epochs = _Epochs(lambda e, m: reports.append(e))
    trainer = SimpleNamespace(epoch=0, epochs=3, args=SimpleNamespace(val=False), metrics={},
                              loss=torch.tensor(1.0), tloss={"box": torch.tensor(0.5)})
    epochs.on_train_epoch_end(trainer)
    epochs.on_fit_epoch_end(trainer)  # epoch 1 of 3, not validated
    trainer.epoch = 2
    epochs.on_fit_epoch_end(trainer)  # the last epoch is always validated
    assert reports == [3]
    trainer.tloss = {"box": torch.tensor(float("nan"))}
    with pytest.raises(Diverged):
        epochs.on_train_epoch_end(trainer)


def test_one_trial_in_this_process_reports_each_epoch_and_prints_nothing(tiny_data, tmp_path, capfd, caplog):
    cfg = TrialConfig(data=str(tiny_data), model="yolov8n.yaml", epochs=2, imgsz=64, batch=8, workers=0,
                      project=str(tmp_path), name="t", val_every=1)
    reports = []
    with caplog.at_level(logging.INFO):
        m = train(ULTRALYTICS.default_hyp(), cfg, lambda e, metrics: reports.append((e, metrics)))
    assert [e for e, _ in reports] == [1, 2] and m == reports[-1][1] and m.status == "ok"
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert any(r.name.startswith("ultralytics") for r in caplog.records)
    results = pd.read_csv(tmp_path / "t" / "results.csv")
    assert results["metrics/mAP50-95(B)"].iloc[-1] == pytest.approx(m.map50_95, abs=1e-5)
    assert not (tmp_path / "t" / "weights").exists()  # no weights kept unless asked


def test_a_2x2_evolution_writes_records_with_ultralytics_keys(ray_address, tiny_data, tmp_path):
    run_dir = run(config([*TINY, "--data", str(tiny_data), "--generations", "2", "--population", "2",
                          "--project", str(tmp_path), "--address", ray_address]))
    df = pd.read_csv(run_dir / "evolve.csv")
    assert list(df.columns) == [*LEAD_COLUMNS, *ULTRALYTICS.keys, *TAIL_COLUMNS]
    assert sorted(df["generation"].unique()) == [0, 1] and len(df) >= 3
    assert (df["status"] == "ok").all() and (df["optimizer"] == "SGD").all()
    for _, row in df.iterrows():
        assert row["fitness"] == pytest.approx(fitness(row["metrics/mAP_0.5"], row["metrics/mAP_0.5:0.95"]))
        trial = run_dir / "trials" / row["trial_id"]
        results = pd.read_csv(trial / "results.csv")  # Ultralytics' own record of the same validation
        assert row["metrics/mAP_0.5"] == pytest.approx(results["metrics/mAP50(B)"].iloc[-1], abs=1e-5)
        assert "Ultralytics" in (trial / "trial.log").read_text()
        assert yaml.safe_load((trial / "data.yaml").read_text())["path"] == str(Path(tiny_data).parent)
    assert len(RunRecords(run_dir, ULTRALYTICS).rows()) == len(df)  # read back with its key set
    from ultralytics.cfg import get_cfg

    best = yaml.safe_load((run_dir / "hyp_evolve.yaml").read_text())
    assert list(best) == list(ULTRALYTICS.keys)
    args = get_cfg(cfg=str(run_dir / "hyp_evolve.yaml"))  # loads in Ultralytics as it is
    assert args.lr0 == best["lr0"] and args.optimizer == "SGD"
    population = yaml.safe_load((run_dir / "evolve_population.yaml").read_text())
    assert all(list(h) == list(ULTRALYTICS.keys) for h in population.values())
    assert (run_dir / "evolve.png").is_file()


def test_trials_that_fail_are_recorded_with_fitness_0(ray_address, tiny_data, tmp_path):
    # A device no machine has passes the checks made before the run (a broken model no longer does), but
    # every trial raises. --max-failed-generations 0: record the failures instead of stopping the run on them
    run_dir = run(config([*TINY, "--device", "cuda:7", "--data", str(tiny_data), "--generations", "1",
                          "--population", "2", "--project", str(tmp_path / "runs"), "--address", ray_address,
                          "--max-failed-generations", "0"]))
    df = pd.read_csv(run_dir / "evolve.csv")
    assert len(df) == 2 and (df["status"] == "failed").all() and (df["fitness"] == 0).all()
    assert df["reason"].str.contains("Invalid CUDA").all()
    log = (run_dir / "trials" / df["trial_id"][0] / "trial.log").read_text()
    assert "trial failed" in log and "Invalid CUDA" in log
    assert not (run_dir / "hyp_evolve.yaml").exists()  # no trial finished well: no best hyps


def test_optimizer_flag_overrides_the_hyp_files_named_optimizer(tiny_data):
    from evolve.execution.ultralytics_trainer import trainer_args

    hyp = ULTRALYTICS.validate(yaml.safe_load(hyps.path(hyps.HYP_ULTRALYTICS).read_text()), source="hyp")
    args = trainer_args(hyp, TrialConfig(model="yolov8n.yaml", device="cpu"), tiny_data, embedded=True)
    assert args["optimizer"] == hyp["optimizer"] == "SGD"  # --optimizer auto (default): the file's choice
    args = trainer_args(hyp, TrialConfig(model="yolov8n.yaml", device="cpu", optimizer="AdamW"), tiny_data,
                        embedded=True)
    assert args["optimizer"] == "AdamW"
