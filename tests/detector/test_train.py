"""Tests of detector/train.py: a tiny real training run, its files and reports, resume, divergence,
out-of-memory and other failures, validation cadence and run-folder naming."""
import csv
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from detector.checkpoint import load_checkpoint, model_from_checkpoint
from detector.errors import DataError, HypError
from detector.hyp import DEFAULT_HYP
from detector.results import fitness
from detector.run_files import RESULTS_COLUMNS, increment_path
from detector.train import should_validate, train


def read_results(folder):
    with (folder / "results.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_trained_run_returns_ok_metrics(trained_run):
    m = trained_run.metrics
    assert m.status == "ok"
    assert m.epochs == 2
    assert all(math.isfinite(v) and v > 0 for v in (m.box_loss, m.obj_loss, m.cls_loss))
    assert all(0.0 <= v <= 1.0 for v in (m.precision, m.recall, m.map50, m.map50_95))
    assert m.fitness == pytest.approx(fitness(m.map50, m.map50_95))
    assert m.seconds > 0


def test_report_called_once_per_validated_epoch(trained_run):
    assert [epoch for epoch, _ in trained_run.reports] == [1, 2]
    assert [m.epochs for _, m in trained_run.reports] == [1, 2]
    last = trained_run.reports[-1][1]
    assert (last.map50, last.map50_95, last.box_loss) == (trained_run.metrics.map50,
                                                          trained_run.metrics.map50_95,
                                                          trained_run.metrics.box_loss)


def test_run_folder_has_weights_results_and_settings(trained_run):
    folder = trained_run.save_dir
    assert (folder / "weights" / "last.pt").is_file() and (folder / "weights" / "best.pt").is_file()
    rows = read_results(folder)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert tuple(rows[0]) == RESULTS_COLUMNS
    assert float(rows[1]["metrics/mAP_0.5"]) == pytest.approx(trained_run.metrics.map50, abs=1e-5)
    assert all(math.isfinite(float(r["train/box_loss"])) for r in rows)
    assert yaml.safe_load((folder / "hyp.yaml").read_text())["lr0"] == DEFAULT_HYP["lr0"]
    assert yaml.safe_load((folder / "cfg.yaml").read_text())["epochs"] == 2


def test_checkpoint_holds_ema_weights_and_training_state(trained_run):
    ckpt = load_checkpoint(trained_run.save_dir / "weights" / "last.pt")
    assert ckpt["epoch"] == 2
    assert ckpt["names"] == ["ellipse", "rectangle", "triangle", "cross"]
    assert ckpt["hyp"] == trained_run.hyp
    assert ckpt["cfg"]["epochs"] == 2 and ckpt["imgsz"] == 64
    assert tuple(ckpt["anchors"].shape) == (3, 3, 2)
    assert ckpt["optimizer"] is not None and ckpt["ema_updates"] >= 2
    assert ckpt["best_fitness"] >= 0.0
    model = model_from_checkpoint(ckpt)
    assert model.names == ckpt["names"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][key]), key
    # the EMA differs from the raw weights being trained
    assert any(not torch.equal(ckpt["model"][k], ckpt["train_model"][k]) for k in ckpt["model"]
               if ckpt["model"][k].dtype.is_floating_point)


def test_resume_continues_at_the_next_epoch(trained_run, tmp_path):
    folder = tmp_path / "exp"
    shutil.copytree(trained_run.save_dir, folder)
    cfg = trained_run.cfg
    reports = []
    resumed = type(cfg)(**{**cfg.to_dict(), "epochs": 3, "resume": str(folder / "weights" / "last.pt")})
    m = train(dict(trained_run.hyp), resumed, report=lambda e, metrics: reports.append(e))
    assert m.status == "ok" and m.epochs == 3
    assert reports == [3]
    assert [int(r["epoch"]) for r in read_results(folder)] == [1, 2, 3]
    ckpt = load_checkpoint(folder / "weights" / "last.pt")
    assert ckpt["epoch"] == 3
    assert ckpt["ema_updates"] > load_checkpoint(trained_run.save_dir / "weights" / "last.pt")["ema_updates"]


def test_resume_of_a_finished_run_is_an_error(trained_run, tmp_path):
    folder = tmp_path / "exp"
    shutil.copytree(trained_run.save_dir, folder)
    last = folder / "weights" / "last.pt"
    cfg = type(trained_run.cfg)(**{**trained_run.cfg.to_dict(), "resume": str(last)})
    with pytest.raises(DataError, match=r"last\.pt: already trained 2 of 2 epochs"):
        train(dict(trained_run.hyp), cfg)


@pytest.mark.parametrize("val_every", [1, 0])
def test_huge_learning_rate_diverges_without_raising(tiny_cfg, val_every):
    hyp = {**DEFAULT_HYP, "lr0": 1e6, "warmup_bias_lr": 1e6}
    reports = []
    m = train(hyp, tiny_cfg(epochs=2, val_every=val_every, save_weights=False),
              report=lambda e, metrics: reports.append(e))
    assert m.status == "diverged"
    assert m.fitness == 0.0 and m.map50 == 0.0
    assert reports == []  # a diverged validation is not reported as a result


def test_non_finite_training_loss_stops_the_run(tiny_cfg, monkeypatch):
    from detector import loss

    original = loss.DetectionLoss.__call__
    calls = []

    def nan_from_third_batch(self, preds, targets):
        calls.append(1)
        total, items = original(self, preds, targets)
        return (total * float("nan"), items) if len(calls) >= 3 else (total, items)

    monkeypatch.setattr(loss.DetectionLoss, "__call__", nan_from_third_batch)
    m = train(dict(DEFAULT_HYP), tiny_cfg(epochs=3, val_every=0, save_weights=False))
    assert m.status == "diverged" and m.fitness == 0.0
    assert m.epochs == 1  # 2 batches an epoch: the first batch of epoch 2 was the bad one
    assert len(calls) == 3  # stopped at once, no further batch


def test_cuda_out_of_memory_ends_the_run_as_failed(tiny_cfg, monkeypatch):
    from detector import loss

    def out_of_memory(self, preds, targets):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loss.DetectionLoss, "__call__", out_of_memory)
    m = train(dict(DEFAULT_HYP), tiny_cfg(save_weights=False))
    assert m.status == "failed" and m.fitness == 0.0


def test_other_exceptions_propagate(tiny_cfg, monkeypatch):
    from detector import loss

    def broken(self, preds, targets):
        raise RuntimeError("broken loss")

    monkeypatch.setattr(loss.DetectionLoss, "__call__", broken)
    with pytest.raises(RuntimeError, match="broken loss"):
        train(dict(DEFAULT_HYP), tiny_cfg(save_weights=False))


def test_validation_only_at_the_end_and_max_images(tiny_cfg, tmp_path, caplog):
    (tmp_path / "runs" / "exp").mkdir(parents=True)  # taken: the run goes to exp2
    reports = []
    with caplog.at_level(logging.INFO, logger="detector.train"):
        m = train(dict(DEFAULT_HYP), tiny_cfg(epochs=2, val_every=0, max_images=8, save_weights=False),
                  report=lambda e, metrics: reports.append(e))
    assert m.status == "ok" and m.epochs == 2
    assert reports == [2]
    folder = tmp_path / "runs" / "exp2"
    assert not (folder / "weights").exists()
    rows = read_results(folder)
    assert [r["metrics/mAP_0.5"] for r in rows][0] == ""
    assert rows[1]["metrics/mAP_0.5"] != ""
    assert "8 train / 8 val images" in caplog.text


def test_an_optimizer_in_the_hyps_overrides_the_config(tiny_cfg, caplog):
    with caplog.at_level(logging.INFO, logger="detector.train"):
        m = train({**DEFAULT_HYP, "optimizer": "Adam"}, tiny_cfg(epochs=1, val_every=0, max_images=8,
                                                                  save_weights=False, optimizer="SGD"))
    assert m.status == "ok" and "Adam (hyp)" in caplog.text and "SGD" not in caplog.text


def test_unknown_hyp_key_is_rejected_before_training(tiny_cfg):
    with pytest.raises(HypError, match="unknown hyperparameter key 'lr_zero'"):
        train({**DEFAULT_HYP, "lr_zero": 0.1}, tiny_cfg())


def test_missing_data_file_is_a_data_error(tiny_cfg, tmp_path):
    with pytest.raises(DataError, match="nope.yaml"):
        train(dict(DEFAULT_HYP), tiny_cfg(data=str(tmp_path / "nope.yaml")))


def test_increment_path(tmp_path):
    base = tmp_path / "exp"
    assert increment_path(base) == base
    base.mkdir()
    assert increment_path(base) == tmp_path / "exp2"
    assert increment_path(base, exist_ok=True) == base
    (tmp_path / "exp2").mkdir()
    assert increment_path(base) == tmp_path / "exp3"


@pytest.mark.parametrize("epoch,epochs,every,expected", [(1, 5, 1, True), (1, 5, 0, False), (5, 5, 0, True),
                                                         (2, 5, 2, True), (3, 5, 2, False), (5, 5, 2, True)])
def test_should_validate(epoch, epochs, every, expected):
    assert should_validate(epoch, epochs, every) is expected


def test_package_attribute_train_is_callable_whatever_the_import_order():
    import detector
    import detector.train as module

    assert callable(detector.train)
    assert module.train is train


# Keys of the optimisation recipe: each must change the weights under every optimizer (no dead genes).
OPTIM_GENES = {"lr0": 0.02, "lrf": 0.5, "momentum": 0.7, "weight_decay": 0.1, "warmup_epochs": 0.5,
               "warmup_momentum": 0.5, "warmup_bias_lr": 0.0}


@pytest.mark.parametrize("optimizer", ["auto", "SGD", "Adam"])
def test_every_optimisation_gene_changes_the_weights(tiny_cfg, optimizer):
    def weights(name: str, **change: float) -> dict[str, torch.Tensor]:
        hyp = {**DEFAULT_HYP, "mosaic": 0.0, **change}
        # 2 epochs of 2 batches: the second epoch's learning rate depends on lrf; warmup takes 2 batches
        cfg = tiny_cfg(name=name, epochs=2, optimizer=optimizer, val_every=0, autoanchor=False)
        train(hyp, cfg)
        return load_checkpoint(Path(cfg.project) / name / "weights" / "last.pt")["train_model"]

    base = weights("base")
    again = weights("again")
    assert all(torch.equal(base[k], again[k]) for k in base)  # deterministic, so any difference is the gene's
    for key, value in OPTIM_GENES.items():
        assert value != DEFAULT_HYP[key]
        changed = weights(key, **{key: value})
        diff = max((changed[k].float() - base[k].float()).abs().max().item() for k in base)
        assert diff > 1e-6, f"{key} has no effect under optimizer {optimizer}"


@pytest.mark.parametrize("threads,env,expected", [(1, "2", 1), (None, "1", 1), (2, "1", 2)])
def test_training_threads_come_from_the_flag_or_the_cpus_the_process_has(tiny_cfg, monkeypatch, threads, env,
                                                                         expected):
    monkeypatch.setenv("OMP_NUM_THREADS", env)  # as Ray sets it to a trial's CPUs
    seen = []
    train(dict(DEFAULT_HYP), tiny_cfg(threads=threads, save_weights=False),
          report=lambda epoch, m: seen.append(torch.get_num_threads()))
    assert seen == [expected]
