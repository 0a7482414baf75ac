"""Tests of detector/dist.py and of DDP training: device parsing, the single-process fallbacks, and a real
2-process gloo run under torchrun whose ranks must end with identical weights."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from detector import dist

DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path

    import torch
    import torch.distributed as tdist

    from detector.config import TrainConfig
    from detector.hyp import DEFAULT_HYP
    from detector.train import train

    data, project, out = sys.argv[1:4]
    rank = int(os.environ["RANK"])
    import detector.train as detector_train
    from detector.optim import unwrap

    original = detector_train._Trainer.run

    def run_and_save(self):  # each rank keeps its final raw weights for the test to compare
        metrics = original(self)
        state = {k: v.detach().cpu() for k, v in unwrap(self.model).state_dict().items()}
        torch.save(state, Path(out) / f"rank{self.ctx.rank}.pt")
        return metrics

    detector_train._Trainer.run = run_and_save
    Path(out).mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(data=data, imgsz=64, epochs=1, batch=8, workers=0, project=project, name="ddp",
                      device="cpu", progress=False)
    metrics = train(dict(DEFAULT_HYP), cfg)
    Path(out, f"rank{rank}.json").write_text(json.dumps(
        {"metrics": metrics.to_dict(), "destroyed": not tdist.is_initialized()}))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_training_keeps_ranks_identical(tiny_data, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "states"
    project = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), str(tiny_data),
           str(project), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    state0 = torch.load(out / "rank0.pt", weights_only=True)
    state1 = torch.load(out / "rank1.pt", weights_only=True)
    assert state0.keys() == state1.keys() and len(state0) > 100
    different = [k for k in state0 if not torch.equal(state0[k], state1[k])]
    assert different == []

    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["metrics"] == reports[1]["metrics"]  # rank 1 returns rank 0's metrics
    assert reports[0]["metrics"]["status"] == "ok" and reports[0]["metrics"]["epochs"] == 1
    assert all(r["destroyed"] for r in reports)  # train created the process group, so it left it

    # files from rank 0 only: one run folder, not ddp and ddp2
    assert sorted(p.name for p in project.iterdir()) == ["ddp"]
    rows = (project / "ddp" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,")
    assert (project / "ddp" / "weights" / "last.pt").is_file()


def test_parse_device():
    assert dist.parse_device("cpu") == torch.device("cpu")
    assert dist.parse_device(" CPU ") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be"):
        dist.parse_device("gpu")
    if not torch.cuda.is_available():
        assert dist.parse_device("") == torch.device("cpu")
        with pytest.raises(ValueError, match="'0' requested but CUDA is not available"):
            dist.parse_device("0")
        with pytest.raises(ValueError, match="CUDA is not available"):
            dist.parse_device("cuda:1")


def test_single_process_context_and_fallbacks(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = dist.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.is_main, ctx.created_group) == (0, 1, False, True,
                                                                                          False)
    assert dist.broadcast_object(ctx, {"a": 1}) == {"a": 1}
    assert dist.any_rank(ctx, True) is True and dist.any_rank(ctx, False) is False
    dist.barrier(ctx)
    dist.sync_buffers(ctx, torch.nn.BatchNorm1d(2))
    dist.cleanup(ctx)
    assert not torch.distributed.is_initialized()


class FakeGroup:
    """Stands in for torch.distributed's process-group calls."""

    def __init__(self, initialized: bool):
        self.initialized = initialized
        self.calls: list[str] = []

    def is_initialized(self) -> bool:
        return self.initialized

    def init_process_group(self, backend, timeout):
        self.calls.append(f"init {backend}")
        self.initialized = True

    def destroy_process_group(self):
        self.calls.append("destroy")
        self.initialized = False


@pytest.mark.parametrize("owned_by_caller", [False, True])
def test_setup_joins_from_env_and_cleanup_leaves_only_its_own_group(monkeypatch, owned_by_caller):
    fake = FakeGroup(initialized=owned_by_caller)
    for name in ("is_initialized", "init_process_group", "destroy_process_group"):
        monkeypatch.setattr(dist.dist, name, getattr(fake, name))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = dist.setup("cpu")
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.is_main) == (1, 1, 2, False)
    assert ctx.device == torch.device("cpu")
    assert ctx.created_group is (not owned_by_caller)
    dist.cleanup(ctx)
    assert fake.calls == ([] if owned_by_caller else ["init gloo", "destroy"])
    assert fake.initialized is owned_by_caller
