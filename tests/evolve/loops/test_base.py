"""Tests of evolve/loops/base.py: what both loops share, here the fidelity of their trials (the fidelity records and
``--fidelity``), in whole runs of each mode on the session's Ray.

The trainer ``starts_fast_or_slow`` makes every odd trial a slow starter that ASHA stops at its first rung
with fitness near 0.5, and every even one a fast starter that finishes at about 0.3: a stopped trial's rung
fitness is higher than every finished trial's, so a selection that mistook it for a finished result
would pick it. Trials run one at a time, so ASHA's decisions are exact.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from detector.hyp import HYP_KEYS
from evolve.config import config_from_argv
from evolve.driver import run
from evolve.output.rundir import load_checkpoint
from evolve.search.space import SearchSpace

POP = 8
FLAGS = ["--trainer", "trainers_for_tests:starts_fast_or_slow", "--population", str(POP),
         "--generations", "2", "--epochs", "2", "--fidelity", "prefix", "--grace-epochs", "1", "--reduction-factor", "2",
         "--validate-top", "0", "--elite", "1,1", "--max-concurrent", "1", "--seed", "3"]
TARGET = 2  # --validate-top 0: a prefix trial trains --epochs


def config(argv: list[str]):
    return config_from_argv(argv)


def number(trial_id: str) -> int:
    return int(trial_id[1:4]) * 10 + int(trial_id[5:8])


def check_records(run_dir: Path) -> pd.DataFrame:
    """The rows every prefix run of this trainer must leave; evolve.csv's rows."""
    df = pd.read_csv(run_dir / "evolve.csv")
    fid = pd.read_csv(run_dir / "fidelity.csv")
    assert list(fid.columns) == ["trial_id", "status", "epochs", "fitness", "fitness_epoch1"]
    assert sorted(fid["trial_id"]) == sorted(df["trial_id"])  # one row per trial, in both files
    fid = fid.set_index("trial_id")
    for tid, status, fitness in zip(df["trial_id"], df["status"], df["fitness"]):
        fast = number(tid) % 2 == 0
        assert status == ("ok" if fast else "stopped"), tid
        assert fid.at[tid, "status"] == status and fid.at[tid, "fitness"] == pytest.approx(fitness)
        assert fid.at[tid, "epochs"] == (TARGET if fast else 1)  # survivors reach the full length
        assert fid.at[tid, "fitness_epoch1"] == pytest.approx(0.8 + 0.001 * number(tid) if fast else
                                                              0.5 - 0.001 * number(tid))
    best_finished = df.loc[df["status"] == "ok", "fitness"].max()
    assert (df.loc[df["status"] == "stopped", "fitness"] > best_finished).all()
    summary = yaml.safe_load((run_dir / "fidelity.yaml").read_text())
    assert summary["trial_epochs"] == int(fid["epochs"].sum()) == TARGET * (df["status"] == "ok").sum() + (
        df["status"] == "stopped").sum()
    assert (summary["fidelity"], summary["target_epochs"], summary["rungs"]) == ("prefix", TARGET, [1])
    # Rung fitness rises with the trial number, final fitness falls: the finished trials disagree exactly.
    ok = (df["status"] == "ok").sum()
    assert ok >= 5 and summary["agreement"] == [{"epoch": 1, "spearman": -1.0, "n": int(ok)}]
    best = yaml.safe_load((run_dir / "hyp_evolve.yaml").read_text())
    top = df[df["status"] == "ok"].sort_values("fitness", ascending=False).iloc[0]
    assert best == pytest.approx({k: top[k] for k in HYP_KEYS})  # a finished trial, not a rung fitness
    return df


def check_log(run_dir: Path, df: pd.DataFrame) -> str:
    """evolve.log, checked for the warning during the run and the closing count of trial-epochs."""
    log = (run_dir / "evolve.log").read_text()
    warned = log.index("rung-to-final agreement is poor at epoch 1 Spearman -1.00 (n 5)")
    assert warned < log.index("trial-epochs spent")  # during the run, not only at its end
    ok, stopped = (df["status"] == "ok").sum(), (df["status"] == "stopped").sum()
    assert f"trial-epochs spent: {TARGET * ok + stopped} over {len(df)} trials" in log
    # No stopped trial's rung fitness ever shows as the best.
    assert set(re.findall(r"best (?:fitness )?(\d\.\d+)", log)) == {"0.30000"}
    return log


def test_generational_prefix_selects_finished_trials_above_stopped_ones(ray_address, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_dir = run(config([*FLAGS, "--project", str(tmp_path), "--address", ray_address]))
    df = check_records(run_dir)
    log = check_log(run_dir, df)
    # The one elite carried into generation 1 untrained is the best finished trial of generation 0,
    # although every stopped trial had reached a higher fitness.
    space = SearchSpace.load()
    gen0 = df[df["generation"] == 0]
    keys = {space.genome_key(space.encode({k: r[k] for k in HYP_KEYS})): r for _, r in gen0.iterrows()}
    carried = [keys[space.genome_key(g)] for g in load_checkpoint(run_dir)["population"]
               if space.genome_key(g) in keys]
    assert len(carried) == 1 and carried[0]["trial_id"] == "g000i000" and carried[0]["status"] == "ok"
    assert len(df) == 2 * POP - 1
    assert "generation 0 done: best 0.30000" in log and "| best 0.30000 |" in caplog.text
    # Its first rung, epoch 1, lies within the base hyp's 3-epoch warmup: said once, before any trial.
    assert caplog.text.count("the first rung (epoch 1) is within the base hyp's warmup (3 epochs)") == 1
    # Extended by a generation, the run counts on from its records.
    before = yaml.safe_load((run_dir / "fidelity.yaml").read_text())["trial_epochs"]
    run(config(["--resume", str(run_dir), "--generations", "3", "--address", ray_address]))
    df = check_records(run_dir)
    assert len(df) == 3 * POP - 2
    after = yaml.safe_load((run_dir / "fidelity.yaml").read_text())["trial_epochs"]
    assert after > before and after == int(pd.read_csv(run_dir / "fidelity.csv")["epochs"].sum())


def test_async_prefix_ranks_finished_trials_above_stopped_ones(ray_address, tmp_path):
    run_dir = run(config([*FLAGS, "--mode", "async", "--project", str(tmp_path), "--address", ray_address]))
    df = check_records(run_dir)
    log = check_log(run_dir, df)
    assert len(df) == 2 * POP
    assert f"{POP} of {2 * POP} trials done: best 0.30000" in log  # 4 finished, 4 stopped members then
    members = load_checkpoint(run_dir)["population"]  # (index, genome, selection value, fitness), best first
    statuses = [("ok" if index % 2 == 0 else "stopped") for index, *_ in members]
    assert statuses == sorted(statuses)  # every finished member ranks above every stopped one
    assert [m[3] for m in members][: statuses.count("ok")] == sorted(
        (f for (i, *_, f) in members if i % 2 == 0), reverse=True)


def test_the_planned_budget_is_an_upper_bound_where_trials_may_stop_at_a_rung():
    from evolve.loops.base import progress_options

    exact = config_from_argv(["--trainer", "surrogate", "--epochs", "3", "--validate-top", "0"])  # no rung fits
    assert progress_options(exact, 8, exact=True)["planned"].line() == (
        "planned: 24 trial-epochs = evolution 8 trials x 3 epochs (no validation)")
    judged = config_from_argv(["--trainer", "surrogate", "--epochs", "20", "--grace-epochs", "4",
                               "--validate-top", "0"])
    assert progress_options(judged, 8, exact=True)["planned"].line() == (
        "planned: at most 160 trial-epochs = evolution at most 8 trials x 20 epochs (no validation)")
