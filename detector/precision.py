"""Mixed precision: the autocast dtype a device trains and validates in, decided in one place.

- CUDA: fp16 with a ``GradScaler`` (tensor cores; fp16's narrow range needs the loss scaled).
- CPU with native bf16 matrix units (AMX tiles or AVX512-BF16): bf16, no scaler (bf16 has fp32's range).
  oneDNN then runs model n's training step about 1.7x faster than fp32 on one core
  (docs/benchmarks.md, ``benchmarks/train_speed.py``).
- Any other CPU: fp32, because emulated bf16 is slower than fp32 there.
- Validation on CPU: fp32 always. It is a small share of a trial's time (one pass over the val images,
  no backward), and an fp32 mAP is the same whether it comes from a training run's last epoch or from
  ``python -m detector val`` on its weights.

The loss is always computed in fp32 (``detector.loss``), and so are the box decode and NMS, so only the
convolutions run at the lower precision. ``amp=False`` (``--no-amp``) trains in fp32 everywhere.

The environment variable ``YOLO_EVOLVE_BF16=0`` keeps a CPU with bf16 units in fp32 without touching any
command: it is how to time or reproduce what a CPU without them does, and it reaches every trial of an
evolution because trials inherit the environment of the command that starts the embedded Ray (on a
cluster started by hand, set it where ``ray start`` runs). ``1`` (or unset) is the default choice above.
It never changes CUDA's fp16, which ``--no-amp`` turns off.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Optional

import torch

BF16_ENV = "YOLO_EVOLVE_BF16"
_BF16_VALUES = {"": True, "1": True, "0": False}  # unset or empty: the default, bf16 where native


def cpu_bf16_allowed() -> bool:
    """Whether ``$YOLO_EVOLVE_BF16`` lets CPU training use bf16; ``ValueError`` naming it when it is set to
    anything but 0 or 1. Read at every call, so a test or a trial's process sees the current value."""
    value = os.environ.get(BF16_ENV, "").strip()
    if value not in _BF16_VALUES:
        raise ValueError(f"environment variable {BF16_ENV}={value!r}: expected 0 (fp32 on CPU) or 1 (bf16 "
                         "where the CPU has native bf16 units, the default)")
    return _BF16_VALUES[value]


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX or AVX512-BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return any(bool(getattr(torch.cpu, name)()) for name in checks if hasattr(torch.cpu, name))
    except RuntimeError:  # a query that cannot run on this build: take the safe answer
        return False


def autocast_dtype(device: torch.device, amp: bool = True, training: bool = True) -> Optional[torch.dtype]:
    """The dtype to autocast to on ``device``, or None for fp32. ``training=False``: for validation."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and training and cpu_bf16_allowed() and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def needs_grad_scaler(dtype: Optional[torch.dtype]) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 ones do not."""
    return dtype == torch.float16


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> torch.autocast:
    """The autocast context for ``dtype`` on ``device`` (disabled for None: fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(device: torch.device, dtype: Optional[torch.dtype]) -> torch.amp.GradScaler:
    """A loss scaler that scales only when ``dtype`` needs it (a no-op otherwise)."""
    return torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(dtype))


def describe(dtype: Optional[torch.dtype]) -> str:
    """How a log line names the precision."""
    names = {torch.float16: "AMP fp16", torch.bfloat16: "AMP bf16"}
    return names.get(dtype, "fp32")  # type: ignore[arg-type]
