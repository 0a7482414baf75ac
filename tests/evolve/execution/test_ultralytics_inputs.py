"""Tests of evolve/execution/ultralytics_inputs.py: the model and data checks made before an Ultralytics
run (with Ultralytics' own rules, so a trial cannot fail on what they passed) and the data handed to its
trials."""
from __future__ import annotations

from pathlib import Path

import pytest

import orchestrate
from evolve.errors import ConfigError

pytest.importorskip("ultralytics")

from evolve.execution.ultralytics_inputs import check_model, check_version
from evolve.search.keyset import ULTRALYTICS

TINY = ["--trainer", "ultralytics", "--imgsz", "64", "--epochs", "1", "--batch", "8", "--workers", "0",
        "--generations", "1", "--population", "2"]
GOOD_YAML = "nc: 2\nscales:\n  n: [0.33, 0.25, 1024]\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n" \
            "  - [-1, 1, Conv, [32, 3, 2]]\n  - [-1, 1, Conv, [64, 3, 2]]\n" \
            "head:\n  - [[0, 1, 2], 1, Detect, [nc]]\n"


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        orchestrate.main(argv)
    return exc.value.code, capsys.readouterr().err


def _checkpoint(path: Path, cfg: str) -> Path:
    import torch
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    model = (SegmentationModel if "-seg" in cfg else DetectionModel)(cfg, nc=2, verbose=False)
    torch.save({"model": model}, path)
    return path


def _models(tmp: Path) -> dict[str, tuple[str, str]]:
    """name -> (--model, what the one-line refusal says)."""
    (tmp / "no_head.yaml").write_text("nc: 2\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n")
    (tmp / "bad_module.yaml").write_text(GOOD_YAML.replace("Conv, [32", "NoSuchBlock, [32"))
    (tmp / "not_yaml.yaml").write_text("backbone: [unclosed\n")
    (tmp / "garbage.pt").write_bytes(b"\x89PNG not a checkpoint")
    (tmp / "model.onnx").write_bytes(b"onnx")
    _checkpoint(tmp / "seg.pt", "yolov8n-seg.yaml")
    return {
        "YAML without a head": (str(tmp / "no_head.yaml"), "Ultralytics cannot build this model (KeyError"),
        "YAML with an unknown block": (str(tmp / "bad_module.yaml"), "Ultralytics cannot build this model"),
        "YAML that does not parse": (str(tmp / "not_yaml.yaml"), "Ultralytics cannot read this model YAML"),
        "segmentation YAML": ("yolov8n-seg.yaml", "a segment model; --trainer ultralytics trains detection"),
        "garbage .pt": (str(tmp / "garbage.pt"), "not a checkpoint Ultralytics can load (TypeError"),
        "segmentation .pt": (str(tmp / "seg.pt"), "a segment model"),
        "neither YAML nor .pt": (str(tmp / "model.onnx"), "or a checkpoint (.pt), got a .onnx file"),
    }


CASES = ["YAML without a head", "YAML with an unknown block", "YAML that does not parse", "segmentation YAML",
         "garbage .pt", "segmentation .pt", "neither YAML nor .pt"]


@pytest.mark.parametrize("case", CASES)
def test_a_model_ultralytics_would_fail_on_is_refused_by_name(case, tmp_path):
    model, message = _models(tmp_path)[case]
    with pytest.raises(ConfigError) as exc:
        check_model(model, nc=2)
    text = str(exc.value)
    assert text.startswith(f"--model {model}: ") and message in text and "\n" not in text, text


def test_models_ultralytics_trains_pass_the_check(tmp_path):
    (tmp_path / "mine.yaml").write_text(GOOD_YAML)
    assert check_model(str(tmp_path / "mine.yaml"), nc=3) == str(tmp_path / "mine.yaml")
    assert check_model("n", nc=1) == "yolo11n.yaml"
    pt = _checkpoint(tmp_path / "det.pt", str(tmp_path / "mine.yaml"))
    assert check_model(str(pt), nc=5) == str(pt)


@pytest.mark.parametrize("case", ["YAML without a head", "garbage .pt"])
def test_a_broken_model_is_one_line_exit_2_before_any_folder(case, tmp_path, capsys):
    model, message = _models(tmp_path)[case]
    code, err = cli([*TINY, "--model", model, "--project", str(tmp_path / "runs")], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_ultralytics_reads_the_images_and_labels_our_check_read(tmp_path, monkeypatch):
    """A .txt list in a subfolder (a root-relative line and a ./ line) and a symlinked val folder: the
    trial's data YAML makes Ultralytics list the very images of the data check, each with its label."""
    from types import SimpleNamespace

    from PIL import Image
    from ultralytics.data.base import BaseDataset
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    from detector.data import load_data_config
    from evolve.execution.ultralytics_inputs import write_data

    root = tmp_path / "set"
    for split, folder in (("train", root / "images" / "train"), ("val", tmp_path / "store")):
        folder.mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8)).save(folder / f"{i}.jpg")
            (root / "labels" / split / f"{i}.txt").write_text(f"{i} 0.5 0.5 0.2 0.2\n")
    (root / "images" / "val").symlink_to(tmp_path / "store", target_is_directory=True)
    (root / "lists").mkdir()
    (root / "lists" / "train.txt").write_text("images/train/0.jpg\n./../images/train/1.jpg\n")
    data = root / "data.yaml"
    data.write_text("path: .\ntrain: lists/train.txt\nval: images/val\nnames: [a, b]\n")
    ours = load_data_config(data)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # a trial works in a folder of its own
    out, embedded = write_data(str(data), tmp_path / "trial")
    resolved = check_det_dataset(str(out))
    assert not embedded and resolved["nc"] == 2
    for split, images in (("train", ours.train), ("val", ours.val)):
        listed = BaseDataset.get_img_files(SimpleNamespace(prefix="", fraction=1.0), resolved[split])
        assert listed == sorted(str(p) for p in images) and len(listed) == 2
        assert [Path(label).read_text()[0] for label in img2label_paths(listed)] == ["0", "1"]


def test_a_hyp_an_older_ultralytics_lacks_is_refused_only_when_the_run_would_move_it():
    base = ULTRALYTICS.default_hyp()
    older = set(ULTRALYTICS.keys) - {"cls_pw"}  # Ultralytics before 8.4.50 has no cls_pw
    check_version(["lr0", "momentum"], base, older, "8.4.30")  # held at its default: not passed, fine
    check_version(["lr0", "cls_pw"], base, ULTRALYTICS.keys, "8.4.190")  # this version has it
    with pytest.raises(ConfigError, match=r"evolves 'cls_pw', which Ultralytics 8\.4\.30 does not have"):
        check_version(["lr0", "cls_pw"], base, older, "8.4.30")
    with pytest.raises(ConfigError, match=r"base hyp sets 'cls_pw' to 0\.3, which Ultralytics 8\.4\.30"):
        check_version(["lr0"], {**base, "cls_pw": 0.3}, older, "8.4.30")


def test_the_shipped_search_space_passes_the_installed_ultralytics():
    # the default meta evolves cls_pw: the version the install requires (>= 8.4.50) has it
    from evolve.config import config_from_argv
    from evolve.execution.ultralytics_inputs import preflight

    preflight(config_from_argv(["--trainer", "ultralytics", "--model", "yolov8n.yaml"]))
