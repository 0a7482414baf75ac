"""Tests of evolve/signals.py and of how a run stops cleanly: SIGTERM (as Slurm, Kubernetes and systemd
send it) in a driver subprocess, and a run folder that can no longer be written."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import orchestrate
from evolve.output.records import RunRecords
from evolve.signals import received, terminate_as_interrupt

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--trainer", "surrogate", "--generations", "2", "--population", "4", "--epochs", "1", "--seed", "2",
         "--surrogate-seconds", "0.3", "--max-concurrent", "1"]


def test_sigterm_raises_keyboard_interrupt_inside_and_is_remembered(monkeypatch):
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.default_int_handler
                        if sig == signal.SIGINT else signal.SIG_DFL)  # Python's own Ctrl-C handling
    with terminate_as_interrupt():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert received() == signal.SIGTERM
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_the_runner_leaves_no_stale_tune_sigint_handler(ray_cluster, tmp_path):
    from evolve.config import RayConfig, TrialConfig
    from evolve.execution.jobs import TrialJob
    from evolve.execution.runner import TrialRunner
    from evolve.search.space import SearchSpace

    class One:
        def __init__(self):
            self.jobs = [TrialJob("t0", 0, 0, dict(SearchSpace.load().base))]

        def next_job(self):
            return self.jobs.pop() if self.jobs else None

        def on_result(self, job, metrics):
            pass

    before = signal.getsignal(signal.SIGINT)
    TrialRunner(RayConfig(), "surrogate", TrialConfig(epochs=1), tmp_path).run(One())
    assert signal.getsignal(signal.SIGINT) is before


def _rows(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def test_sigterm_stops_the_run_cleanly_with_status_143_and_it_resumes(ray_address, tmp_path):
    run_dir = tmp_path / "runs" / "exp"
    proc = subprocess.Popen([sys.executable, str(ROOT / "orchestrate.py"), *FLAGS, "--project",
                             str(tmp_path / "runs"), "--address", ray_address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while _rows(run_dir / "evolve.csv") < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-3000:]
    assert f"resume with: python orchestrate.py --resume {run_dir}" in err
    assert "Traceback" not in err, err[-3000:]
    assert not (run_dir / ".lock").exists()
    done = _rows(run_dir / "evolve.csv")
    assert 2 <= done < 8
    assert orchestrate.main(["--resume", str(run_dir), "--address", ray_address]) == 0
    df = pd.read_csv(run_dir / "evolve.csv")
    assert sorted(df["generation"].unique()) == [0, 1] and not df.duplicated(["generation", "individual"]).any()


def test_an_unwritable_run_folder_ends_with_one_line_and_the_resume_command(ray_address, tmp_path,
                                                                          monkeypatch, caplog):
    append = RunRecords.append

    def append_until_full(self, rec):
        if len(self) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.csv_path))
        append(self, rec)

    monkeypatch.setattr(RunRecords, "append", append_until_full)
    run_dir = tmp_path / "runs" / "exp"
    with caplog.at_level("ERROR"):
        code = orchestrate.main([*FLAGS, "--project", str(tmp_path / "runs"), "--address", ray_address])
    assert code == 3
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"{run_dir / 'evolve.csv'}: cannot write (No space left on device); free or fix it, "
                      f"then resume with: python orchestrate.py --resume {run_dir}"]
    assert not (run_dir / ".lock").exists()
    monkeypatch.setattr(RunRecords, "append", append)
    assert orchestrate.main(["--resume", str(run_dir), "--address", ray_address]) == 0
    assert len(pd.read_csv(run_dir / "evolve.csv")) >= 6
