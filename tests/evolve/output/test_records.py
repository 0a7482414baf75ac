"""Tests of evolve.records: evolve.csv rows and recovery, hyp_evolve.yaml, population files."""
from __future__ import annotations

import errno
import logging
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from detector.hyp import DEFAULT_HYP, DEFAULT_HYP_PATH, HYP_KEYS, load_hyp
from evolve.contract import Metrics
from evolve.errors import ConfigError
from evolve.output.records import (
    CSV_COLUMNS,
    METRIC_COLUMNS,
    RunRecords,
    TrialRecord,
)
from evolve.output.population import read_hyp_dir, read_population


def make_hyp(**changes: float) -> dict[str, float]:
    hyp = dict(DEFAULT_HYP)
    hyp.update(changes)
    return hyp


def make_record(gen: int, ind: int, fitness: float, status: str = "ok", **hyp: float) -> TrialRecord:
    metrics = Metrics(precision=0.5 + ind / 100, recall=0.25, map50=0.6, map50_95=0.4, box_loss=0.03125,
                      obj_loss=0.0625, cls_loss=0.0078125, fitness=fitness, epochs=2, seconds=12.5 + ind,
                      status=status)
    return TrialRecord(gen, ind, f"g{gen:03d}i{ind:03d}", make_hyp(**hyp), metrics)


def test_columns_are_the_yolov5_names_then_every_hyp_key():
    assert CSV_COLUMNS[:5] == ["generation", "individual", "trial_id", "status", "fitness"]
    assert METRIC_COLUMNS == ["metrics/precision", "metrics/recall", "metrics/mAP_0.5",
                              "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss", "val/cls_loss"]
    assert CSV_COLUMNS[5:12] == METRIC_COLUMNS
    assert CSV_COLUMNS[12] == "seconds"
    assert CSV_COLUMNS[13:-1] == list(HYP_KEYS)
    assert CSV_COLUMNS[-1] == "reason"  # appended last: the YOLOv5 columns keep their places


def test_three_appends_give_three_exact_rows_readable_by_pandas(tmp_path):
    records = RunRecords(tmp_path)
    assert not (tmp_path / "evolve.csv").exists()
    records.append(make_record(0, 0, 0.1234567890123, lr0=0.0123456789))
    records.append(make_record(0, 1, 0.2, status="failed", momentum=0.9))
    records.append(make_record(1, 0, 0.3, anchors=4, degrees=12.5))
    text = (tmp_path / "evolve.csv").read_text()
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert text.count("generation,individual") == 1
    df = pd.read_csv(tmp_path / "evolve.csv")
    assert list(df.columns) == CSV_COLUMNS
    assert len(df) == 3
    for col in ["generation", "individual", "fitness", "seconds", *METRIC_COLUMNS, *HYP_KEYS]:
        assert pd.api.types.is_numeric_dtype(df[col]), col
    assert df["trial_id"].tolist() == ["g000i000", "g000i001", "g001i000"]
    assert df["status"].tolist() == ["ok", "failed", "ok"]
    assert df["fitness"].tolist() == [0.1234567890123, 0.2, 0.3]  # metrics are written exactly
    assert df["metrics/precision"].tolist() == [0.5, 0.51, 0.5]
    assert df["val/cls_loss"].tolist() == [0.0078125] * 3
    assert df["seconds"].tolist() == [12.5, 13.5, 12.5]
    assert df["lr0"].tolist() == [0.0123457, 0.01, 0.01]  # hyps: 6 significant digits
    assert df["momentum"].tolist() == [0.937, 0.9, 0.937]
    assert df["anchors"].tolist() == [3, 3, 4]
    assert df["degrees"].tolist() == [0.0, 0.0, 12.5]
    assert len(records) == 3

    rows = records.rows()
    assert [(r.generation, r.individual, r.metrics.status) for r in rows] == [(0, 0, "ok"), (0, 1, "failed"),
                                                                                (1, 0, "ok")]
    assert rows[0].metrics.fitness == 0.1234567890123
    assert rows[0].metrics.map50_95 == 0.4 and rows[0].metrics.box_loss == 0.03125
    assert rows[2].hyp["anchors"] == 4 and isinstance(rows[2].hyp["anchors"], int)
    assert list(rows[2].hyp) == list(HYP_KEYS)


def test_reopened_records_append_without_a_second_header_and_keep_the_best(tmp_path):
    first = RunRecords(tmp_path)
    first.append(make_record(0, 0, 0.5, lr0=0.02))
    first.append(make_record(0, 1, 0.3))
    again = RunRecords(tmp_path)
    assert len(again) == 2
    assert again.best().trial_id == "g000i000"
    again.append(make_record(1, 0, 0.4))
    lines = (tmp_path / "evolve.csv").read_text().splitlines()
    assert len(lines) == 4 and lines[0] == ",".join(CSV_COLUMNS)
    assert again.best().trial_id == "g000i000"


def test_different_header_is_refused_and_the_file_left_untouched(tmp_path):
    path = tmp_path / "evolve.csv"
    old = "generation,fitness,lr0\n0,0.5,0.01\n"
    path.write_text(old)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"evolve\.csv.*header.*column 2: 'fitness', expected 'individual'"):
        RunRecords(tmp_path)
    assert path.read_bytes() == before


def test_one_line_foreign_file_without_newline_is_refused(tmp_path):
    path = tmp_path / "evolve.csv"
    path.write_text("epoch,loss")
    with pytest.raises(ConfigError, match=r"evolve\.csv: header"):
        RunRecords(tmp_path)
    assert path.read_text() == "epoch,loss"


def test_bad_complete_row_names_file_line_and_column(tmp_path):
    RunRecords(tmp_path).append(make_record(0, 0, 0.5))
    path = tmp_path / "evolve.csv"
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[CSV_COLUMNS.index("lr0")] = "abc"
    path.write_text("\n".join([lines[0], lines[1], ",".join(cells)]) + "\n")
    with pytest.raises(ConfigError, match=r"evolve\.csv: line 3: column 'lr0' is not a number"):
        RunRecords(tmp_path)
    cells[CSV_COLUMNS.index("lr0")] = "0.01"
    cells[CSV_COLUMNS.index("status")] = "great"
    path.write_text("\n".join([lines[0], ",".join(cells)]) + "\n")
    with pytest.raises(ConfigError, match=r"evolve\.csv: line 2: column 'status'"):
        RunRecords(tmp_path)
    path.write_text("\n".join([lines[0], "0,1,x"]) + "\n")
    with pytest.raises(ConfigError, match=r"evolve\.csv: line 2: 3 fields, expected 43"):
        RunRecords(tmp_path)


def test_torn_last_line_is_dropped_and_appending_continues(tmp_path, caplog):
    first = RunRecords(tmp_path)
    first.append(make_record(0, 0, 0.5))
    first.append(make_record(0, 1, 0.25))
    path = tmp_path / "evolve.csv"
    intact = path.read_text()
    with path.open("a") as fh:
        fh.write("0,2,g000i002,ok,0.9,0.1")  # the driver died mid-row
    with caplog.at_level(logging.WARNING, logger="evolve.output.records"):
        records = RunRecords(tmp_path)
    assert "incomplete last line" in caplog.text
    assert path.read_text() == intact
    assert len(records) == 2
    records.append(make_record(0, 2, 0.7))
    df = pd.read_csv(path)
    assert df["trial_id"].tolist() == ["g000i000", "g000i001", "g000i002"]
    assert df["fitness"].tolist() == [0.5, 0.25, 0.7]


def test_torn_header_and_nul_filled_tail_are_recovered(tmp_path):
    path = tmp_path / "evolve.csv"
    path.write_text(",".join(CSV_COLUMNS)[:30])
    records = RunRecords(tmp_path)
    assert path.read_text() == "" and len(records) == 0
    records.append(make_record(0, 0, 0.5))
    with path.open("a") as fh:
        fh.write("\x00" * 40 + "\n")
    assert len(RunRecords(tmp_path)) == 1
    assert len(pd.read_csv(path)) == 1


def _best_file(tmp_path: Path) -> tuple[dict, str]:
    text = (tmp_path / "hyp_evolve.yaml").read_text()
    return yaml.safe_load(text), text


def test_hyp_evolve_holds_the_best_and_round_trips(tmp_path):
    records = RunRecords(tmp_path)
    records.append(make_record(0, 0, 0.25, lr0=0.0123456789012, anchors=4))
    loaded, text = _best_file(tmp_path)
    assert loaded == records.best().hyp
    assert list(loaded) == list(HYP_KEYS)
    assert loaded["lr0"] == 0.0123456789012 and loaded["anchors"] == 4 and isinstance(loaded["anchors"], int)
    assert load_hyp(tmp_path / "hyp_evolve.yaml") == loaded
    assert "# Best trial: generation 0, individual 0, trial_id g000i000, status ok" in text
    assert "# Trials so far: 1" in text
    for name in METRIC_COLUMNS:
        assert f"# {name}: " in text
    assert "# metrics/mAP_0.5:0.95: 0.4\n" in text and "# fitness: 0.25 " in text
    assert "--hyp" in text

    records.append(make_record(0, 1, 0.5, momentum=0.9))  # better: rewritten
    loaded, text = _best_file(tmp_path)
    assert loaded["momentum"] == 0.9 and "# Trials so far: 2" in text and "trial_id g000i001" in text
    records.append(make_record(0, 2, 0.4, momentum=0.8))  # worse: left as is
    records.append(make_record(0, 3, 0.9, status="failed", momentum=0.7))  # failed never counts
    loaded, text = _best_file(tmp_path)
    assert loaded["momentum"] == 0.9 and "# Trials so far: 2" in text
    records.append(make_record(1, 0, 0.5, momentum=0.85))  # a tie keeps the earlier one
    assert records.best().trial_id == "g000i001"


def test_stopped_counts_only_until_an_ok_trial_exists(tmp_path):
    records = RunRecords(tmp_path)
    records.append(make_record(0, 0, 0.0, status="failed", lr0=0.05))
    assert records.best() is None
    assert not (tmp_path / "hyp_evolve.yaml").exists()
    records.append(make_record(0, 1, 0.8, status="stopped", lr0=0.04))
    assert records.best().trial_id == "g000i001"
    assert _best_file(tmp_path)[0]["lr0"] == 0.04
    records.append(make_record(0, 2, 0.3, status="ok", lr0=0.03))  # lower fitness, but it finished
    assert records.best().trial_id == "g000i002"
    assert _best_file(tmp_path)[0]["lr0"] == 0.03
    records.append(make_record(0, 3, 0.95, status="stopped", lr0=0.02))
    assert records.best().trial_id == "g000i002"
    assert _best_file(tmp_path)[0]["lr0"] == 0.03
    assert RunRecords(tmp_path).best().trial_id == "g000i002"  # same rule when read back


def test_population_round_trip(tmp_path):
    records = RunRecords(tmp_path)
    hyps = [make_hyp(lr0=0.001 * (i + 1), anchors=3 + i, mosaic=0.25 * i) for i in range(3)]
    path = records.write_population(7, hyps)
    assert path == tmp_path / "evolve_population.yaml"
    raw = yaml.safe_load(path.read_text())
    assert list(raw) == ["gen7number0", "gen7number1", "gen7number2"]
    assert list(raw["gen7number1"]) == list(HYP_KEYS)
    assert read_population(path) == hyps
    assert [h["anchors"] for h in read_population(path)] == [3, 4, 5]
    assert list(tmp_path.glob("*.tmp")) == []


def test_plain_hyp_file_is_one_individual(tmp_path):
    assert read_population(DEFAULT_HYP_PATH) == [DEFAULT_HYP]
    partial = tmp_path / "partial.yaml"
    partial.write_text("lr0: 0.002\nmomentum: 0.9\n")
    (hyp,) = read_population(partial)
    assert hyp["lr0"] == 0.002 and hyp["momentum"] == 0.9 and hyp["mosaic"] == 1.0


@pytest.mark.parametrize("content, message", [
    ("- lr0: 0.01\n", r"bad\.yaml: expected a mapping of hyperparameters, got list"),
    ("gen0number0: {lr0: 0.01}\ngen0number1: 0.5\n", r"bad\.yaml: entry 'gen0number1' is not a mapping"),
    ("gen0number0: {lr0: 0.01, lr9: 1.0}\n", r"bad\.yaml: entry 'gen0number0': unknown .* key 'lr9'"),
    ("gen0number0: {lr0: fast}\n", r"bad\.yaml: entry 'gen0number0': key 'lr0' must be a finite number"),
    ("lr0: 0.01\nwarp: 2\n", r"bad\.yaml: unknown hyperparameter key 'warp'"),
    ("momentum: high\n", r"bad\.yaml: key 'momentum' must be a finite number"),
    ("", r"bad\.yaml: empty file"),
    ("lr0: [0.01\n", r"bad\.yaml: not valid YAML"),
])
def test_bad_population_files_name_file_and_entry(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_population(path)


def test_missing_population_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: population file not found"):
        read_population(tmp_path / "nope.yaml")


def test_hyp_dir_reads_yaml_and_yml_sorted_by_name(tmp_path):
    (tmp_path / "b.yml").write_text("lr0: 0.002\n")
    (tmp_path / "a.yaml").write_text("lr0: 0.001\n")
    (tmp_path / "c.yaml").write_text("gen0number0: {lr0: 0.003}\ngen0number1: {lr0: 0.004}\n")
    (tmp_path / "notes.txt").write_text("lr0: nonsense\n")
    assert [h["lr0"] for h in read_hyp_dir(tmp_path)] == [0.001, 0.002, 0.003, 0.004]
    (tmp_path / "d.yaml").write_text("lr0: 0.01\nbogus: 1\n")
    with pytest.raises(ConfigError, match=r"d\.yaml: unknown hyperparameter key 'bogus'"):
        read_hyp_dir(tmp_path)


def test_hyp_dir_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"missing: population folder not found"):
        read_hyp_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty: no \*\.yaml or \*\.yml hyp files"):
        read_hyp_dir(tmp_path / "empty")


def test_non_finite_fitness_is_written_and_never_best(tmp_path):
    records = RunRecords(tmp_path)
    records.append(make_record(0, 0, math.nan))
    records.append(make_record(0, 1, 0.1))
    assert records.best().trial_id == "g000i001"
    assert math.isnan(pd.read_csv(tmp_path / "evolve.csv")["fitness"][0])


def test_metric_a_trainer_left_empty_is_recorded_as_nan(tmp_path):
    rec = make_record(0, 0, 0.3)
    rec.metrics.box_loss = None
    records = RunRecords(tmp_path)
    records.append(rec)
    df = pd.read_csv(tmp_path / "evolve.csv")
    assert math.isnan(df["val/box_loss"][0]) and df["fitness"][0] == 0.3
    assert "# val/box_loss: nan" in (tmp_path / "hyp_evolve.yaml").read_text()


def test_a_failed_trial_keeps_its_reason_in_the_last_column(tmp_path):
    records = RunRecords(tmp_path)
    rec = make_record(0, 0, 0.0, status="failed")
    rec.metrics.reason = "invalid result: map50 1.7 outside [0, 1], see\nthe log"
    records.append(rec)
    records.append(make_record(0, 1, 0.5))
    df = pd.read_csv(tmp_path / "evolve.csv", keep_default_na=False)
    assert list(df.columns) == CSV_COLUMNS
    assert list(df["reason"]) == ["invalid result: map50 1.7 outside [0, 1], see the log", ""]
    assert [r.metrics.reason for r in RunRecords(tmp_path).rows()] == [df["reason"][0], ""]


def test_a_file_written_before_the_reason_column_is_read_and_upgraded_on_append(tmp_path, caplog):
    RunRecords(tmp_path).append(make_record(0, 0, 0.5))
    path = tmp_path / "evolve.csv"
    old = "".join(line.rsplit(",", 1)[0] + "\n" for line in path.read_text().splitlines())
    path.write_text(old)  # the layout of earlier versions: no reason column
    assert pd.read_csv(path).shape[1] == len(CSV_COLUMNS) - 1
    with caplog.at_level(logging.WARNING):
        records = RunRecords(tmp_path)
    assert "adding the 'reason' column" in caplog.text
    records.append(make_record(0, 1, 0.25, status="failed"))
    df = pd.read_csv(path)
    assert list(df.columns) == CSV_COLUMNS and len(df) == 2
    assert [r.metrics.fitness for r in records.rows()] == [0.5, 0.25]
    assert path.read_text().splitlines()[1] == old.splitlines()[1] + ","


# evolve.csv of an Ultralytics run as written before its key set had cls_pw (made by that version).
ULTRALYTICS_CSV_WITHOUT_CLS_PW = """\
generation,individual,trial_id,status,fitness,metrics/precision,metrics/recall,metrics/mAP_0.5,\
metrics/mAP_0.5:0.95,val/box_loss,val/obj_loss,val/cls_loss,seconds,lr0,lrf,momentum,weight_decay,\
warmup_epochs,warmup_momentum,warmup_bias_lr,box,cls,dfl,hsv_h,hsv_s,hsv_v,degrees,translate,scale,\
shear,perspective,flipud,fliplr,bgr,mosaic,mixup,cutmix,copy_paste,close_mosaic,optimizer,reason
0,0,g000i000,ok,0.275,0.4,0.3,0.5,0.25,1.1,0.0,2.0,12.5,0.0123,0.01,0.937,0.0005,3,0.8,0.1,7.5,0.8,\
1.5,0.015,0.7,0.4,0,0.1,0.5,0,0,0,0.5,0,1,0,0,0,4,SGD,
0,1,g000i001,failed,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.01,0.01,0.937,0.0005,3,0.8,0.1,7.5,0.5,\
1.5,0.015,0.7,0.4,0,0.1,0.5,0,0,0,0.5,0,1,0,0,0,10,SGD,"RuntimeError: boom, twice"
"""


def test_a_file_without_a_column_the_key_set_gained_later_reads_it_at_its_default(tmp_path, caplog):
    from evolve.output.records import csv_columns
    from evolve.search.keyset import ULTRALYTICS

    path = tmp_path / "evolve.csv"
    path.write_text(ULTRALYTICS_CSV_WITHOUT_CLS_PW)
    old = pd.read_csv(path)
    assert "cls_pw" not in old.columns and len(old) == 2
    with caplog.at_level(logging.INFO, logger="evolve.output.records"):
        records = RunRecords(tmp_path, ULTRALYTICS)
    notes = [r for r in caplog.records if r.name == "evolve.output.records"]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO
    assert "before the ultralytics key set had cls_pw" in notes[0].getMessage()
    rows = records.rows()
    assert [[r.hyp[k] for k in ("lr0", "cls", "cls_pw", "dfl", "close_mosaic")] for r in rows] == [
        [0.0123, 0.8, 0.0, 1.5, 4], [0.01, 0.5, 0.0, 1.5, 10]]
    assert [r.metrics.fitness for r in rows] == [0.275, 0.0]
    assert rows[1].metrics.reason == "RuntimeError: boom, twice"
    assert records.best().trial_id == "g000i000" and len(records) == 2
    metrics = Metrics(map50=0.6, map50_95=0.3).with_fitness()
    records.append(TrialRecord(1, 0, "g001i000", ULTRALYTICS.validate({"cls_pw": 0.4}), metrics))
    new = pd.read_csv(path)  # one layout for old and new rows: the column added, every other cell as it was
    assert list(new.columns) == csv_columns(ULTRALYTICS) and list(new["cls_pw"]) == [0.0, 0.0, 0.4]
    assert new.drop(columns="cls_pw").iloc[:2].equals(old)
    assert [r.hyp["cls_pw"] for r in RunRecords(tmp_path, ULTRALYTICS).rows()] == [0.0, 0.0, 0.4]


def test_the_header_names_a_command_of_the_trainer_that_takes_the_file(tmp_path):
    from evolve.search.keyset import ULTRALYTICS

    records = RunRecords(tmp_path / "det")
    records.append(make_record(0, 0, 0.5))
    text = (tmp_path / "det" / "hyp_evolve.yaml").read_text()
    best = tmp_path / "det" / "hyp_evolve.yaml"
    assert f"# Use: python -m detector train --data DATA.yaml --hyp {best}" in text

    ul = pytest.importorskip("ultralytics.cfg")
    hyp = ULTRALYTICS.validate({"lr0": 0.02}, source="test")
    records = RunRecords(tmp_path / "ul", ULTRALYTICS)
    records.append(TrialRecord(0, 0, "g000i000", hyp, Metrics(map50=0.5, map50_95=0.3).with_fitness()))
    path = tmp_path / "ul" / "hyp_evolve.yaml"
    text = path.read_text()
    assert "python -m detector" not in text
    assert f"# Use: yolo train cfg={path} model=MODEL.yaml data=DATA.yaml" in text
    assert f"YOLO('MODEL.yaml').train(cfg='{path}', data='DATA.yaml')" in text
    args = ul.get_cfg(cfg=str(path))  # what cfg= does with the file: Ultralytics' own key and type checks
    assert (args.lr0, args.optimizer) == (0.02, hyp["optimizer"])


def test_a_trial_failed_for_a_full_disk_is_no_row_but_enospc(tmp_path):
    records = RunRecords(tmp_path)
    records.append(make_record(0, 0, 0.5))
    before = (tmp_path / "evolve.csv").read_bytes()
    for reason in ("OSError: [Errno 28] No space left on device: '/runs/exp/trials/g000i001/log.txt'",
                   "RuntimeError: PytorchStreamWriter failed: Disk quota exceeded"):
        rec = make_record(0, 1, 0.0, status="failed")
        rec.metrics.reason = reason
        with pytest.raises(OSError) as err:
            records.append(rec)
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path)
        assert "trial g000i001 failed for want of disk space" in err.value.strerror
    assert (tmp_path / "evolve.csv").read_bytes() == before and len(records) == 1
    other = make_record(0, 1, 0.0, status="failed")
    other.metrics.reason = "ValueError: lr0 must be positive"  # a failure of its own: recorded
    records.append(other)
    assert len(records) == 2 and records.mark()["rows"] == 2


def test_a_record_the_disk_refuses_is_not_counted(tmp_path):
    records = RunRecords(tmp_path)
    records.append(make_record(0, 0, 0.5))
    mark = records.mark()
    (tmp_path / "evolve.csv").unlink()
    (tmp_path / "evolve.csv").symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(OSError) as err:
        records.append(make_record(0, 1, 0.9))
    assert err.value.errno == errno.ENOSPC
    assert len(records) == 1 and records.mark() == mark and records.best().individual == 0
