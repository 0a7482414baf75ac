"""Tests of detector/cli.py: help, exit status 2 with a one-line message naming the file/key/line for
every kind of bad input, and working train / resume / val commands."""
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from detector.cli import main

TRAIN_FLAGS = ("--data", "--hyp", "--model", "--epochs", "--imgsz", "--batch", "--device", "--workers",
               "--seed", "--project", "--name", "--exist-ok", "--resume", "--optimizer", "--cos-lr",
               "--val-every", "--no-save", "--sync-bn", "--max-images", "--nbs", "--cache-dir",
               "--no-autoanchor", "--no-amp")


def tiny_args(tiny_data, tmp_path, *extra):
    return ["train", "--data", str(tiny_data), "--imgsz", "64", "--batch", "8", "--epochs", "1", "--workers",
            "0", "--project", str(tmp_path / "runs"), "--quiet", *extra]


def run_main(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert [flag for flag in TRAIN_FLAGS if flag not in out] == []
    with pytest.raises(SystemExit):
        main(["val", "--help"])
    out = capsys.readouterr().out
    assert "--weights" in out and "--conf-thres" in out


def test_missing_data_file(tiny_data, tmp_path, capsys):
    code, _, err = run_main(tiny_args(tiny_data, tmp_path)[:1] + ["--data", str(tmp_path / "missing.yaml")],
                            capsys)
    assert code == 2
    assert "missing.yaml" in one_error_line(err)


def test_missing_hyp_file(tiny_data, tmp_path, capsys):
    code, _, err = run_main(tiny_args(tiny_data, tmp_path, "--hyp", str(tmp_path / "nohyp.yaml")), capsys)
    assert code == 2
    assert "nohyp.yaml" in one_error_line(err)


def test_unknown_hyp_key_names_file_and_key(tiny_data, tmp_path, capsys):
    hyp = tmp_path / "typo.yaml"
    hyp.write_text("lr0: 0.01\nmomentun: 0.9\n")
    code, _, err = run_main(tiny_args(tiny_data, tmp_path, "--hyp", str(hyp)), capsys)
    assert code == 2
    line = one_error_line(err)
    assert "typo.yaml" in line and "'momentun'" in line
    assert not (tmp_path / "runs").exists()  # nothing written for a rejected run


def test_bad_label_names_file_and_line(tiny_data, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(tiny_data.parent, root)
    label = root / "labels" / "train" / "000003.txt"
    label.write_text(label.read_text() + "7 0.5 0.5 0.1 0.1\n")
    bad_line = len(label.read_text().splitlines())
    data = root / "data.yaml"
    config = yaml.safe_load(data.read_text())
    config["path"] = str(root)
    data.write_text(yaml.safe_dump(config))
    code, _, err = run_main(tiny_args(data, tmp_path), capsys)
    assert code == 2
    assert f"000003.txt:{bad_line}:" in one_error_line(err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags,needle", [(["--imgsz", "100"], "imgsz must be a multiple of 32"),
                                          (["--epochs", "0"], "--epochs must be >= 1"),
                                          (["--device", "gpu"], "--device"),
                                          (["--val-every", "-1"], "--val-every must be >= 0")])
def test_bad_flag_values(tiny_data, tmp_path, capsys, flags, needle):
    code, _, err = run_main(tiny_args(tiny_data, tmp_path, *flags), capsys)
    assert code == 2
    assert needle in one_error_line(err)


def test_bad_bf16_environment_value_names_the_variable(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("YOLO_EVOLVE_BF16", "no")
    code, _, err = run_main(tiny_args(tiny_data, tmp_path), capsys)
    assert code == 2
    assert "YOLO_EVOLVE_BF16='no'" in one_error_line(err)
    assert not (tmp_path / "runs").exists()


def test_val_missing_weights(tmp_path, capsys):
    code, _, err = run_main(["val", "--weights", str(tmp_path / "gone.pt")], capsys)
    assert code == 2
    assert "gone.pt" in one_error_line(err)


def test_val_of_a_checkpoint_prints_metrics(trained_run, capsys):
    code, out, _ = run_main(["val", "--weights", str(trained_run.save_dir / "weights" / "last.pt"),
                             "--workers", "0", "--quiet"], capsys)
    assert code == 0
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["status"] == "ok" and metrics["epochs"] == 2
    assert metrics["box_loss"] == pytest.approx(trained_run.metrics.box_loss, rel=1e-4)


def test_train_then_resume_from_the_command_line(tiny_data, tmp_path, capsys):
    code, out, _ = run_main(tiny_args(tiny_data, tmp_path, "--name", "cli", "--seed", "3"), capsys)
    assert code == 0
    first = json.loads(out.strip().splitlines()[-1])
    assert first["status"] == "ok" and first["epochs"] == 1
    last = tmp_path / "runs" / "cli" / "weights" / "last.pt"
    assert last.is_file()
    # --resume takes data, sizes and seed from the checkpoint; only --epochs is raised here
    code, out, _ = run_main(["train", "--resume", str(last), "--epochs", "2", "--quiet"], capsys)
    assert code == 0
    second = json.loads(out.strip().splitlines()[-1])
    assert second["status"] == "ok" and second["epochs"] == 2
    assert len((tmp_path / "runs" / "cli" / "results.csv").read_text().splitlines()) == 3
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["cli"]
    # Without --hyp, auto (AdamW here) trains with the AdamW file's lr0; the resume kept the run's hyps.
    assert yaml.safe_load((tmp_path / "runs" / "cli" / "hyp.yaml").read_text())["lr0"] == 0.005


def test_without_hyp_sgd_trains_with_the_yolov5_file(tiny_data, tmp_path, capsys):
    code, _, _ = run_main(tiny_args(tiny_data, tmp_path, "--name", "sgd", "--optimizer", "SGD", "--no-save"), capsys)
    assert code == 0
    assert yaml.safe_load((tmp_path / "runs" / "sgd" / "hyp.yaml").read_text())["lr0"] == 0.01


def test_diverged_run_exits_1(tiny_data, tmp_path, capsys):
    hyp = tmp_path / "hot.yaml"
    hyp.write_text("lr0: 1000000.0\nwarmup_bias_lr: 1000000.0\n")
    code, out, _ = run_main(tiny_args(tiny_data, tmp_path, "--hyp", str(hyp), "--no-save"), capsys)
    assert code == 1
    assert json.loads(out.strip().splitlines()[-1])["status"] == "diverged"


def test_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "detector", "train", "--data", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {tmp_path / 'none.yaml'}: --data file not found"


def test_flags_are_the_train_config_fields_with_their_defaults(capsys):
    from dataclasses import fields

    from detector.cli import _config_from_args, build_parser
    from detector.config import TrainConfig, flagged_fields

    flags = {spec.flag for _, spec in flagged_fields()}
    assert flags | {"--hyp", "--quiet"} == set(TRAIN_FLAGS) | {"--threads", "--conf-thres", "--iou-thres",
                                                                "--max-det", "--quiet"}
    # No flag given: exactly TrainConfig's defaults (--quiet aside, which turns the progress bar off).
    args = build_parser().parse_args(["train", "--quiet"])
    assert _config_from_args(args, TrainConfig().to_dict()) == TrainConfig(progress=False)
    # Every switch and value flag lands on its own field.
    args = build_parser().parse_args(["train", "--no-save", "--no-amp", "--no-autoanchor", "--cos-lr",
                                      "--sync-bn", "--exist-ok", "--batch", "4", "--conf-thres", "0.25",
                                      "--optimizer", "SGD", "--model", "s", "--resume", "r.pt"])
    cfg = _config_from_args(args, TrainConfig().to_dict())
    assert (cfg.save_weights, cfg.amp, cfg.autoanchor, cfg.cos_lr, cfg.sync_bn, cfg.exist_ok) == \
        (False, False, False, True, True, True)
    assert (cfg.batch, cfg.conf_thres, cfg.optimizer, cfg.model, cfg.resume) == (4, 0.25, "SGD", "s", "r.pt")
    assert {f.name for f in fields(TrainConfig)} - {f.name for f, _ in flagged_fields()} == \
        {"progress", "batch_augment"}
    # --help shows each default from the dataclass
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("(default: 16)", "(default: 100)", "(default: runs/train)", "(default: 0.001)", "(default: 300)",
                 "(default: n)", "{auto,SGD,Adam,AdamW}", "{n,s,m}"):
        assert text in out, text


RANGE_CASES = [("train", "--batch", "0", "--batch must be >= 1, got 0"),
               ("train", "--epochs", "-3", "--epochs must be >= 1, got -3"),
               ("train", "--nbs", "0", "--nbs must be >= 1, got 0"),
               ("train", "--threads", "0", "--threads must be >= 1, got 0"),
               ("train", "--max-images", "0", "--max-images must be >= 1, got 0"),
               ("train", "--max-det", "0", "--max-det must be >= 1, got 0"),
               ("train", "--workers", "-1", "--workers must be >= 0, got -1"),
               ("train", "--val-every", "-2", "--val-every must be >= 0, got -2"),
               ("train", "--imgsz", "16", "--imgsz must be a multiple of 32 and >= 32, got 16"),
               ("train", "--imgsz", "100", "--imgsz must be a multiple of 32 and >= 32, got 100"),
               ("val", "--imgsz", "100", "--imgsz must be a multiple of 32 and >= 32, got 100"),
               ("val", "--batch", "0", "--batch must be >= 1, got 0"),
               ("val", "--workers", "-1", "--workers must be >= 0, got -1")]


@pytest.mark.parametrize("command,flag,value,message", RANGE_CASES)
def test_out_of_range_flag_is_one_line_naming_the_flag(tiny_data, tmp_path, capsys, command, flag, value, message):
    inputs = (["--weights", str(tmp_path / "never-read.pt")] if command == "val"
              else ["--data", str(tiny_data), "--project", str(tmp_path / "runs")])
    code, out, err = run_main([command, *inputs, flag, value], capsys)
    assert code == 2 and out == ""
    assert one_error_line(err) == f"error: {message}"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag,value", [("--model", "x"), ("--optimizer", "Lion"), ("--batch", "many"),
                                        ("--conf-thres", "high")])
def test_bad_choice_or_type_is_an_argparse_error_naming_the_flag(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        main(["train", flag, value, "--project", str(tmp_path / "runs")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: invalid" in err and repr(value) in err
    assert not (tmp_path / "runs").exists()
