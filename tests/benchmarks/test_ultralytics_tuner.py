"""Tests of benchmarks/ultralytics_tuner.py's validation of the two winners: which hyps it trains, one
real validation run, and the verdict lines' figures."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ultralytics_tuner

sys.path.remove(str(ROOT / "benchmarks"))


def test_winners_are_the_base_and_each_tuner_s_keys_over_it(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    (ours / "hyp_evolve.yaml").write_text("lr0: 0.02\nmomentum: 0.9\n")
    # Ultralytics writes its winner with a comment header and only the keys it tuned
    (theirs / "best_hyperparameters.yaml").write_text("# 6/6 iterations complete\nlr0: 0.005\nbox: 9.0\n")
    hyps = ultralytics_tuner.winners(ours, theirs)
    assert list(hyps) == ["base", "ours", "theirs"]
    base = yaml.safe_load((ROOT / "hyps" / "hyp.ultralytics.yaml").read_text())
    assert hyps["base"]["lr0"] == base["lr0"] == 0.01
    assert (hyps["ours"]["lr0"], hyps["ours"]["momentum"], hyps["ours"]["box"]) == (0.02, 0.9, base["box"])
    assert (hyps["theirs"]["lr0"], hyps["theirs"]["box"], hyps["theirs"]["momentum"]) == (0.005, 9.0, 0.937)
    assert {h["optimizer"] for h in hyps.values()} == {"SGD"}


def test_verdict_lines_pair_each_winner_with_the_base_on_the_same_seeds():
    fitness = {"base": {1: 0.20, 2: 0.22, 3: 0.24}, "ours": {1: 0.25, 2: 0.26, 3: 0.30},
               "theirs": {1: 0.19, 2: 0.23, 3: 0.22}}
    lines = ultralytics_tuner.verdict_lines(fitness)
    assert lines[0] == "base     0.2200 +- 0.0200 (3 seeds)"
    # ours - base: 0.05, 0.04, 0.06: mean 0.05, sd 0.01, t(0.975, 2) = 4.303 -> half width 0.0248
    assert lines[1] == "ours     0.2700 +- 0.0265 (3 seeds)   gain +0.0500 [+0.0252, +0.0748]"
    assert lines[2].startswith("theirs   0.2133") and "gain -0.0067 [" in lines[2]


def test_validate_trains_each_hyp_on_each_seed_in_worker_processes(tmp_path):
    pytest.importorskip("ultralytics")
    data = ultralytics_tuner.copy_data(None, tmp_path)
    hyp = yaml.safe_load((ROOT / "hyps" / "hyp.ultralytics.yaml").read_text())
    args = argparse.Namespace(model="yolov8n.yaml", validate_seeds=1, validate_epochs=1, imgsz=64, batch=8)
    out = ultralytics_tuner.validate({"base": hyp}, args, data, tmp_path / "validation", workers=1)
    assert list(out) == ["base"] and list(out["base"]) == [1]
    assert 0.0 <= out["base"][1] <= 1.0
    assert (tmp_path / "validation" / "base-seed1").is_dir()
