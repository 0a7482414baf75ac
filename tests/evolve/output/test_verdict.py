"""Tests of evolve/output/winners.py: the paired verdict, the transfer coefficient and the summary files
of a validation, from rows given here (no training)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from evolve.contract import Metrics, selection_value
from evolve.output.records import METRIC_COLUMNS
from evolve.output.winners import (
    COLUMNS,
    SUMMARY_COLUMNS,
    Candidate,
    ValidationRecords,
    ValidationRow,
    summarise,
    summary_line,
    transfer_text,
    write_summary,
)


def _summary(values: dict[str, list[float]], trial: dict[str, float] | None = None, epochs: int = 9):
    """A summary of candidates with the given fitness per seed (seeds 0, 1, ...)."""
    trial = trial or {}
    cands = [Candidate(label, {}, f"t-{label}", trial.get(label, math.nan), rank=i)
             for i, label in enumerate(values)]
    rows = [ValidationRow(c.label, c.source_trial_id, seed, epochs, Metrics(fitness=v))
            for c in cands for seed, v in enumerate(values[c.label])]
    return summarise(cands, rows, seeds=max(len(v) for v in values.values()), epochs=epochs)


def test_the_verdict_hands_over_a_candidate_only_when_its_interval_is_above_0():
    # top1's differences 0.10, 0.09, 0.11: mean 0.10, sd 0.01, half width 4.3027 * 0.01 / sqrt(3).
    win = _summary({"base": [0.20, 0.22, 0.21], "top1": [0.30, 0.31, 0.32], "top2": [0.25, 0.20, 0.30]})
    half = 4.302652729749 * 0.01 / math.sqrt(3)
    p = win.winner.paired
    assert win.winner.candidate.label == "top1" and win.beats_base
    assert (p.mean, p.low, p.high, p.n) == (pytest.approx(0.10), pytest.approx(0.10 - half),
                                            pytest.approx(0.10 + half), 3)
    assert win.gain == pytest.approx(0.31 / 0.21 - 1)
    assert summary_line(win) == (
        f"validated: top1 beats the base hyp by +0.1000 fitness (+47.6%), 95% CI [{0.10 - half:+.4f}, "
        f"{0.10 + half:+.4f}] over 3 paired seeds of 9 epochs; hyp_validated.yaml is top1 (top2 +0.0400 "
        f"[-0.0983, +0.1783])")  # diffs .05 -.02 .09: sd .0557
    # A higher mean that the seeds cannot tell from the base's is not handed over: the base is.
    close = _summary({"base": [0.20, 0.30, 0.25], "top1": [0.30, 0.31, 0.29]})
    assert close.winner is close.base and not close.beats_base and close.gain == 0.0
    assert close.tops[0].mean > close.base.mean and close.tops[0].paired.low < 0
    assert summary_line(close).startswith(
        "validated: no candidate's 95% interval of the paired difference is above the base hyp over 3 paired "
        "seeds of 9 epochs (top1 +0.0500 [")
    assert summary_line(close).endswith("]); hyp_validated.yaml is the base hyp")
    # Paired, not pooled: a large seed effect shared by both cancels out.
    shared = _summary({"base": [0.10, 0.50, 0.30], "top1": [0.12, 0.52, 0.31]})
    assert shared.beats_base and shared.winner.paired.low > 0
    # Several above 0: the largest paired gain; a sentinel above 0 is never handed over.
    two = _summary({"base": [0.2, 0.2, 0.2], "top1": [0.25, 0.26, 0.25], "top2": [0.3, 0.31, 0.3],
                    "sentinel1": [0.5, 0.5, 0.51]})
    assert two.winner.candidate.label == "top2" and two.standings[3].paired.above_zero


def test_rows_of_another_candidate_set_and_missing_pairs_are_not_mixed_in():
    cands = [Candidate("base", {}, "g0"), Candidate("top1", {}, "g5")]
    rows = [ValidationRow("base", "g0", 1, 3, Metrics(fitness=0.2)), ValidationRow("base", "g0", 2, 3,
                                                                                   Metrics(fitness=0.3)),
            ValidationRow("top1", "g5", 1, 3, Metrics(fitness=0.4)),
            ValidationRow("top1", "g9", 2, 3, Metrics(fitness=0.9)),  # top1 of an earlier ranking
            ValidationRow("top1", "g5", 3, 3, Metrics(fitness=float("nan"), status="failed"))]
    summary = summarise(cands, rows, 3, 3)
    top1 = summary.standings[1]
    assert top1.by_seed == {1: 0.4, 3: 0.0}  # a failed seed counts 0; the other trial's row is not top1's
    assert top1.paired.n == 1 and top1.paired.mean == pytest.approx(0.2) and not summary.beats_base


def test_transfer_text_gives_n_and_p_and_warns_when_poor_or_not_yet_told_apart():
    poor = _summary({"base": [0.4], "c1": [0.3], "c2": [0.2], "c3": [0.1]},
                    trial={"base": 0.1, "c1": 0.2, "c2": 0.3, "c3": 0.4})
    text = transfer_text(poor)
    assert text.startswith("transfer: Spearman -1.00 between trial and validated fitness over 4 hyps "
                           "(one-sided permutation p 1.000); the trials ranked the hyps poorly: give them more epochs")
    good = _summary({"base": [0.1], "c1": [0.2], "c2": [0.3], "c3": [0.4]},
                    trial={"base": 0.1, "c1": 0.2, "c2": 0.3, "c3": 0.4})
    assert transfer_text(good) == ("transfer: Spearman +1.00 between trial and validated fitness over 4 hyps "
                                   "(one-sided permutation p 0.042)")
    # c4 has no trial, so 4 points: ranks 1,3,2,4 give rho +0.8, reached by 4 orderings of 24 (p 0.167).
    values = [0.1, 0.3, 0.2, 0.5, 0.4]
    labels = ["base", "c1", "c2", "c3", "c4"]
    some = _summary({k: [v] for k, v in zip(labels, values)},
                    trial={k: 0.1 * (i + 1) for i, k in enumerate(labels[:4])})
    assert some.transfer_n == 4 and some.transfer == pytest.approx(0.8)
    assert transfer_text(some).endswith("(one-sided permutation p 0.167); with 4 hyps that is not yet told "
                                        "apart from chance: raise --validate-sentinels or --validate-top")
    assert transfer_text(_summary({"base": [0.1], "c1": [0.2]}, trial={"base": 0.1, "c1": 0.2})) == (
        "transfer: Spearman undefined over 2 hyps (it needs 3 with a trial, and no tie on one side)")


def test_validation_summary_csv_has_a_row_per_hyp_and_the_chosen_one(tmp_path):
    summary = _summary({"base": [0.20, 0.22, 0.21], "top1": [0.30, 0.31, 0.32],
                        "sentinel1": [0.1, 0.1, 0.12]}, trial={"base": 0.3, "top1": 0.5, "sentinel1": 0.2})
    path = write_summary(tmp_path, summary)
    df = pd.read_csv(path)
    assert path.name == "validation_summary.csv" and list(df.columns) == SUMMARY_COLUMNS
    assert list(df["candidate"]) == ["base", "top1", "sentinel1"] and list(df["chosen"]) == [0, 1, 0]
    assert list(df["above_base"]) == [0, 1, 0] and list(df["pairs"]) == [0, 3, 3]
    assert df["diff_mean"].iloc[1:].tolist() == pytest.approx([0.10, -0.1033333333])
    assert (df["transfer_n"] == 3).all() and df["transfer_spearman"].iloc[0] == pytest.approx(1.0)
    assert df["transfer_p"].iloc[0] == pytest.approx(1 / 6)
    assert df["mean"].tolist() == pytest.approx([0.21, 0.31, 0.10666667])


def test_a_torn_last_row_is_dropped_and_the_file_repaired(tmp_path):
    records = ValidationRecords(tmp_path)
    records.append(ValidationRow("base", "g000i000", 1, 3, Metrics(map50=0.5, map50_95=0.3).with_fitness()))
    with (tmp_path / "validation.csv").open("a") as fh:
        fh.write("top1,g001i0")
    rows = ValidationRecords(tmp_path).rows()
    assert [r.key for r in rows] == [("base", "g000i000", 1)]
    assert (tmp_path / "validation.csv").read_text().endswith("\n")
    assert len(METRIC_COLUMNS) == 7 and set(METRIC_COLUMNS) <= set(COLUMNS)


def test_the_transfer_ranks_stopped_trials_below_finished_ones_as_selection_does():
    # A stopped trial's rung fitness (0.6) is above the finished trials' (0.3, 0.4, 0.5), but selection
    # ranks it last; the validated means follow the selection order, so the transfer is +1, not -0.2.
    statuses = {"base": ("ok", 0.3), "top1": ("ok", 0.5), "top2": ("ok", 0.4), "sentinel1": ("stopped", 0.6)}
    cands = [Candidate(label, {}, f"t-{label}", fit, rank=i,
                       score=selection_value(Metrics(fitness=fit, status=status)))
             for i, (label, (status, fit)) in enumerate(statuses.items())]
    means = {"base": 0.30, "top1": 0.50, "top2": 0.40, "sentinel1": 0.10}
    rows = [ValidationRow(c.label, c.source_trial_id, 0, 9, Metrics(fitness=means[c.label])) for c in cands]
    summary = summarise(cands, rows, seeds=1, epochs=9)
    assert summary.transfer_n == 4 and summary.transfer == pytest.approx(1.0)
    # Without a score (a summary read back from its CSV) the trial fitness is what ranks.
    for c in cands:
        c.score = math.nan
    assert summarise(cands, rows, seeds=1, epochs=9).transfer == pytest.approx(-0.2)
