"""Tests of detector/build.py: each part of a run built alone from explicit arguments, on the tiny data set
and a real model: the resume checks, the data sets, the run folder, the optimizer's step sizes, the
resumed state, the loaders and the precision."""
from dataclasses import replace

import pytest
import torch
import yaml

from detector import build
from detector.data import resolve_data
from detector.dist import DistContext
from detector.errors import DataError
from detector.hyp import DEFAULT_HYP
from detector.model import Model

CPU = torch.device("cpu")


def test_load_resume_checks_classes_and_epochs(trained_run, tiny_cfg):
    data_cfg, _ = resolve_data(tiny_cfg().data)
    assert build.load_resume(tiny_cfg(), data_cfg) is None
    last = str(trained_run.save_dir / "weights" / "last.pt")
    assert build.load_resume(tiny_cfg(resume=last, epochs=3), data_cfg)["epoch"] == 2
    with pytest.raises(DataError, match="already trained 2 of 2 epochs"):
        build.load_resume(tiny_cfg(resume=last, epochs=2), data_cfg)
    with pytest.raises(DataError, match="trained with 4 classes but .* has 3"):
        build.load_resume(tiny_cfg(resume=last, epochs=3), replace(data_cfg, nc=3))


def test_datasets_take_max_images_and_only_rank_0_has_a_val_set(tiny_cfg):
    cfg = tiny_cfg(max_images=4)
    data_cfg, _ = resolve_data(cfg.data)
    main = build.build_datasets(cfg, dict(DEFAULT_HYP), data_cfg, 64, CPU, is_main=True)
    assert (len(main.train_set), len(main.val_set), len(main.val_files)) == (4, 4, 4)
    assert main.train_set.augment and not main.val_set.augment
    assert not main.batch_augment and not main.augment_on_device  # per-image augmentation on a CPU
    other = build.build_datasets(cfg, dict(DEFAULT_HYP), data_cfg, 64, CPU, is_main=False)
    assert other.val_set is None and len(other.val_files) == 4
    # batch augmentation asked for on a CPU: in the loader's workers, or by the trainer without workers
    assert build.build_datasets(tiny_cfg(batch_augment=True, workers=2), None, data_cfg, 64, CPU,
                                True).augment_on_device is False
    assert build.build_datasets(tiny_cfg(batch_augment=True, workers=0), None, data_cfg, 64, CPU,
                                True).augment_on_device is True


def test_save_dir_is_unique_and_holds_the_settings(tiny_cfg):
    cfg = tiny_cfg(save_weights=False)
    hyp = {"lr0": 0.02}
    first = build.make_save_dir(cfg, hyp, DistContext())
    second = build.make_save_dir(cfg, hyp, DistContext())
    assert (first.name, second.name) == ("exp", "exp2")
    assert yaml.safe_load((first / "hyp.yaml").read_text()) == hyp
    assert yaml.safe_load((first / "cfg.yaml").read_text())["batch"] == 8
    assert not (first / "weights").exists()
    assert (build.make_save_dir(tiny_cfg(), hyp, DistContext()) / "weights").is_dir()


@pytest.mark.parametrize("optimizer,batch,hyp_optimizer,expected", [
    ("SGD", 8, None, ("SGD", 8, 8)),  # accumulates to the nominal 64 images
    ("AdamW", 16, None, ("AdamW", 8, 1)),  # a CPU steps every 8 images: the batch is split
    ("SGD", 16, "Adam", ("Adam", 8, 1)),  # an optimizer in the hyps wins over the config
])
def test_optimization_step_sizes(tiny_cfg, optimizer, batch, hyp_optimizer, expected):
    hyp = dict(DEFAULT_HYP, **({"optimizer": hyp_optimizer} if hyp_optimizer else {}))
    model = Model(nc=4, size="n")
    opt = build.build_optimization(tiny_cfg(optimizer=optimizer, batch=batch), hyp, model, 16, CPU)
    assert (opt.name, opt.step_batch, opt.accumulate) == expected
    assert type(opt.optimizer).__name__ == expected[0]
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(hyp["lr0"])


def test_restore_training_state_loads_the_checkpoint(trained_run, tiny_cfg):
    from detector.checkpoint import load_checkpoint

    ckpt = load_checkpoint(trained_run.save_dir / "weights" / "last.pt")
    cfg = tiny_cfg(resume=str(trained_run.save_dir / "weights" / "last.pt"), epochs=3)
    model = Model(nc=4, size="n")
    opt = build.build_optimization(cfg, dict(trained_run.hyp), model, 16, CPU)
    ema = build.build_ema(cfg, model, opt, 16)
    start, best = build.restore_training_state(ckpt, opt.optimizer, ema)
    assert start == 2 and best == pytest.approx(ckpt["best_fitness"])
    assert ema.updates == ckpt["ema_updates"] > 0
    key = next(iter(ckpt["model"]))
    assert torch.equal(ema.ema.state_dict()[key].cpu(), ckpt["model"][key].cpu())


def test_loaders_split_a_step_over_ranks_and_the_schedule_covers_the_run(tiny_cfg):
    cfg = tiny_cfg(batch=8, epochs=2)
    data_cfg, _ = resolve_data(cfg.data)
    data = build.build_datasets(cfg, dict(DEFAULT_HYP), data_cfg, 64, CPU, is_main=True)
    train_loader, sampler, val_loader = build.build_loaders(cfg, data, 8, DistContext())
    assert (train_loader.batch_size, len(train_loader), sampler) == (8, 2, None)
    assert val_loader.batch_size == 16  # validation has no gradients: twice the batch
    schedule = build.build_schedule(cfg, dict(DEFAULT_HYP), accumulate=1, batches=len(train_loader))
    assert schedule.epochs == 2 and schedule.accumulate == 1


def test_precision_off_is_fp32_without_a_scaler():
    dtype, scaler = build.build_precision(CPU, amp=False)
    assert dtype is None and not scaler.is_enabled()

