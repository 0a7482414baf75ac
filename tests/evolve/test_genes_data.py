"""A run with a categorical optimizer gene, custom --fitness-weights and two data sets (``--data a,b``):
the trial result on several data sets (evolve/execution/trainable.py, evolve/contract.py), the records
(evolve/output/records.py), hyp_evolve.yaml, plots, resume and the refusals (evolve/config/run.py,
evolve/loops/plan.py), on the session's Ray with the surrogate trainer."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import optimizer_meta
from evolve.config.trial import TrialConfig
from evolve.errors import ConfigError
from evolve.execution.trainable import execute, metrics_from_result, result_row
from evolve.output.records import CSV_COLUMNS, LEAD_COLUMNS, METRIC_COLUMNS, PART_COLUMNS
from evolve.output.winners import COLUMNS as VALIDATION_COLUMNS, ValidationRecords
from evolve.search.keyset import YOLOV5
from evolve.search.space import SearchSpace
from tests.evolve.loops.test_driver import config
from tests.test_orchestrate import cli, snapshot

WEIGHTS = (0.1, 0.1, 0.2, 0.6)
NAMES = ["shapes", "cells"]


def _data(folder: Path) -> list[Path]:
    # The surrogate trainer only reads the file names; each scores differently.
    paths = [folder / "a" / "shapes.yaml", folder / "b" / "cells.yaml"]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("path: .\ntrain: images\nval: images\nnames: [thing]\n")
    return paths


def _cfg(tmp_path: Path, **kw) -> TrialConfig:
    data = ",".join(str(p) for p in _data(tmp_path))
    return TrialConfig(data=data, epochs=2, fitness_weights=WEIGHTS, project=str(tmp_path / "t"), **kw)


def test_a_trial_on_two_data_sets_is_their_mean_with_running_reports(tmp_path: Path) -> None:
    hyp = {**SearchSpace.load().base, "optimizer": "Adam"}
    reports = []
    m, error = execute("surrogate", hyp, _cfg(tmp_path), lambda e, r: reports.append((e, r)))
    assert error == "" and m.status == "ok" and list(m.per_data) == NAMES and m.epochs == 4
    parts = [m.per_data[n] for n in NAMES]
    assert parts[0]["fitness"] != parts[1]["fitness"]
    for part in parts:
        assert part["fitness"] == pytest.approx(sum(w * part[f] for w, f in
                                                    zip(WEIGHTS, ("precision", "recall", "map50", "map50_95"))))
    assert m.fitness == pytest.approx(sum(p["fitness"] for p in parts) / 2)
    assert m.map50_95 == pytest.approx(sum(p["map50_95"] for p in parts) / 2)
    # Epochs count on across the data sets; a report is the mean of the finished ones and the current.
    assert [e for e, _ in reports] == [1, 2, 3, 4]
    assert reports[1][1].fitness == pytest.approx(parts[0]["fitness"])
    assert reports[3][1].fitness == pytest.approx(m.fitness)
    assert list(reports[2][1].per_data) == NAMES
    back = metrics_from_result(result_row(m, m.epochs, final=True))  # through Tune's flat results
    assert back.per_data == m.per_data and back.fitness == m.fitness


def test_a_failing_data_set_fails_the_trial_and_skips_the_rest(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, surrogate={"failure_rate": 1.0})
    m, error = execute("surrogate", SearchSpace.load().base, cfg, lambda e, r: None)
    assert m.status == "failed" and m.fitness == 0.0 and list(m.per_data) == ["shapes"]
    assert error.startswith("data shapes: RuntimeError") and m.reason.startswith("data shapes:")


def test_two_data_sets_with_one_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="two data sets named 'shapes'"):
        TrialConfig(data=f"{tmp_path}/a/shapes.yaml,{tmp_path}/b/shapes.yaml")


FLAGS = ["--trainer", "surrogate", "--population", "6", "--epochs", "2", "--seed", "3", "--elite", "1,1",
         "--fitness-weights", ",".join(map(str, WEIGHTS)), "--validate-top", "1", "--validate-seeds", "2",
         "--validate-sentinels", "0", "--validate-epochs", "2"]


@pytest.fixture(scope="module")
def genes_run(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str):
    from evolve.driver import run

    root = tmp_path_factory.mktemp("genes")
    data = ",".join(str(p) for p in _data(root))
    meta = optimizer_meta(root)
    common = [*FLAGS, "--meta", str(meta), "--data", data, "--project", str(root / "runs")]
    straight = run(config([*common, "--generations", "3", "--name", "straight"]))
    # The same run killed after the third trial of its last generation: its records up to there, then resumed.
    resumed = root / "runs" / "resumed"
    shutil.copytree(straight, resumed, ignore=shutil.ignore_patterns("validation*", "hyp_validated.yaml"))
    lines = (straight / "evolve.csv").read_text().splitlines(keepends=True)
    before = "".join(lines[:-3])
    (resumed / "evolve.csv").write_text(before)
    run(config(["--resume", str(resumed)]))
    return {"root": root, "data": data, "meta": meta, "resumed": resumed, "before": before,
            "straight": straight}


def test_records_hold_the_optimizer_and_per_data_set_metrics(genes_run) -> None:
    run_dir = genes_run["straight"]
    header = (run_dir / "evolve.csv").read_text().split("\n", 1)[0].split(",")
    tail = [f"{n}/{c}" for n in NAMES for c in PART_COLUMNS]
    assert header == [*LEAD_COLUMNS, *YOLOV5.keys, "optimizer", "reason", *tail]
    assert tail[:2] == ["shapes/fitness", "shapes/metrics/precision"] and "cells/mAP_0.5:0.95" not in tail
    df = pd.read_csv(run_dir / "evolve.csv")
    ok = df[df.status == "ok"]
    assert len(ok) == len(df) >= 10 and 2 <= len(set(df.optimizer)) and set(df.optimizer) <= {"AdamW", "Adam", "SGD"}
    for column in ("fitness", *METRIC_COLUMNS):
        assert ok[column].to_numpy() == pytest.approx(
            (ok[f"shapes/{column}"] + ok[f"cells/{column}"]).to_numpy() / 2, rel=1e-9)
    assert (ok["shapes/fitness"] != ok["cells/fitness"]).all()
    for name in NAMES:  # each data set's fitness under the run's weights
        parts = [ok[f"{name}/metrics/precision"], ok[f"{name}/metrics/recall"], ok[f"{name}/metrics/mAP_0.5"],
                 ok[f"{name}/metrics/mAP_0.5:0.95"]]
        assert ok[f"{name}/fitness"].to_numpy() == pytest.approx(sum(w * p for w, p in zip(WEIGHTS, parts)))
    for _, row in df.iterrows():  # lr0 in the range of the row's optimizer
        low, high = (1e-3, 1e-1) if row.optimizer == "SGD" else (1e-4, 2e-2)
        assert low <= row.lr0 <= high


def test_hyp_evolve_population_plots_and_validation_carry_the_optimizer(genes_run) -> None:
    run_dir = genes_run["straight"]
    df = pd.read_csv(run_dir / "evolve.csv")
    best = df.loc[df.fitness.idxmax()]
    text = (run_dir / "hyp_evolve.yaml").read_text()
    hyp = yaml.safe_load(text)
    assert hyp["optimizer"] == best.optimizer and list(hyp) == [*YOLOV5.keys, "optimizer"]
    assert hyp["lr0"] == pytest.approx(best.lr0)
    assert "0.1 * metrics/precision + 0.1 * metrics/recall + 0.2 * mAP_0.5 + 0.6 * mAP_0.5:0.95" in text
    assert "means over the data sets shapes, cells" in text
    population = yaml.safe_load((run_dir / "evolve_population.yaml").read_text())
    assert all(v["optimizer"] in ("AdamW", "Adam", "SGD") for v in population.values())
    for name in ("evolve.png", "fitness.png", "validation.csv", "hyp_validated.yaml"):
        assert (run_dir / name).stat().st_size > 0, name
    assert yaml.safe_load((run_dir / "hyp_validated.yaml").read_text())["optimizer"] in ("AdamW", "Adam", "SGD")
    # Validation trains on both data sets too, and records each: the surrogate's smooth landscape has no
    # seed noise, so each validated figure is its trial's, and the fitness their mean.
    tail = [f"{n}/{c}" for n in NAMES for c in PART_COLUMNS]
    assert (run_dir / "validation.csv").read_text().split("\n", 1)[0].split(",") == [*VALIDATION_COLUMNS, *tail]
    validated = pd.read_csv(run_dir / "validation.csv").merge(df, left_on="source_trial_id", right_on="trial_id",
                                                              suffixes=("", "_trial"))
    assert len(validated) == 4  # the base and top1, two seeds each
    for column in ("fitness", *tail):
        assert validated[column].to_numpy() == pytest.approx(validated[f"{column}_trial"].to_numpy())
    assert validated["fitness"].to_numpy() == pytest.approx(
        (validated["shapes/fitness"] + validated["cells/fitness"]).to_numpy() / 2)
    assert (abs(validated["fitness"] - validated["shapes/fitness"]) > 1e-3).all()
    # Read back with the per-data-set figures; read as a single-data-set file, its header is refused.
    rows = ValidationRecords(run_dir, NAMES).rows()
    assert [sorted(r.metrics.per_data) for r in rows] == [sorted(NAMES)] * 4
    with pytest.raises(ConfigError, match="validation.csv: header is not that of a validation.csv"):
        ValidationRecords(run_dir)


def test_resume_continues_exactly(genes_run) -> None:
    resumed = (genes_run["resumed"] / "evolve.csv").read_text()
    straight = (genes_run["straight"] / "evolve.csv").read_text()
    assert resumed.startswith(genes_run["before"])
    a, b = pd.read_csv(genes_run["resumed"] / "evolve.csv"), pd.read_csv(genes_run["straight"] / "evolve.csv")
    # Trials end in any order and their seconds are timed; everything else is the same, row for row.
    a, b = (x.drop(columns="seconds").sort_values("trial_id").reset_index(drop=True) for x in (a, b))
    pd.testing.assert_frame_equal(a, b)
    assert yaml.safe_load((genes_run["resumed"] / "hyp_evolve.yaml").read_text()) == \
        yaml.safe_load((genes_run["straight"] / "hyp_evolve.yaml").read_text())


def test_resume_refuses_another_data_list(genes_run, capsys) -> None:
    run_dir = genes_run["resumed"]
    before = snapshot(run_dir)
    first = genes_run["data"].split(",")[0]
    code, err = cli(["--resume", str(run_dir), "--data", first], capsys)
    assert code == 2 and err.count("\n") == 1 and "start a new run to change the data sets" in err
    assert snapshot(run_dir) == before


def test_a_missing_data_set_of_the_list_is_named(tmp_path: Path, capsys) -> None:
    data = f"{_data(tmp_path)[0]},{tmp_path / 'gone.yaml'}"
    code, err = cli([*FLAGS, "--data", data, "--project", str(tmp_path / "runs")], capsys)
    assert code == 2 and "gone.yaml: data YAML not found" in err and not (tmp_path / "runs").exists()


def test_single_data_layout_is_unchanged() -> None:
    assert CSV_COLUMNS == [*LEAD_COLUMNS, *YOLOV5.keys, "reason"]
