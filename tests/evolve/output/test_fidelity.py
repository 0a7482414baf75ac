"""Tests of evolve/output/fidelity.py: fidelity.csv rows, the trial-epochs total read back on resume, the
rung-to-final agreement and its warning, fidelity.yaml."""
from __future__ import annotations

import logging

import pandas as pd
import pytest
import yaml

from evolve.contract import Metrics, sanitised
from evolve.errors import ConfigError
from evolve.output.fidelity import MIN_PAIRS, FidelityRecords, read_summary


def trial(records: FidelityRecords, tid: str, curve: dict[int, float], final: float | None,
          epochs: int) -> None:
    """A trial that reported ``curve`` (epoch -> fitness) and ended: ok with ``final``, else stopped."""
    for epoch, value in curve.items():
        records.epoch(tid, epoch, Metrics(fitness=value, epochs=epoch))
    if final is None:
        last = max(curve)
        records.finished(tid, Metrics(fitness=curve[last], epochs=epochs, status="stopped"))
    else:
        records.finished(tid, Metrics(fitness=final, epochs=epochs))


def test_rows_hold_epochs_and_rung_fitness_and_the_total_is_read_back(tmp_path):
    records = FidelityRecords(tmp_path, "prefix", 9, [1, 3])
    trial(records, "a", {1: 0.2, 2: 0.25, 3: 0.3, 9: 0.5}, 0.5, 9)
    trial(records, "b", {1: 0.1}, None, 1)
    # as JobSource.on_result hands it over, judged: a failure is worth 0
    records.finished("c", sanitised(Metrics(status="failed", epochs=4, fitness=0.7)))
    df = pd.read_csv(tmp_path / "fidelity.csv")
    assert list(df.columns) == ["trial_id", "status", "epochs", "fitness", "fitness_epoch1", "fitness_epoch3"]
    assert df["trial_id"].tolist() == ["a", "b", "c"] and df["status"].tolist() == ["ok", "stopped", "failed"]
    assert df["epochs"].tolist() == [9, 1, 4] and df["fitness"].tolist() == [0.5, 0.1, 0.0]
    assert df["fitness_epoch1"].tolist()[:2] == [0.2, 0.1] and df["fitness_epoch3"].isna().tolist() == [
        False, True, True]
    assert records.trial_epochs == 14
    again = FidelityRecords(tmp_path, "prefix", 9, [1, 3])  # a resumed run goes on counting
    trial(again, "d", {1: 0.3}, None, 1)
    assert (again.trials, again.trial_epochs) == (4, 15)
    assert again.history() == {1: [0.2, 0.1, 0.3], 3: [0.3]}  # what a resumed ASHA's rungs start from
    summary = yaml.safe_load((tmp_path / "fidelity.yaml").read_text())
    assert summary == {"fidelity": "prefix", "target_epochs": 9, "rungs": [1, 3], "trials": 4,
                       "trial_epochs": 15, "agreement": []}
    assert read_summary(tmp_path) == summary and read_summary(tmp_path / "none") == {}


def test_a_torn_last_line_is_dropped_and_another_layout_refused(tmp_path):
    records = FidelityRecords(tmp_path, "compressed", 2, [])
    records.finished("a", Metrics(fitness=0.5, epochs=2))
    path = tmp_path / "fidelity.csv"
    path.write_text(path.read_text() + "b,ok,")
    assert FidelityRecords(tmp_path, "compressed", 2, []).trial_epochs == 2
    assert path.read_text() == "trial_id,status,epochs,fitness\na,ok,2,0.5\n"
    with pytest.raises(ConfigError, match=r"fidelity\.csv: columns trial_id,status,epochs,fitness are not "
                                          r"those of this run"):
        FidelityRecords(tmp_path, "prefix", 9, [1])
    path.write_text("trial_id,status,epochs,fitness\na,ok,x,0.5\n")
    with pytest.raises(ConfigError, match=r"fidelity\.csv: line 2: invalid literal"):
        FidelityRecords(tmp_path, "compressed", 2, [])


def test_agreement_waits_for_enough_finished_trials_and_warns_once_when_poor(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    records = FidelityRecords(tmp_path, "prefix", 9, [1, 3])
    trial(records, "s", {1: 0.9}, None, 1)  # stopped: no final fitness, not counted
    for i in range(MIN_PAIRS - 1):  # rung 1 rises with i, the final falls: they disagree
        trial(records, f"t{i}", {1: 0.1 * i, 3: 0.1 * i}, 0.5 - 0.1 * i, 9)
    assert records.agreement() == [] and records.note() == ""
    assert "poor" not in caplog.text
    trial(records, "t4", {1: 0.4, 3: 0.4}, 0.1, 9)
    [first, second] = records.agreement()
    assert (first.epoch, first.spearman, first.n) == (1, pytest.approx(-1.0), 5) and second.epoch == 3
    assert records.note() == "rung~final epoch 1 Spearman -1.00 (n 5)"
    assert caplog.text.count("rung-to-final agreement is poor at epoch 1 Spearman -1.00 (n 5)") == 1
    assert caplog.text.count("agreement is poor at epoch 3") == 1
    trial(records, "t5", {1: 0.5, 3: 0.5}, 0.05, 9)
    assert caplog.text.count("agreement is poor at epoch 1") == 1  # once while it stays poor
    # The same trial run again (its driver died before evolve.csv had it): its epochs count twice, its
    # result once.
    trial(records, "t5", {1: 0.5, 3: 0.5}, 0.05, 9)
    assert records.trial_epochs == 1 + 7 * 9 and records.agreement()[0].n == 6
    summary = yaml.safe_load((tmp_path / "fidelity.yaml").read_text())
    assert summary["agreement"] == [{"epoch": 1, "spearman": -1.0, "n": 6},
                                    {"epoch": 3, "spearman": -1.0, "n": 6}]
    assert records.line() == ("trial-epochs spent: 64 over 8 trials (--fidelity prefix, trials of 9 epochs); "
                              "rung-to-final agreement: epoch 1 Spearman -1.00 (n 6), epoch 3 Spearman -1.00 "
                              "(n 6)")


def test_agreement_that_recovers_is_warned_again_when_it_turns_poor(tmp_path, caplog):
    records = FidelityRecords(tmp_path, "prefix", 4, [1])
    for i in range(MIN_PAIRS):  # disagreeing: rung up, final down
        trial(records, f"d{i}", {1: 0.01 * i}, 0.05 - 0.01 * i, 4)
    assert caplog.text.count("agreement is poor at epoch 1") == 1
    for i in range(20):  # then agreeing trials above them on both sides
        trial(records, f"a{i}", {1: 0.1 + 0.01 * i}, 0.5 + 0.01 * i, 4)
    assert records.agreement()[0].spearman > 0.9
    for i in range(10):  # then trials with the best rung fitness and falling finals
        trial(records, f"b{i}", {1: 0.3 + 0.01 * i}, 0.45 - 0.01 * i, 4)
    assert records.agreement()[0].spearman == pytest.approx(0.108, abs=0.001)
    assert caplog.text.count("agreement is poor at epoch 1") == 2


def test_compressed_without_rungs_counts_epochs_only(tmp_path):
    records = FidelityRecords(tmp_path, "compressed", 3, [])
    for i in range(6):
        records.finished(f"t{i}", Metrics(fitness=0.1 * i, epochs=3))
    assert records.agreement() == [] and records.note() == ""
    assert records.line() == ("trial-epochs spent: 18 over 6 trials (--fidelity compressed, trials of 3 "
                              "epochs)")
