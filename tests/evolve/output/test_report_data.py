"""Tests of evolve/output/report_data.py: the numbers report.html shows, from hand-written records."""
from __future__ import annotations

import math
import random
import sys

import numpy as np
import pandas as pd
import pytest

from evolve.config import EvolveConfig
from evolve.contract import Metrics
from evolve.errors import ConfigError
from evolve.execution.trainers import trainer_for
from evolve.loops.checkpoint import checkpoint_state
from evolve.output import report_data
from evolve.output.records import RunRecords, TrialRecord
from evolve.output.rundir import save_checkpoint
from evolve.search.space import SearchSpace

SPACE = SearchSpace.load()


def frame(rows):
    """rows: (status, fitness, {key: value}) -> an evolve.csv-like frame over the base hyp."""
    out = []
    for i, (status, fit, changes) in enumerate(rows):
        out.append({"generation": i // 4, "trial_id": f"t{i}", "status": status, "fitness": fit,
                    **SPACE.base, **changes})
    return pd.DataFrame(out)


def test_best_so_far_follows_valid_trials_in_finishing_order_and_its_area_is_the_mean():
    df = frame([("failed", 0.0, {}), ("ok", 0.2, {}), ("ok", 0.1, {}), ("diverged", 0.0, {}),
                ("ok", 0.4, {})])
    curve, area = report_data.best_so_far(df)
    assert curve.tolist() == [0.0, 0.2, 0.2, 0.2, 0.4]
    assert area == pytest.approx(1.0 / 5)
    empty_curve, empty_area = report_data.best_so_far(df.iloc[:0])
    assert empty_curve.size == 0 and math.isnan(empty_area)


def test_stopped_trials_count_only_when_none_finished():
    df = frame([("stopped", 0.3, {}), ("ok", 0.1, {})])
    assert report_data.best_so_far(df)[0].tolist() == [0.0, 0.1]
    assert report_data.best_so_far(frame([("stopped", 0.3, {})]))[0].tolist() == [0.3]


def test_gene_bounds_count_trials_at_each_end_and_hint_when_the_best_sits_there():
    low, high = SPACE.genes[SPACE.keys.index("lr0")].low, SPACE.genes[SPACE.keys.index("lr0")].high
    df = frame([("ok", 0.9, {"lr0": high}), ("ok", 0.5, {"lr0": high}), ("ok", 0.4, {"lr0": low}),
                ("ok", 0.3, {"lr0": 0.01}), ("failed", 0.0, {"lr0": low})])  # a failed trial does not count
    bounds = {b.key: b for b in report_data.gene_bounds(df, SPACE)}
    lr0 = bounds["lr0"]
    assert (lr0.trials, lr0.at_low, lr0.at_high, lr0.best_at) == (4, 1, 2, "high")
    assert lr0.hint("hyps/meta.yaml") == (f"the best trial and 2 of 4 trials sat at the high bound {high:g}: "
                                          "widen 'lr0' (high) in hyps/meta.yaml, unless 0.1 is a hard limit")
    # momentum never moved off the base (0.937, inside its range): no trial at a bound, no hint
    assert (bounds["momentum"].at_low, bounds["momentum"].at_high, bounds["momentum"].hint("m")) == (0, 0, "")


def test_a_share_of_trials_at_a_bound_gives_a_hint_without_the_best():
    gene = report_data.GeneBounds("scale", 0.0, 0.9, trials=10, at_low=3, at_high=0)
    assert gene.hint("meta.yaml").startswith("3 of 10 trials sat at the low bound 0: widen 'scale' (low)")
    assert report_data.GeneBounds("scale", 0.0, 0.9, trials=10, at_low=2, at_high=0).hint("m") == ""


def test_failures_are_counted_by_status_and_by_reason():
    df = frame([("ok", 0.5, {}), ("failed", 0.0, {}), ("failed", 0.0, {}), ("diverged", 0.0, {}),
                ("stopped", 0.2, {})])
    df["reason"] = ["", "CUDA out of memory", "CUDA out of memory", "non-finite loss", ""]
    statuses, reasons = report_data.failures(df)
    assert statuses == {"ok": 1, "failed": 2, "diverged": 1, "stopped": 1}
    assert reasons == [("CUDA out of memory", 2), ("non-finite loss", 1)]
    statuses, reasons = report_data.failures(df.drop(columns="reason"))
    assert reasons == [("(no reason recorded)", 3)]


def test_importance_ranks_the_gene_fitness_depends_on_first():
    pytest.importorskip("optuna")
    rng = random.Random(0)
    rows = []
    for _ in range(40):
        changes = {k: SPACE.genes[i].decode(rng.random()) for i, k in enumerate(SPACE.keys)}
        rows.append(("ok", 1.0 - abs(math.log10(changes["lr0"]) + 2.0) / 3.0, changes))  # a peak at lr0 1e-2
    scores, note = report_data.importance(frame(rows), SPACE)
    assert scores is not None and max(scores, key=scores.get) == "lr0"
    assert set(scores) == set(SPACE.keys)
    assert note.endswith("importance over 40 trials with a result")
    assert report_data.importance(frame(rows), SPACE)[0] == scores  # the same trials, the same numbers


def test_importance_says_why_when_it_cannot_be_estimated(monkeypatch):
    few = frame([("ok", 0.5, {})] * 4)
    assert report_data.importance(few, SPACE) == (None, "no importance estimate yet: 4 trial(s) with a "
                                                        "result, 5 needed")
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if not installed
    scores, note = report_data.importance(few, SPACE)
    assert scores is None and note.startswith("Optuna is not installed") and ".[report]" in note


def write_run(run_dir, n=8):
    records = RunRecords(run_dir, SPACE.keyset)
    for i in range(n):
        hyp = dict(SPACE.base, lr0=0.001 * (i + 1))
        fit = 0.0 if i == 3 else 0.1 * i
        status = "failed" if i == 3 else "ok"
        records.append(TrialRecord(i // 4, i % 4, f"g{i // 4:03d}i{i % 4:03d}", hyp,
                                   Metrics(fitness=fit, status=status, seconds=1.0,
                                           reason="boom" if status == "failed" else "")))
    cfg = EvolveConfig(explicit=frozenset({"--generations"}))
    save_checkpoint(run_dir, checkpoint_state(cfg, "digest", generation=1))


def test_gather_reads_a_run_folder(tmp_path):
    write_run(tmp_path)
    data = report_data.gather(tmp_path)
    assert data.run_dir == tmp_path.absolute() and len(data.trials) == 8
    assert data.best_row["trial_id"] == "g001i003" and data.best_row["fitness"] == pytest.approx(0.7)
    # the base is the detector's default for the run's optimizer, as the run itself loaded it
    trainer = trainer_for("detector")
    expected = SearchSpace.load(trainer.space_file, trainer.default_hyp(EvolveConfig().train.optimizer))
    assert data.best["lr0"] == pytest.approx(0.008) and data.base == expected.base
    assert data.evolved == SPACE.keys
    assert ("--generations", "300", True) in data.settings and ("--population", "50", False) in data.settings
    assert data.statuses == {"ok": 7, "failed": 1} and data.reasons == [("boom", 1)]
    assert data.area == pytest.approx(np.mean([0, 0.1, 0.2, 0.2, 0.4, 0.5, 0.6, 0.7]))
    assert set(data.images) == {"best_so_far.png"} and data.images["best_so_far.png"][:4] == b"\x89PNG"
    assert data.verdict == [] and data.validated is None and data.notes == []


def test_an_ultralytics_run_from_before_cls_pw_is_reported_as_recorded(tmp_path):
    # evolve.csv as the version whose Ultralytics key set had no cls_pw wrote it (its key set, same code).
    from dataclasses import replace

    from evolve.search.keyset import ULTRALYTICS

    old = replace(ULTRALYTICS, defaults=tuple(d for d in ULTRALYTICS.defaults if d[0] != "cls_pw"))
    records = RunRecords(tmp_path, old)
    for i, cls in enumerate((0.5, 0.8, 2.0)):
        records.append(TrialRecord(0, i, f"g000i00{i}", old.validate({"cls": cls}),
                                   Metrics(fitness=0.1 * (i + 1), status="ok", seconds=1.0)))
    cfg = EvolveConfig(trainer="ultralytics")
    save_checkpoint(tmp_path, checkpoint_state(cfg, "digest", generation=0))
    before = (tmp_path / "evolve.csv").read_bytes()
    data = report_data.gather(tmp_path)
    assert "cls_pw" not in data.trials.columns and data.best_row["trial_id"] == "g000i002"
    assert data.best["cls"] == 2.0 and "cls_pw" not in data.best  # only what the trials recorded
    assert "cls_pw" in data.evolved and [b.key for b in data.bounds if b.key == "cls_pw"] == []
    assert (tmp_path / "evolve.csv").read_bytes() == before  # reporting never rewrites the records


def test_a_run_without_checkpoint_still_gets_its_trials_with_a_note(tmp_path):
    write_run(tmp_path)
    (tmp_path / "checkpoint.pkl").unlink()
    data = report_data.gather(tmp_path)
    assert data.settings == [] and data.bounds == [] and data.best_row["trial_id"] == "g001i003"
    assert data.notes == ["no checkpoint.pkl yet: settings, base hyp and bounds are not shown"]


def test_a_folder_that_is_no_run_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"^--report .*nowhere: no such run folder$"):
        report_data.gather(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"^--report .*: not an evolution run folder \(no evolve.csv\)$"):
        report_data.gather(tmp_path)
