"""Device selection and the small amount of torch.distributed plumbing that DDP training needs.

A run started by ``torchrun`` finds RANK, WORLD_SIZE and LOCAL_RANK in its environment; ``setup`` then
joins the process group (NCCL on CUDA, gloo on CPU) unless the caller already did, and ``cleanup``
leaves it only if ``setup`` created it, so a caller that manages its own group keeps it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

LOGGER = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    created_group: bool = False
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def parse_device(device: str, local_rank: int = 0) -> torch.device:
    """Resolve a device string: '' (CUDA when available, else CPU), 'cpu', '0', 'cuda', 'cuda:1'.

    Under DDP on CUDA each process takes the GPU of its LOCAL_RANK whatever the string says.
    """
    text = (device or "").strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", local_rank)
    if text.startswith("cuda"):
        text = text[4:].lstrip(":") or "0"
    if not text.isdigit():
        raise ValueError(f"device must be '', 'cpu', a GPU index or 'cuda:N', got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
    index = int(text) + local_rank
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device("cuda", index)


def setup(device: str = "", timeout_s: float = 1800.0) -> DistContext:
    """Read the torchrun environment, pick this process's device and join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1:
        return DistContext(device=parse_device(device))
    # Each rank already owns its GPU through LOCAL_RANK; an explicit index would put all ranks on one.
    torch_device = parse_device("cpu" if (device or "").strip().lower() == "cpu" else "", local_rank)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        created = True
        LOGGER.info("joined process group: rank %d of %d (%s)", rank, world_size, backend)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size,
                       created_group=created, device=torch_device)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group if ``setup`` created it."""
    if ctx.created_group and dist.is_initialized():
        dist.destroy_process_group()
        ctx.created_group = False


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast_object(ctx: DistContext, obj: Any, src: int = 0) -> Any:
    """Every rank gets ``src``'s ``obj`` (a picklable Python object)."""
    if not ctx.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (used to stop all ranks together)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def sync_buffers(ctx: DistContext, model: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP keeps parameters identical but each rank updates its own running statistics during its last
    forward pass; after this call the whole state dict is identical on every rank.
    """
    if not ctx.distributed:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=src)
