"""Tests of evolve.loops.plan.prepare's decision of the first ASHA rung (``--grace-epochs`` left unset):
under ``--fidelity prefix`` the epoch after the base hyp's warmup (none when that leaves no rung before
the target), else 1; a given value and a resumed
run's saved value are kept, and the caller's config is not changed."""
from __future__ import annotations

import pytest
import yaml

import hyps
from evolve.config import config_from_argv
from evolve.config.fidelity import default_grace, rungs
from evolve.loops.plan import prepare


def _prepared(tmp_path, *flags):
    return prepare(config_from_argv(["--trainer", "surrogate", "--project", str(tmp_path), *flags]))


def test_prefix_judges_first_after_the_base_hyp_s_warmup(tmp_path):
    cfg = config_from_argv(["--trainer", "surrogate", "--project", str(tmp_path), "--epochs", "20"])
    assert cfg.ray.grace_epochs is None
    plan = prepare(cfg)
    assert plan.space.base["warmup_epochs"] == 3.0  # the shipped base hyp
    assert (plan.cfg.ray.grace_epochs, rungs(plan.cfg)) == (4, [4, 12])
    assert cfg.ray.grace_epochs is None  # the caller's config is left as it was


def test_the_warmup_of_the_base_hyp_given_decides(tmp_path):
    base = yaml.safe_load(hyps.path(hyps.HYP_SCRATCH_LOW).read_text())
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text(yaml.safe_dump({**base, "warmup_epochs": 4.5}))
    plan = _prepared(tmp_path, "--fidelity", "prefix", "--epochs", "30", "--hyp", str(hyp))
    assert (plan.cfg.ray.grace_epochs, rungs(plan.cfg)) == (5, [5, 15])


@pytest.mark.parametrize("flags, grace", [
    (["--epochs", "5"], 4),  # one rung after the warmup fits
    (["--epochs", "4"], None),  # none does: every trial trains to the end, none within the warmup
    (["--epochs", "1"], None),
    (["--fidelity", "prefix", "--epochs", "20", "--grace-epochs", "2"], 2),  # given: kept
    (["--fidelity", "compressed", "--early-stop", "asha", "--epochs", "20"], 1),  # compressed: as before
    (["--fidelity", "compressed", "--epochs", "20"], 1),
])
def test_other_cases_keep_their_first_rung(tmp_path, flags, grace):
    assert _prepared(tmp_path, *flags).cfg.ray.grace_epochs == grace


def test_without_a_warmup_the_first_rung_is_epoch_1(tmp_path):
    cfg = config_from_argv(["--trainer", "surrogate", "--fidelity", "prefix", "--epochs", "20"])
    assert (default_grace(cfg, None), default_grace(cfg, 0.0), default_grace(cfg, 2.9)) == (1, 1, 3)
    assert default_grace(cfg, 19.0) is None  # epoch 20 is the target: no rung before it


def test_a_resumed_prefix_run_keeps_the_first_rung_it_was_started_with(tmp_path):
    from evolve.driver import run

    flags = ["--population", "2", "--generations", "1", "--epochs", "2", "--fidelity", "prefix",
             "--validate-top", "0", "--name", "r"]
    run_dir = run(config_from_argv(["--trainer", "surrogate", "--project", str(tmp_path), *flags,
                                    "--grace-epochs", "1"]))
    again = prepare(config_from_argv(["--trainer", "surrogate", "--project", str(tmp_path), "--resume",
                                      str(run_dir), "--generations", "2"]))
    assert again.cfg.ray.grace_epochs == 1
