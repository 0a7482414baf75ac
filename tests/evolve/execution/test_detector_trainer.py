"""Tests of evolve/execution/detector_trainer.py's data check, run through the command line: bad data is
one line naming the file (and line), exit status 2, before any run folder exists or Ray starts."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import orchestrate
from evolve.config import TrialConfig, config_from_argv
from evolve.execution.detector_trainer import check_data
from evolve.execution.trainers import trainer_for

GOOD_LABEL = "0 0.5 0.5 0.25 0.25\n"


def make_data(root: Path, labels: str = GOOD_LABEL, yaml_text: str | None = None, images: int = 2) -> Path:
    """A tiny YOLO data set: ``images`` 32 px PNGs in each split, each with ``labels``."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(images):
            Image.new("RGB", (32, 32), (i * 40, 90, 160)).save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text(labels)
    path = root / "data.yaml"
    path.write_text(yaml_text if yaml_text is not None else
                    "path: .\ntrain: images/train\nval: images/val\nnames: [thing]\n")
    return path


def refuse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line, expect exit status 2; its stderr."""
    with pytest.raises(SystemExit) as info:
        orchestrate.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def argv(data: Path, project: Path) -> list[str]:
    return ["--data", str(data), "--epochs", "1", "--max-images", "16", "--imgsz", "64", "--population", "2",
            "--generations", "3", "--project", str(project)]


YAML_CASES = {
    "no val": ("path: .\ntrain: images/train\nnames: [thing]\n", "missing key 'val'"),
    "names empty": ("path: .\ntrain: images/train\nval: images/val\nnames: []\n",
                    "key 'names' must be a non-empty list"),
    "path missing": ("path: nowhere\ntrain: images/train\nval: images/val\nnames: [a]\n",
                     "key 'path': folder not found"),
    "empty folder": ("path: .\ntrain: images/train\nval: empty\nnames: [a]\n", "key 'val': no images found"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_a_bad_data_yaml_is_one_line_exit_2_and_no_run_folder(case, tmp_path, capsys):
    text, message = YAML_CASES[case]
    data = make_data(tmp_path / "data", yaml_text=text)
    (tmp_path / "data" / "empty").mkdir()
    err = refuse(argv(data, tmp_path / "runs"), capsys)
    assert err.count("\n") == 1 and f"{data}: {message}" in err, err
    assert not (tmp_path / "runs").exists()


LABEL_CASES = {
    "6 columns": ("0 0.5 0.5 0.2 0.2 0.1\n", "expected 5 columns 'class xc yc w h', got 6"),
    "nan": ("0 nan 0.5 0.2 0.2\n", "non-finite value"),
    "negative width": ("0 0.5 0.5 -0.2 0.2\n", "box width and height must be positive"),
    "class 1.5": ("1.5 0.5 0.5 0.2 0.2\n", "class 1.5 is not an integer"),
}


@pytest.mark.parametrize("case", sorted(LABEL_CASES))
def test_a_bad_label_line_is_named_by_file_and_line(case, tmp_path, capsys):
    line, message = LABEL_CASES[case]
    data = make_data(tmp_path / "data")
    bad = tmp_path / "data" / "labels" / "val" / "1.txt"
    bad.write_text(GOOD_LABEL + line)
    err = refuse(argv(data, tmp_path / "runs"), capsys)
    assert err.count("\n") == 1 and f"{bad}:2: {message}" in err, err
    assert not (tmp_path / "runs").exists()


def test_unreadable_images_are_counted_and_the_rest_of_the_data_passes(tmp_path):
    data = make_data(tmp_path / "data", images=3)
    (tmp_path / "data" / "images" / "train" / "1.png").write_bytes(b"not a png at all")
    summary = check_data(TrialConfig(data=str(data)))
    assert summary.images == 6 and len(summary.unreadable) == 1
    assert "1 unreadable image(s) will be skipped" in summary.line()
    assert summary.unreadable[0].endswith("1.png")
    for i in range(3):
        (tmp_path / "data" / "images" / "val" / f"{i}.png").write_bytes(b"")
    with pytest.raises(ValueError, match="key 'val': none of the 3 images can be read"):
        check_data(TrialConfig(data=str(data)))


def test_a_split_without_any_label_file_is_refused_naming_where_labels_were_looked_for(tmp_path):
    data = make_data(tmp_path / "data")
    for label in (tmp_path / "data" / "labels" / "val").iterdir():
        label.unlink()
    (tmp_path / "data" / "labels" / "train" / "0.txt").unlink()  # one background image is fine
    with pytest.raises(ValueError, match=r"data\.yaml: key 'val': none of the 2 images has a label file "
                                         r"\(looked for .*/data/labels/val/0\.txt"):
        check_data(TrialConfig(data=str(data)))


def test_the_check_is_the_detector_trainers_and_absent_for_others(tmp_path):
    assert check_data(TrialConfig()) is None  # the embedded data set is the detector's own
    assert trainer_for("detector").check_entry.endswith("detector_trainer:check_data")
    assert trainer_for("surrogate").check_data(TrialConfig(data=str(tmp_path / "x.yaml"))) is None


def test_the_unreadable_count_reaches_the_console_before_the_run(tmp_path, caplog):
    from evolve.loops.plan import prepare

    data = make_data(tmp_path / "data")
    (tmp_path / "data" / "images" / "val" / "0.png").write_bytes(b"\x00" * 10)
    cfg = config_from_argv(argv(data, tmp_path / "runs"))
    with caplog.at_level("INFO"):
        prepare(cfg)
    assert "data checked: 4 images, every label file valid; 1 unreadable image(s) will be skipped" in caplog.text
    assert not (tmp_path / "runs").exists()


def test_a_trial_config_becomes_the_detectors_train_config_and_its_metrics_ours():
    from detector.results import Metrics as DetectorMetrics
    from evolve.contract import Metrics
    from evolve.execution.detector_trainer import evolve_metrics, train_config

    trial = TrialConfig(epochs=3, batch=4, imgsz=64, seed=5, val_every=0, extra={"note": 1})
    cfg = train_config(trial)
    assert (cfg.epochs, cfg.batch, cfg.imgsz, cfg.seed, cfg.val_every) == (3, 4, 64, 5, 0)
    assert not hasattr(cfg, "extra")  # a user's trainer options are no setting of the detector
    assert cfg.cache_dir is None and cfg.save_weights is False  # the trial's, not the detector's default
    assert train_config(trial.replace(cache_dir="/c")).cache_dir == "/c"
    theirs = DetectorMetrics(precision=0.5, recall=0.4, map50=0.3, map50_95=0.2, fitness=0.21, epochs=3)
    ours = evolve_metrics(theirs)
    assert type(ours) is Metrics
    assert (ours.map50, ours.map50_95, ours.fitness, ours.epochs) == (0.3, 0.2, 0.21, 3)
