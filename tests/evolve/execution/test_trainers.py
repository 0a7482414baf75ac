"""Tests of evolve/trainers.py: trainer names resolved to callables, and each bad name a ConfigError."""
from __future__ import annotations

import sys

import pytest

from evolve.errors import ConfigError
from evolve.execution.trainers import resolve_trainer


def test_builtin_names_resolve_to_the_project_trainers():
    import evolve.execution.detector_trainer
    import evolve.search.surrogate

    assert resolve_trainer("detector") is evolve.execution.detector_trainer.train
    assert resolve_trainer("surrogate") is evolve.search.surrogate.train
    assert resolve_trainer(" surrogate ") is evolve.search.surrogate.train


def test_the_detector_base_hyp_follows_the_optimizer_and_the_others_keep_their_file():
    from detector.hyp import ADAMW_HYP_PATH, DEFAULT_HYP_PATH
    from evolve.execution.trainers import BUILTIN_TRAINERS

    detector = BUILTIN_TRAINERS["detector"]
    assert detector.default_hyp("auto") == detector.default_hyp("AdamW") == ADAMW_HYP_PATH
    assert detector.default_hyp("SGD") == DEFAULT_HYP_PATH
    ultralytics = BUILTIN_TRAINERS["ultralytics"]
    assert ultralytics.default_hyp("SGD") == ultralytics.default_hyp("auto") == ultralytics.hyp_file


def test_a_user_callable_resolves_by_module_and_attribute(tmp_path, monkeypatch):
    (tmp_path / "my_trainers_pkg").mkdir()
    (tmp_path / "my_trainers_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_trainers_pkg" / "wrap.py").write_text(
        "class Wrapper:\n    @staticmethod\n    def fit(hyp, cfg, report=None):\n"
        "        return {'map50': 1, 'map50_95': 2}\n"
        "def train(hyp, cfg, report=None):\n    return {'map50': 0.5, 'map50_95': 0.25}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = resolve_trainer("my_trainers_pkg.wrap:train")
    assert fn({}, None) == {"map50": 0.5, "map50_95": 0.25}
    assert resolve_trainer("my_trainers_pkg.wrap:Wrapper.fit")({}, None)["map50_95"] == 2


def test_a_module_that_fails_to_import_names_the_spec_and_the_cause(tmp_path, monkeypatch):
    (tmp_path / "broken_trainer_mod.py").write_text("raise RuntimeError('needs a GPU library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_trainer_mod", raising=False)
    with pytest.raises(ConfigError, match=r"--trainer 'broken_trainer_mod:train': cannot import module "
                                          r"'broken_trainer_mod': RuntimeError: needs a GPU library"):
        resolve_trainer("broken_trainer_mod:train")


@pytest.mark.parametrize("spec,match", [
    ("no_such_module_xyz:train", r"--trainer 'no_such_module_xyz:train': cannot import module "
                                 r"'no_such_module_xyz': ModuleNotFoundError"),
    ("trainers_for_tests:missing", r"--trainer 'trainers_for_tests:missing': module 'trainers_for_tests' "
                                   r"has no attribute 'missing'"),
    ("trainers_for_tests:NOT_CALLABLE",
     r"'NOT_CALLABLE' in 'trainers_for_tests' is not callable \(it is a int\)"),
    ("trainers_for_tests", r"--trainer 'trainers_for_tests': expected 'detector', 'surrogate', 'ultralytics' or "
                           r"'package.module:function'"),
    ("yolov5", r"--trainer 'yolov5': expected"),
    ("a:b:c", r"--trainer 'a:b:c': expected"),
    ("mod:", r"--trainer 'mod:': expected"),
    (":train", r"--trainer ':train': expected"),
    ("my-pkg.mod:train", r"--trainer 'my-pkg.mod:train': expected"),
    ("", r"--trainer: expected"),
    (None, r"--trainer: expected"),
])
def test_bad_trainer_specs_are_config_errors_naming_the_spec(spec, match):
    with pytest.raises(ConfigError, match=match):
        resolve_trainer(spec)
