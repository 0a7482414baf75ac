"""Tests of evolve/loops/failures.py: a run whose trials all fail for one reason stops, resumably."""
from __future__ import annotations

import pandas as pd
import pytest

from evolve.config import config_from_argv
from evolve.contract import Metrics
from evolve.driver import run
from evolve.errors import RunStopped
from evolve.loops.failures import FailureStreak, reason_key
from evolve.output.rundir import load_checkpoint


def failed(reason: str) -> Metrics:
    return Metrics(status="failed", reason=reason)


OOM = "RuntimeError: CUDA out of memory. Tried to allocate {} MiB"


def test_numbers_do_not_make_reasons_differ():
    assert reason_key(failed(OOM.format(20))) == reason_key(failed(OOM.format("1.50")))
    assert reason_key(Metrics()) is None and reason_key(Metrics(status="diverged")) is None


def test_generations_failing_with_one_reason_stop_after_n_in_a_row():
    streak = FailureStreak(2)
    assert streak.generation([failed(OOM.format(1)), failed(OOM.format(2))]) is None
    assert streak.generation([failed("boom")]) is None  # one trial says nothing; the count stays
    assert streak.generation([failed(OOM.format(3)), failed(OOM.format(4))]) == OOM.format(4)
    mixed = FailureStreak(1)
    assert mixed.generation([failed("a"), failed("b")]) is None  # two reasons: hyps, not the set-up
    assert mixed.generation([failed("a"), Metrics()]) is None
    assert FailureStreak(0).generation([failed("a")] * 5) is None  # 0: never


def test_async_stops_after_n_times_population_failures_in_a_row():
    streak = FailureStreak(2)
    results = [streak.trial(failed("boom 7"), population=3) for _ in range(6)]
    assert results == [None] * 5 + ["boom 7"]
    streak = FailureStreak(1)
    assert [streak.trial(m, population=2) for m in (failed("x"), Metrics(), failed("x"))] == [None] * 3


def config(argv: list[str]):
    return config_from_argv(argv)


def test_a_generation_failing_for_one_reason_stops_the_run_which_resumes_once_fixed(ray_address, tmp_path):
    fix = tmp_path / "fixed"
    cfg = config(["--trainer", "trainers_for_tests:broken_until_fixed", "--generations", "2", "--population",
                  "3", "--epochs", "1", "--project", str(tmp_path / "runs"), "--address", ray_address])
    cfg.train.extra = {"fix": str(fix)}
    with pytest.raises(RunStopped, match="every trial of generation 0 failed: RuntimeError: module "
                                         "'needed_package' is missing in the workers; fix the cause, then "
                                         "resume with: python orchestrate.py --resume .*exp"):
        run(cfg)
    run_dir = tmp_path / "runs" / "exp"
    df = pd.read_csv(run_dir / "evolve.csv")
    assert list(df["status"]) == ["failed"] * 3 and df["reason"].str.contains("needed_package").all()
    state = load_checkpoint(run_dir)
    assert state["generation"] == 0 and "needed_package" in state["halted"]
    assert not (run_dir / ".lock").exists()
    fix.write_text("installed\n")
    run(config(["--resume", str(run_dir), "--address", ray_address]))
    df = pd.read_csv(run_dir / "evolve.csv")
    gen0 = df[df["generation"] == 0]
    assert list(gen0["status"]) == ["failed"] * 3 + ["ok"] * 3  # the failures trained again, once fixed
    assert sorted(df["generation"].unique()) == [0, 1] and (df[df["generation"] == 1]["status"] == "ok").all()
    assert "halted" not in load_checkpoint(run_dir)
