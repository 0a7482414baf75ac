"""Tiny trainers for the DDP tests, run in each rank as ``ddp_trainers_for_tests:<function>``.

They use ``torch.distributed`` directly (``evolve.ddp`` has joined the group before calling them) and note
what each rank saw in ``cfg.extra['note_dir']/rank<r>.json``: pid, world size, backend, threads.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from detector.results import Metrics


def _note(cfg) -> int:
    import torch
    import torch.distributed as dist

    rank = dist.get_rank()
    note = {"pid": os.getpid(), "rank": rank, "world_size": dist.get_world_size(),
            "backend": str(dist.get_backend()), "omp": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads()}
    Path(cfg.extra["note_dir"]).mkdir(parents=True, exist_ok=True)
    Path(cfg.extra["note_dir"], f"rank{rank}.json").write_text(json.dumps(note))
    return rank


def sum_then_hang(hyp, cfg, report=None):
    """All-reduces (rank + 1), reports the sum times lr0 as epoch 1's mAP50, then sleeps on every rank."""
    import torch
    import torch.distributed as dist

    _note(cfg)
    total = torch.tensor([dist.get_rank() + 1.0])
    dist.all_reduce(total)  # after this every rank's note is on disk
    map50 = float(total.item()) * hyp["lr0"]
    report(1, Metrics(map50=map50, map50_95=map50 / 2, epochs=1).with_fitness())
    time.sleep(120)
    return {"map50": 0.0, "map50_95": 0.0}


def fail_on_rank1(hyp, cfg, report=None):
    """Rank 1 raises; rank 0 waits for it in a collective (and would sleep long if it were not killed)."""
    import torch
    import torch.distributed as dist

    if _note(cfg) == 1:
        raise ValueError("rank 1 exploded on purpose")
    dist.all_reduce(torch.ones(1))
    time.sleep(120)
    return {"map50": 0.0, "map50_95": 0.0}


def detector_saving_weights(hyp, cfg, report=None):
    """The built-in detector trainer; each rank also saves its final raw weights to
    ``cfg.extra['state_dir']/rank<r>.pt`` (wrapping the detector's run, which ends with the ranks'
    buffers synchronised), so a test can check that both ranks hold one model."""
    import torch

    import detector.train as detector_train
    from detector.optim import unwrap
    from evolve.execution.detector_trainer import train

    original = detector_train._Trainer.run

    def run_and_save(self):
        out = original(self)
        folder = Path(cfg.extra["state_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in unwrap(self.model).state_dict().items()}
        torch.save(state, folder / f"rank{self.ctx.rank}.pt")
        return out

    detector_train._Trainer.run = run_and_save
    try:
        return train(hyp, cfg, report)
    finally:
        detector_train._Trainer.run = original
