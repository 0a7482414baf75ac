"""Tests of detector/config.py: TrainConfig checks every declared range and choice, naming the field, and
each field's flag metadata is complete."""
import pytest

from detector.config import MODEL_SIZES, OPTIMIZER_CHOICES, TrainConfig, check_setting, flagged_fields
from detector.hyp import HYP_OPTIMIZERS


@pytest.mark.parametrize("values,message", [
    ({"batch": 0}, "batch must be >= 1, got 0"),
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"nbs": 0}, "nbs must be >= 1, got 0"),
    ({"threads": 0}, "threads must be >= 1, got 0"),
    ({"workers": -1}, "workers must be >= 0, got -1"),
    ({"val_every": -1}, "val_every must be >= 0, got -1"),
    ({"max_det": 0}, "max_det must be >= 1, got 0"),
    ({"max_images": 0}, "max_images must be >= 1, got 0"),
    ({"imgsz": 96 + 16}, "imgsz must be a multiple of 32 and >= 32, got 112"),
    ({"imgsz": 0}, "imgsz must be a multiple of 32 and >= 32, got 0"),
    ({"model": "x"}, "model must be one of n, s, m, got 'x'"),
    ({"optimizer": "Lion"}, "optimizer must be one of auto, SGD, Adam, AdamW, got 'Lion'"),
])
def test_bad_value_is_a_value_error_naming_the_field(values, message):
    with pytest.raises(ValueError) as exc:
        TrainConfig(**values)
    assert str(exc.value) == message


def test_unset_optionals_and_edges_are_accepted():
    cfg = TrainConfig(imgsz=32, workers=0, val_every=0, batch=1, epochs=1, max_images=1, nbs=1, threads=1)
    assert (cfg.imgsz, cfg.workers, cfg.val_every) == (32, 0, 0)
    assert TrainConfig().imgsz is None and TrainConfig().nbs is None


def test_optimizer_names_come_from_the_hyp_module():
    assert OPTIMIZER_CHOICES == ("auto", *HYP_OPTIMIZERS)
    assert MODEL_SIZES == ("n", "s", "m")


def test_every_flag_is_named_after_its_field_and_defaults_fit_their_own_checks():
    for f, spec in flagged_fields():
        assert spec.help and spec.flag.startswith("--")
        # a switch that turns a True default off is --no-<something>; every other flag is the field's name
        if spec.parse is bool and f.default:
            assert spec.flag.startswith("--no-"), spec.flag
        else:
            assert spec.flag == "--" + f.name.replace("_", "-"), spec.flag
        check_setting(spec.flag, spec, f.default)
