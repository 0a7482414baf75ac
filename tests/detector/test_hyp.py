"""Hyp files: the YOLOv5 key set loads unchanged (anchors commented out included); bad files name the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detector.errors import HypError
from detector.hyp import ADAMW_HYP_PATH, DEFAULT_HYP, DEFAULT_HYP_PATH, HYP_KEYS, default_hyp_path, load_hyp, validate_hyp

# The layout of YOLOv5's hyp.scratch-high.yaml: its values, trailing comments, and `anchors` commented out.
YOLOV5_HIGH = """# a YOLOv5-layout hyp file for heavy augmentation
lr0: 0.01  # initial learning rate
lrf: 0.1  # final learning rate fraction
momentum: 0.937
weight_decay: 0.0005
warmup_epochs: 3.0
warmup_momentum: 0.8
warmup_bias_lr: 0.1
box: 0.05
cls: 0.3
cls_pw: 1.0
obj: 0.7
obj_pw: 1.0
iou_t: 0.20
anchor_t: 4.0
# anchors: 3  # anchors per output layer
fl_gamma: 0.0
hsv_h: 0.015
hsv_s: 0.7
hsv_v: 0.4
degrees: 0.0
translate: 0.1
scale: 0.9
shear: 0.0
perspective: 0.0
flipud: 0.0
fliplr: 0.5
mosaic: 1.0
mixup: 0.1
copy_paste: 0.1
"""


def test_our_default_file_has_the_yolov5_defaults():
    hyp = load_hyp(DEFAULT_HYP_PATH)
    assert list(hyp) == list(HYP_KEYS) and len(hyp) == 29
    assert hyp == DEFAULT_HYP
    assert hyp["lr0"] == 0.01 and hyp["momentum"] == 0.937 and hyp["anchors"] == 3
    assert isinstance(hyp["anchors"], int)


def test_the_adamw_default_differs_from_yolov5_in_lr0_only_and_serves_every_adam_family_choice():
    adamw = load_hyp(ADAMW_HYP_PATH)
    assert list(adamw) == list(HYP_KEYS)
    assert {k: v for k, v in adamw.items() if v != DEFAULT_HYP[k]} == {"lr0": 0.005}
    assert default_hyp_path("SGD") == DEFAULT_HYP_PATH
    assert [default_hyp_path(o) for o in ("auto", "Adam", "AdamW")] == [ADAMW_HYP_PATH] * 3


def test_a_yolov5_file_loads_unchanged_with_anchors_defaulted(tmp_path: Path):
    path = tmp_path / "hyp.scratch-high.yaml"
    path.write_text(YOLOV5_HIGH)
    hyp = load_hyp(path)
    assert hyp["scale"] == 0.9 and hyp["mixup"] == 0.1 and hyp["cls"] == 0.3 and hyp["lrf"] == 0.1
    assert hyp["anchors"] == 3
    assert set(hyp) == set(HYP_KEYS)


def test_an_evolved_file_round_trips(tmp_path: Path):
    hyp = dict(DEFAULT_HYP, lr0=0.00731, anchors=4)
    path = tmp_path / "hyp_evolve.yaml"
    path.write_text("# header\n" + yaml.safe_dump(hyp, sort_keys=False))
    assert load_hyp(path) == hyp


def test_an_evolved_file_may_name_its_optimizer(tmp_path: Path):
    hyp = dict(DEFAULT_HYP, lr0=0.002, optimizer="AdamW")
    path = tmp_path / "hyp_evolve.yaml"
    path.write_text(yaml.safe_dump(hyp, sort_keys=False))
    assert load_hyp(path) == hyp and "optimizer" not in load_hyp(DEFAULT_HYP_PATH)


@pytest.mark.parametrize("text, fragment", [
    ("lr0: 0.01\nfoo: 1\n", "unknown hyperparameter key 'foo'"),
    ("lr0: fast\n", "key 'lr0' must be a finite number"),
    ("lr0: .nan\n", "key 'lr0' must be a finite number"),
    ("mosaic: true\n", "key 'mosaic' must be a finite number"),
    ("anchors: 0\n", "key 'anchors' must be >= 1"),
    ("optimizer: Lion\n", "key 'optimizer' must be one of SGD, Adam, AdamW"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("lr0: [0.01\n", "not valid YAML"),
])
def test_bad_hyp_files_name_the_file_and_key(tmp_path: Path, text: str, fragment: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(HypError) as exc:
        load_hyp(path)
    message = str(exc.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(HypError, match="nope.yaml: hyp file not found"):
        load_hyp(tmp_path / "nope.yaml")


def test_validate_fills_missing_keys_with_defaults():
    hyp = validate_hyp({"lr0": 0.02}, source="cli")
    assert hyp["lr0"] == 0.02 and hyp["mosaic"] == DEFAULT_HYP["mosaic"] and len(hyp) == 29
