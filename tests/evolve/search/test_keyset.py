"""Tests of evolve/search/keyset.py and of the shipped defaults: the YOLOv5 key set agrees with the detector
and with hyps/hyp.scratch-low.yaml, the defaults load through importlib.resources, and bad hyps are
ConfigErrors naming file and key."""
from __future__ import annotations

from importlib.resources import files

import pytest
import yaml

import hyps
from detector.hyp import DEFAULT_HYP, INTEGER_KEYS
from evolve.errors import ConfigError
from evolve.search.keyset import YOLOV5
from evolve.search.space import SearchSpace


def test_the_yolov5_key_set_is_the_detectors_and_the_shipped_files():
    assert YOLOV5.default_hyp() == DEFAULT_HYP and list(YOLOV5.keys) == list(DEFAULT_HYP)
    assert YOLOV5.integer == INTEGER_KEYS
    shipped = yaml.safe_load(files("hyps").joinpath(hyps.HYP_SCRATCH_LOW).read_text())
    assert list(shipped) == list(YOLOV5.keys) and shipped == YOLOV5.default_hyp()
    meta = yaml.safe_load(files("hyps").joinpath(hyps.META).read_text())
    # The optimizer is an extension key: listed (not evolved) in the space, absent from the hyp file.
    assert list(meta) == [*YOLOV5.keys, "optimizer"] and meta["optimizer"]["evolve"] is False


def test_the_default_space_loads_from_package_data():
    assert hyps.path(hyps.META).is_file() and hyps.path(hyps.HYP_SCRATCH_LOW).is_file()
    space = SearchSpace.load()
    assert space.base == DEFAULT_HYP and space.keyset is YOLOV5 and len(space) == 25


def test_bad_hyps_name_the_file_and_key(tmp_path):
    path = tmp_path / "h.yaml"
    path.write_text("lr0: 0.01\nfoo: 1\n")
    with pytest.raises(ConfigError, match=f"{path}: unknown hyperparameter key 'foo'"):
        YOLOV5.load(path)
    path.write_text("lr0: .inf\n")
    with pytest.raises(ConfigError, match="key 'lr0' must be a finite number"):
        YOLOV5.load(path)
    with pytest.raises(ConfigError, match="key 'anchors' must be >= 1"):
        YOLOV5.validate({"anchors": 0})
    assert YOLOV5.validate({"anchors": 4.2})["anchors"] == 4
