"""One rank of a DDP trial, started by torchrun for ``evolve.execution.ddp.run_ddp``.

``python -m evolve.execution.ddp_rank <job.json>``: the rank dies with its launcher (Linux parent-death
signal), sends everything it prints or logs to ``rank<r>.log``, joins the process group (NCCL on CUDA,
gloo on CPU) and trains; rank 0 appends each reported epoch to ``reports.jsonl`` and writes its final
Metrics to ``result.json``; a rank that raises writes ``rank<r>.error`` so the caller can name the first
rank that failed.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from evolve.config.trial import TrialConfig
from evolve.contract import Metrics
from evolve.execution.ddp import PR_SET_PDEATHSIG, prctl_function
from evolve.execution.trainers import trainer_for

LOGGER = logging.getLogger("evolve.execution.ddp_rank")  # not "__main__" when torchrun runs this file


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of one rank under torchrun: ``python -m evolve.execution.ddp_rank <job.json>``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m evolve.execution.ddp_rank <job.json> (started by run_ddp)\n")
        return 2
    prctl = prctl_function()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() == 1:  # the launcher died before the signal was armed
            return 1
    job_path = Path(args[0])
    job_dir = job_path.parent
    rank = int(os.environ.get("RANK", "0"))
    log = open(job_dir / f"rank{rank}.log", "ab", buffering=0)  # noqa: SIM115 - lives as long as the rank
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")
    try:
        _run_rank(json.loads(job_path.read_text()), job_dir, rank)
    except BaseException as exc:  # noqa: BLE001 - every way a rank can end badly must reach the caller
        error = {"rank": rank, "time": time.time(), "error": f"{type(exc).__name__}: {exc}"}
        _write_atomic(job_dir / f"rank{rank}.error", json.dumps(error))
        traceback.print_exc()
        return 1
    return 0


def _run_rank(job: dict[str, Any], job_dir: Path, rank: int) -> None:
    import torch
    import torch.distributed as tdist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cfg = TrialConfig(**job["cfg"])
    use_cuda = torch.cuda.is_available() and cfg.device.strip().lower() != "cpu"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"rank {rank} needs GPU {local_rank} but only {torch.cuda.device_count()} "
                               f"are visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})")
        torch.cuda.set_device(local_rank)
    created = False
    if world_size > 1 and not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo")
        created = True
    device = f"cuda:{local_rank}" if use_cuda else "cpu"
    LOGGER.info("rank %d of %d on %s, %s threads", rank, world_size, device,
                os.environ.get("OMP_NUM_THREADS", "default"))
    reports = job_dir / "reports.jsonl"

    def report(epoch: int, metrics: Any) -> None:
        if rank != 0:
            return
        line = json.dumps({"epoch": int(epoch), "metrics": Metrics.from_any(metrics).to_dict()})
        with reports.open("a") as handle:
            handle.write(line + "\n")

    out = trainer_for(job["trainer"]).function()(dict(job["hyp"]), cfg, report)
    if rank == 0:
        _write_atomic(job_dir / "result.json", json.dumps(Metrics.from_any(out).to_dict()))
    LOGGER.info("rank %d finished training", rank)
    # Only on success: after a failure the group is left to die with the process, so that the peers'
    # "connection closed" errors come after this rank's own error is on disk (the first error is the cause).
    if created and tdist.is_initialized():
        tdist.destroy_process_group()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
