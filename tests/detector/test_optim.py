"""Tests of detector/optim.py: parameter groups, weight-decay scaling, warmup and LR schedule, EMA."""
import math

import pytest
import torch
from torch import nn

from detector.optim import (
    GROUP_BIAS,
    GROUP_NORM,
    GROUP_WEIGHT,
    ModelEMA,
    Schedule,
    build_optimizer,
    choose_optimizer,
    ema_settings,
    nominal_accumulate,
    nominal_batch,
    scaled_weight_decay,
    step_batch,
    split_parameters,
    unwrap,
    warmup_iterations,
)


def net_with_linear() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1),
                         nn.GroupNorm(1, 2), nn.Linear(2, 1))


def test_split_parameters_sorts_every_parameter_once():
    net = net_with_linear()
    groups = split_parameters(net)
    assert len(groups[GROUP_WEIGHT]) == 3  # two conv weights, one linear weight
    assert len(groups[GROUP_NORM]) == 2  # BatchNorm and GroupNorm scales
    assert len(groups[GROUP_BIAS]) == 4  # BN, conv, GN, linear biases
    assert sum(len(v) for v in groups.values()) == len(list(net.parameters()))


def test_split_parameters_skips_frozen():
    net = net_with_linear()
    net[0].weight.requires_grad_(False)
    assert len(split_parameters(net)[GROUP_WEIGHT]) == 2


@pytest.mark.parametrize("batch,nbs,acc,decay", [(16, 64, 4, 0.0005), (8, 64, 8, 0.0005),
                                                 (48, 64, 1, 0.000375), (128, 64, 1, 0.001)])
def test_accumulate_and_weight_decay_scaling(batch, nbs, acc, decay):
    assert nominal_accumulate(batch, nbs) == acc
    assert scaled_weight_decay(0.0005, batch, nbs) == pytest.approx(decay)


def test_build_optimizer_groups_and_decay_only_on_weights():
    opt = build_optimizer(net_with_linear(), "SGD", lr=0.01, momentum=0.9, weight_decay=0.001)
    assert isinstance(opt, torch.optim.SGD)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert set(by_name) == {GROUP_BIAS, GROUP_WEIGHT, GROUP_NORM}
    assert by_name[GROUP_WEIGHT]["weight_decay"] == 0.001
    assert by_name[GROUP_NORM]["weight_decay"] == 0.0 and by_name[GROUP_BIAS]["weight_decay"] == 0.0
    assert all(g["nesterov"] and g["momentum"] == 0.9 and g["initial_lr"] == 0.01 for g in opt.param_groups)


@pytest.mark.parametrize("name,cls", [("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW)])
def test_build_optimizer_adam_uses_momentum_as_beta1(name, cls):
    opt = build_optimizer(net_with_linear(), name, lr=0.001, momentum=0.85, weight_decay=0.0)
    assert isinstance(opt, cls)
    assert all(g["betas"] == (0.85, 0.999) for g in opt.param_groups)


def test_build_optimizer_rejects_unknown():
    with pytest.raises(ValueError, match="RMSprop"):
        build_optimizer(net_with_linear(), "RMSprop", 0.01, 0.9, 0.0)


@pytest.mark.parametrize("epochs,nb,total,expected", [
    (3.0, 32, 3200, 96), (3.0, 50, 10000, 150), (3.0, 2, 4, 2), (0.0, 10, 1000, 0), (0.5, 1000, 9e9, 500),
    (5.0, 8, 80, 40),
])
def test_warmup_iterations(epochs, nb, total, expected):
    assert warmup_iterations(epochs, nb, int(total)) == expected


def test_warmup_epochs_stay_live_on_a_small_data_set():
    # 128 images at batch 16 are 8 batches an epoch: every warmup_epochs value gives its own warmup
    lengths = [warmup_iterations(w, 8, 8 * 30) for w in (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)]
    assert lengths == [0, 4, 8, 16, 24, 40]


def test_no_warmup_means_scheduled_values_from_the_first_step():
    s = schedule(warmup_iters=0)
    assert not s.in_warmup(0)
    assert s.lr(GROUP_BIAS, 0, 0) == pytest.approx(0.01) and s.momentum_at(0) == pytest.approx(0.937)
    assert s.accumulate_at(0) == 4


@pytest.mark.parametrize("name,epochs,images,batch,expected", [
    ("auto", 30, 256, 16, "AdamW"),  # 120 planned steps
    ("auto", 300, 2048, 16, "AdamW"),  # 9600
    ("auto", 300, 2176, 16, "SGD"),  # 10200
    ("auto", 100, 12800, 128, "SGD"),  # 10000: a batch above 64 counts its own steps
    ("SGD", 1, 16, 16, "SGD"), ("Adam", 1000, 10**6, 16, "Adam"),
])
def test_choose_optimizer(name, epochs, images, batch, expected):
    assert choose_optimizer(name, epochs, images, batch) == expected


def test_choose_optimizer_rejects_unknown():
    with pytest.raises(ValueError, match="RMSprop"):
        choose_optimizer("RMSprop", 1, 1, 1)


@pytest.mark.parametrize("opt,batch,nbs,device,expected", [
    ("SGD", 16, None, "cpu", 64), ("AdamW", 16, None, "cpu", 8), ("AdamW", 16, None, "cuda", 16),
    ("Adam", 4, None, "cpu", 4), ("AdamW", 16, 64, "cpu", 64), ("SGD", 16, 8, "cuda", 8)])
def test_nominal_batch_depends_on_the_optimizer_and_device(opt, batch, nbs, device, expected):
    assert nominal_batch(opt, batch, nbs, device) == expected


@pytest.mark.parametrize("opt,batch,nbs,expected", [
    ("AdamW", 16, 8, 8), ("AdamW", 16, 64, 16), ("Adam", 4, 8, 4), ("AdamW", 16, 16, 16),
    ("SGD", 128, 64, 128), ("SGD", 16, 8, 16), ("SGD", 16, 64, 16)])
def test_step_batch_splits_adam_batches_only(opt, batch, nbs, expected):
    assert step_batch(opt, batch, nbs) == expected


def schedule(**kw) -> Schedule:
    base = dict(lr0=0.01, lrf=0.1, momentum=0.937, warmup_momentum=0.8, warmup_bias_lr=0.1, epochs=10,
                warmup_iters=100, accumulate=4, cos_lr=False)
    base.update(kw)
    return Schedule(**base)


def test_linear_and_cosine_factors():
    lin, cos = schedule(), schedule(cos_lr=True)
    assert lin.factor(0) == pytest.approx(1.0) and cos.factor(0) == pytest.approx(1.0)
    assert lin.factor(10) == pytest.approx(0.1) and cos.factor(10) == pytest.approx(0.1)
    assert lin.factor(5) == pytest.approx(0.55) and cos.factor(5) == pytest.approx(0.55)
    assert lin.factor(2) == pytest.approx(1 - 0.2 * 0.9)
    assert cos.factor(2) == pytest.approx(1 - 0.9 * (1 - math.cos(0.2 * math.pi)) / 2)


def test_warmup_values_at_known_iterations():
    s = schedule()
    # iteration 0: bias starts at warmup_bias_lr, the others at 0; momentum at warmup_momentum
    assert s.lr(GROUP_BIAS, 0, 0) == pytest.approx(0.1)
    assert s.lr(GROUP_WEIGHT, 0, 0) == 0.0 and s.lr(GROUP_NORM, 0, 0) == 0.0
    assert s.momentum_at(0) == pytest.approx(0.8)
    assert s.accumulate_at(0) == 1
    # half way, in epoch 1 (factor 0.91): straight lines towards the scheduled values
    assert s.lr(GROUP_WEIGHT, 1, 50) == pytest.approx(0.5 * 0.01 * 0.91)
    assert s.lr(GROUP_BIAS, 1, 50) == pytest.approx(0.5 * (0.1 + 0.01 * 0.91))
    assert s.momentum_at(50) == pytest.approx((0.8 + 0.937) / 2)
    assert s.accumulate_at(50) == 2  # round(2.5) to even
    assert s.accumulate_at(90) == 4
    # after warmup: the epoch's scheduled values
    assert s.lr(GROUP_BIAS, 3, 100) == pytest.approx(0.01 * 0.73)
    assert s.lr(GROUP_WEIGHT, 3, 250) == pytest.approx(0.01 * 0.73)
    assert s.momentum_at(100) == pytest.approx(0.937)
    assert s.accumulate_at(100) == 4


def test_apply_sets_lr_and_momentum_for_sgd_and_adam():
    s = schedule()
    sgd = build_optimizer(net_with_linear(), "SGD", 0.01, 0.937, 0.0005)
    s.apply(sgd, epoch=0, iteration=0)
    by_name = {g["name"]: g for g in sgd.param_groups}
    assert by_name[GROUP_BIAS]["lr"] == pytest.approx(0.1) and by_name[GROUP_WEIGHT]["lr"] == 0.0
    assert by_name[GROUP_WEIGHT]["momentum"] == pytest.approx(0.8)
    adam = build_optimizer(net_with_linear(), "Adam", 0.01, 0.937, 0.0)
    s.apply(adam, epoch=5, iteration=500)
    assert all(g["lr"] == pytest.approx(0.0055) and g["betas"] == (pytest.approx(0.937), 0.999)
               for g in adam.param_groups)


def test_ema_decay_ramp_and_update_values():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(net)
    assert ema.decay_at(0) == 0.0
    assert ema.decay_at(2000) == pytest.approx(0.9999 * (1 - math.exp(-1)))
    assert not any(p.requires_grad for p in ema.ema.parameters())
    old = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.train()
    net(torch.randn(4, 2))  # bumps BatchNorm's integer num_batches_tracked
    ema.update(net)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    assert ema.updates == 1
    assert torch.allclose(ema.ema[0].weight, d * old + (1 - d) * net[0].weight)
    assert int(ema.ema[1].num_batches_tracked) == 1


def test_ema_update_equals_a_lerp_of_each_state_dict_entry():
    # The update walks the tensors itself; it must do exactly what a lerp_ per state_dict entry does.
    from detector.model import Model

    torch.manual_seed(0)
    model = Model(nc=3, size="n").train()
    ema = ModelEMA(model, decay=0.9, tau=5.0)
    reference = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.rand(2, 3, 64, 64))  # moves the BatchNorm statistics and counters
        ema.update(model)
        d = ema.decay_at(step)
        for key, value in model.state_dict().items():
            ref = reference[key]
            ref.lerp_(value, 1.0 - d) if ref.dtype.is_floating_point else ref.copy_(value)
    got = ema.ema.state_dict()
    assert got.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(got[key], value), key
    assert {int(v) for k, v in got.items() if k.endswith("num_batches_tracked")} == {3}


@pytest.mark.parametrize("steps,decay,tau", [
    (1110, 1 - 1 / 55.5, 55.5),  # 30 epochs of 37 steps: the average spans 5% of the run
    (10_000, 0.998, 500.0),
    (554_000, 0.9999, 2000.0),  # a long run keeps YOLOv5's decay and ramp
    (100, 0.9, 10.0),  # a short run still averages over 10 steps
    (3, 0.9, 10.0),
])
def test_ema_settings_follow_the_run_length(steps, decay, tau):
    got_decay, got_tau = ema_settings(steps)
    assert got_decay == pytest.approx(decay) and got_tau == pytest.approx(tau)


def test_short_run_ema_forgets_its_start():
    # A third into a 1110-step run the EMA averages over tens of steps; a fixed 0.9999 with a 2000-step
    # ramp would still be at 0.17 there, i.e. close to the raw, noisy weights of the last step.
    assert 0.95 < ModelEMA(nn.Linear(1, 1), *ema_settings(1110)).decay_at(370) < 0.99
    assert ModelEMA(nn.Linear(1, 1)).decay_at(370) == pytest.approx(0.9999 * (1 - math.exp(-370 / 2000)))


def test_ema_of_wrapped_model_and_unwrap():
    net = nn.Linear(2, 1)
    wrapped = nn.DataParallel(net)
    assert unwrap(wrapped) is net and unwrap(net) is net
    ema = ModelEMA(wrapped, updates=10**6)  # far along: the decay has saturated at 0.9999
    assert isinstance(ema.ema, nn.Linear)
    old = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update(wrapped)
    assert torch.allclose(ema.ema.weight, 0.9999 * old + 0.0001 * 3.0)
