"""Tests of evolve/ddp.py: a trial run as a 2-process gloo DDP job on CPU, and nothing left running after."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from evolve.config import TrialConfig as TrainConfig
from detector.hyp import DEFAULT_HYP
from evolve.contract import Metrics
from evolve.config import nproc_for
from evolve.execution.ddp import _claim_run_folder, _failure_message, _ReportTail, run_ddp
from evolve.errors import ConfigError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process checks read /proc")


def live_pids(text: str) -> list[int]:
    """Processes (zombies excepted) whose command line mentions ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and stat[stat.rfind(")") + 2] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def job_cfg(tmp_path: Path, epochs: int) -> TrainConfig:
    return TrainConfig(project=str(tmp_path / "runs"), name="t", epochs=epochs,
                       extra={"note_dir": str(tmp_path / "n")})


def notes(folder: Path) -> dict[int, dict]:
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))}


# -- nproc_for -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("gpus, workers, expected", [
    (0, None, 1), (0, 3, 3), (0.5, None, 1), (1, None, 1), (1, 1, 1), (2, None, 2), (4.0, None, 4), (2, 2, 2),
])
def test_nproc_for(gpus, workers, expected):
    assert nproc_for(gpus, workers) == expected


@pytest.mark.parametrize("gpus, workers, message", [
    (1.5, None, "--gpus-per-trial 1.5: above 1 it must be a whole number"),
    (2.5, None, "--gpus-per-trial 2.5: above 1 it must be a whole number"),
    (-1, None, "--gpus-per-trial -1: must be a number >= 0"),
    (float("nan"), None, "--gpus-per-trial nan"),
    (0, 0, "--workers-per-trial 0: must be a whole number >= 1"),
    (0, 2.0, "--workers-per-trial 2.0: must be a whole number >= 1"),
    (2, 4, "--workers-per-trial 4 with --gpus-per-trial 2"),
    (1, 2, "--workers-per-trial 2 with --gpus-per-trial 1: DDP ranks on GPUs need one GPU each"),
])
def test_nproc_for_rejects(gpus, workers, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        nproc_for(gpus, workers)


# -- input checks and helpers (no processes started) --------------------------------------------------
def test_run_ddp_rejects_bad_input_before_launching(tmp_path):
    cfg = TrainConfig(project=str(tmp_path / "runs"), name="t", epochs=1)
    with pytest.raises(ConfigError, match="--trainer 'no_such_module:train': cannot import module"):
        run_ddp("no_such_module:train", dict(DEFAULT_HYP), cfg, nproc=2)
    with pytest.raises(ConfigError, match="^nproc 0: the number of DDP processes must be a whole number"):
        run_ddp("ddp_trainers_for_tests:fail_on_rank1", dict(DEFAULT_HYP), cfg, nproc=0)
    bad = TrainConfig(project=str(tmp_path / "runs"), name="t", epochs=1, extra={"when": object()})
    with pytest.raises(ConfigError, match="must be JSON-serialisable to run under DDP"):
        run_ddp("ddp_trainers_for_tests:fail_on_rank1", dict(DEFAULT_HYP), bad, nproc=2)
    assert not (tmp_path / "runs" / "t" / "ddp" / "launcher.log").exists()


def test_claim_run_folder_picks_a_free_name(tmp_path):
    cfg = TrainConfig(project=str(tmp_path), name="exp", exist_ok=False)
    assert (_claim_run_folder(cfg).name, _claim_run_folder(cfg).exist_ok) == ("exp", True)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp2").mkdir()
    assert _claim_run_folder(cfg).name == "exp3"
    assert _claim_run_folder(TrainConfig(project=str(tmp_path), name="exp", exist_ok=True)).name == "exp"


def test_report_tail_waits_for_whole_lines(tmp_path):
    path = tmp_path / "reports.jsonl"
    tail = _ReportTail(path)
    assert tail.read() == []
    line = json.dumps({"epoch": 1, "metrics": Metrics(map50=0.5, map50_95=0.25).to_dict()})
    path.write_text(line + "\n" + line[:10])
    got = tail.read()
    assert [(e, m.map50, m.map50_95) for e, m in got] == [(1, 0.5, 0.25)]
    assert tail.read() == []
    path.write_text(line + "\n" + line.replace('"epoch": 1', '"epoch": 2') + "\n")
    assert [e for e, _ in tail.read()] == [2]


def test_failure_message_names_the_first_failing_rank(tmp_path):
    (tmp_path / "rank0.error").write_text(json.dumps({"rank": 0, "time": 20.0, "error": "RuntimeError: x"}))
    (tmp_path / "rank1.error").write_text(json.dumps({"rank": 1, "time": 10.0, "error": "ValueError: bad"}))
    (tmp_path / "rank1.log").write_text("".join(f"line {i}\n" for i in range(100)))
    text = _failure_message(tmp_path, 2, 1)
    assert text.startswith("DDP trial failed on rank 1 of 2: ValueError: bad\n")
    assert text.splitlines()[-1] == "line 99" and "line 70" in text and "line 69" not in text


def test_failure_message_without_rank_errors_quotes_the_launcher(tmp_path):
    (tmp_path / "launcher.log").write_text("rank: 1 (local_rank: 1)\nexitcode: -9 (pid: 42)\n")
    text = _failure_message(tmp_path, 2, 1)
    assert text.startswith("DDP trial failed (launcher exit code 1, no rank reported an error)")
    assert "exitcode: -9 (pid: 42)" in text


# -- real launches -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_failing_rank_tears_the_job_down(tmp_path):
    cfg = job_cfg(tmp_path, epochs=1)
    with pytest.raises(RuntimeError) as info:
        run_ddp("ddp_trainers_for_tests:fail_on_rank1", dict(DEFAULT_HYP), cfg, nproc=2, timeout=120, cpus=2)
    text = str(info.value)
    assert text.startswith("DDP trial failed on rank 1 of 2: ValueError: rank 1 exploded on purpose")
    assert "Traceback" in text and "fail_on_rank1" in text  # the tail of rank 1's log
    seen = notes(tmp_path / "n")
    assert sorted(seen) == [0, 1]
    assert [pid for pid in (n["pid"] for n in seen.values()) if alive(pid)] == []
    assert live_pids(str(tmp_path / "runs" / "t" / "ddp" / "job.json")) == []


@pytest.mark.slow
def test_an_interrupt_in_the_caller_kills_every_rank(tmp_path):
    cfg = job_cfg(tmp_path, epochs=3)
    heard: list[tuple[int, float]] = []

    def report(epoch: int, metrics: Metrics) -> None:
        heard.append((epoch, metrics.map50))
        raise KeyboardInterrupt

    hyp = dict(DEFAULT_HYP, lr0=0.01)
    with pytest.raises(KeyboardInterrupt):
        run_ddp("ddp_trainers_for_tests:sum_then_hang", hyp, cfg, nproc=2, report=report, timeout=120, cpus=4)
    assert heard == [(1, pytest.approx(0.03))]  # (0 + 1) + (1 + 1) all-reduced, times lr0
    seen = notes(tmp_path / "n")
    assert [(n["world_size"], n["backend"], n["omp"], n["torch_threads"]) for n in seen.values()] == \
        [(2, "gloo", "2", 2)] * 2
    assert [pid for pid in (n["pid"] for n in seen.values()) if alive(pid)] == []
    assert live_pids(str(tmp_path / "runs" / "t" / "ddp" / "job.json")) == []


def test_a_timeout_kills_the_launcher(tmp_path):
    cfg = job_cfg(tmp_path, epochs=1)
    with pytest.raises(RuntimeError, match=r"^DDP trial timed out after 0\.5 s \(2 processes"):
        run_ddp("ddp_trainers_for_tests:sum_then_hang", dict(DEFAULT_HYP), cfg, nproc=2, timeout=0.5)
    assert live_pids(str(tmp_path / "runs" / "t" / "ddp" / "job.json")) == []


def test_rank_entry_point_needs_exactly_one_job_file(capsys):
    from evolve.execution.ddp_rank import main

    assert main([]) == 2
    assert main(["a.json", "b.json"]) == 2
    assert "usage: python -m evolve.execution.ddp_rank <job.json>" in capsys.readouterr().err


# -- through the runner --------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_runner_trial_with_two_workers_trains_the_detector_on_two_gloo_ranks(tiny_data, tmp_path,
                                                                              ray_cluster):
    import torch

    from evolve.config import RayConfig
    from evolve.execution.jobs import TrialJob
    from evolve.execution.runner import TrialRunner

    class Source:
        def __init__(self) -> None:
            self.jobs = [TrialJob("g0i0", 0, 0, dict(DEFAULT_HYP))]
            self.results: dict[str, Metrics] = {}
            self.epochs: list[tuple[int, Metrics]] = []

        def next_job(self):
            return self.jobs.pop() if self.jobs else None

        def on_result(self, job, metrics):
            self.results[job.trial_id] = metrics

        def on_epoch(self, job, epoch, metrics):
            self.epochs.append((epoch, metrics))

    source = Source()
    cfg = TrainConfig(data=str(tiny_data), imgsz=64, epochs=1, batch=8, workers=2,
                      extra={"state_dir": str(tmp_path / "ranks")})
    runner = TrialRunner(RayConfig(cpus_per_trial=2, workers_per_trial=2),
                         "ddp_trainers_for_tests:detector_saving_weights", cfg, tmp_path / "run")
    assert runner.trial_layout() == (2, 0)  # 2 gloo ranks of one CPU each: no loader workers
    runner.run(source)
    metrics = source.results["g0i0"]
    assert (metrics.status, metrics.epochs) == ("ok", 1)
    assert [e for e, _ in source.epochs] == [1]  # rank 0's epoch report reached the driver
    validated = source.epochs[0][1]
    for key in ("precision", "recall", "map50", "map50_95", "box_loss", "obj_loss", "cls_loss", "fitness"):
        assert getattr(metrics, key) == pytest.approx(getattr(validated, key), abs=1e-12), key
    trial = tmp_path / "run" / "trials" / "g0i0"
    assert "2 process(es), 0 loader workers each" in (trial / "trial.log").read_text()
    with (trial / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1  # written by rank 0 only
    assert float(rows[0]["metrics/mAP_0.5:0.95"]) == pytest.approx(metrics.map50_95, abs=1e-5)
    for rank in (0, 1):
        assert f"rank {rank} of 2 on cpu, 1 threads" in (trial / "ddp" / f"rank{rank}.log").read_text()
    result = json.loads((trial / "ddp" / "result.json").read_text())
    assert result["fitness"] == pytest.approx(metrics.fitness)
    # the metrics are those of one synchronised model: both ranks ended with identical weights
    states = [torch.load(tmp_path / "ranks" / f"rank{r}.pt") for r in (0, 1)]
    assert states[0].keys() == states[1].keys() and len(states[0]) > 10
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
    assert live_pids(str(trial / "ddp" / "job.json")) == []
