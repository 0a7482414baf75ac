"""Tests of detector/precision.py: which dtype training and validation autocast to on each device, and a
real training step under the CPU's bf16 autocast when this CPU has it."""
import logging

import pytest
import torch

from detector import precision
from detector.hyp import DEFAULT_HYP
from detector.loss import DetectionLoss
from detector.train import train

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend the CPU does (True) or does not (False) multiply bf16 in hardware."""

    def pretend(value: bool) -> None:
        precision.cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: value, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: value, raising=False)

    yield pretend
    precision.cpu_has_native_bf16.cache_clear()


def test_cuda_trains_and_validates_in_fp16_with_a_scaler():
    assert precision.autocast_dtype(CUDA) is torch.float16
    assert precision.autocast_dtype(CUDA, training=False) is torch.float16
    assert precision.needs_grad_scaler(torch.float16)


def test_cpu_with_native_bf16_trains_in_bf16_without_a_scaler_and_validates_in_fp32(native_bf16):
    native_bf16(True)
    assert precision.autocast_dtype(CPU) is torch.bfloat16
    assert precision.autocast_dtype(CPU, training=False) is None
    assert not precision.needs_grad_scaler(torch.bfloat16)
    assert precision.describe(torch.bfloat16) == "AMP bf16"


def test_cpu_without_native_bf16_stays_fp32(native_bf16):
    native_bf16(False)
    assert precision.autocast_dtype(CPU) is None
    assert precision.describe(None) == "fp32"


def test_no_amp_means_fp32_everywhere(native_bf16):
    native_bf16(True)
    assert precision.autocast_dtype(CPU, amp=False) is None
    assert precision.autocast_dtype(CUDA, amp=False) is None
    assert not precision.needs_grad_scaler(None)


@pytest.mark.parametrize("value,dtype", [("0", None), ("1", torch.bfloat16), ("", torch.bfloat16),
                                         (" 0 ", None)])
def test_the_environment_can_keep_a_bf16_cpu_in_fp32(native_bf16, monkeypatch, value, dtype):
    native_bf16(True)
    monkeypatch.setenv(precision.BF16_ENV, value)
    assert precision.autocast_dtype(CPU) is dtype
    assert precision.autocast_dtype(CUDA) is torch.float16  # CUDA's fp16 is --no-amp's to turn off


def test_the_environment_cannot_turn_on_bf16_without_native_units(native_bf16, monkeypatch):
    native_bf16(False)
    monkeypatch.setenv(precision.BF16_ENV, "1")
    assert precision.autocast_dtype(CPU) is None


@pytest.mark.parametrize("value", ["no", "false", "2", "bf16"])
def test_a_bad_environment_value_is_an_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(precision.BF16_ENV, value)
    with pytest.raises(ValueError, match=f"YOLO_EVOLVE_BF16='{value}': expected 0"):
        precision.autocast_dtype(CPU)


def test_a_torch_without_the_cpu_queries_means_fp32(monkeypatch):
    precision.cpu_has_native_bf16.cache_clear()
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    try:
        assert precision.cpu_has_native_bf16() is False
        assert precision.autocast_dtype(CPU) is None
    finally:
        precision.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("amp,env", [(True, ""), (False, ""), (True, "0")])
def test_training_steps_in_the_chosen_precision_and_says_so(tiny_cfg, caplog, monkeypatch, amp, env):
    # The dtype of the model's outputs as the loss receives them: the autocast actually in force.
    seen: list[tuple[bool, torch.dtype, bool]] = []
    original = DetectionLoss.__call__

    def spy(self, preds, targets):
        seen.append((torch.is_grad_enabled(), preds[0].dtype, torch.is_autocast_enabled("cpu")))
        return original(self, preds, targets)

    monkeypatch.setattr(DetectionLoss, "__call__", spy)
    monkeypatch.setenv(precision.BF16_ENV, env)
    dtype = precision.autocast_dtype(CPU, amp)
    if env == "0":
        assert dtype is None  # whatever this CPU has
    with caplog.at_level(logging.INFO, logger="detector.train"):
        m = train(dict(DEFAULT_HYP), tiny_cfg(epochs=1, max_images=8, save_weights=False, amp=amp))
    assert m.status == "ok" and 0.0 <= m.fitness <= 1.0
    assert f"threads, {precision.describe(dtype)})" in caplog.text
    steps = {(d, on) for grad, d, on in seen if grad}
    assert steps == {(dtype or torch.float32, dtype is not None)}
    assert {on for grad, _, on in seen if not grad} == {False}  # validation: fp32 on CPU
