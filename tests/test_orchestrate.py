"""Tests of orchestrate.py: flags, --help, and every kind of bad input (exit 2, one line, nothing touched).

None of these starts Ray: all input is validated before a run folder or a trial exists. The runs that
need Ray (full runs, SIGKILL and Ctrl-C resumes) are in tests/evolve/test_driver.py.
"""
from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import orchestrate
import hyps
from detector.hyp import DEFAULT_HYP_PATH
from evolve.config import EvolveConfig, GAConfig, RayConfig, SurrogateOptions, TrialConfig, config_from_argv
from evolve.config.fidelity import early_stop
from evolve.contract import Metrics
from evolve.errors import ConfigError
from evolve.loops.checkpoint import checkpoint_state
from evolve.loops.plan import prepare
from evolve.search.ga import GeneticAlgorithm
from evolve.output.records import RunRecords, TrialRecord
from evolve.output.rundir import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--trainer", "surrogate", "--generations", "3", "--population", "6", "--epochs", "1"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        orchestrate.main(argv)
    return exc.value.code, capsys.readouterr().err


def make_run(project: Path, extra: list[str] = (), name: str = "exp") -> Path:
    """A run folder as a driver leaves it after one trial of generation 0 (built without Ray)."""
    plan = prepare(config_from_argv([*FAST, "--project", str(project), *extra]))
    run_dir = project / name
    run_dir.mkdir(parents=True)
    ga = GeneticAlgorithm(plan.cfg.ga, len(plan.space))
    population = ga.initial_population([plan.space.encode(plan.space.base)])
    save_checkpoint(run_dir, checkpoint_state(plan.cfg, plan.fingerprint, generation=0, population=population,
                                                 ga_state=ga.get_state()))
    records = RunRecords(run_dir)
    records.append(TrialRecord(0, 0, "g000i000", plan.space.decode(population[0]),
                               Metrics(map50=0.5, map50_95=0.3).with_fitness()))
    records.write_population(0, [plan.space.decode(g) for g in population])
    return run_dir


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    make_run(tmp_path / "runs")
    return tmp_path / "runs"


def write_meta(path: Path, edit) -> Path:
    meta = yaml.safe_load(hyps.path(hyps.META).read_text())
    edit(meta)
    path.write_text(yaml.safe_dump(meta))
    return path


def write_hyp(path: Path, **changes) -> Path:
    hyp = yaml.safe_load(DEFAULT_HYP_PATH.read_text())
    hyp.update(changes)
    path.write_text(yaml.safe_dump(hyp))
    return path


def bad_cases(tmp: Path, project: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (extra flags, fragments the one-line error must contain)."""
    meta_unknown = write_meta(tmp / "m1.yaml", lambda m: m.update(foo={"evolve": True, "low": 0, "high": 1}))
    meta_order = write_meta(tmp / "m2.yaml", lambda m: m["lr0"].update(low=0.1, high=0.01))
    meta_log = write_meta(tmp / "m3.yaml", lambda m: m["lr0"].update(low=0.0))
    meta_missing = write_meta(tmp / "m4.yaml", lambda m: m.pop("mixup"))
    hyp_outside = write_hyp(tmp / "h1.yaml", lr0=0.5)
    hyp_unknown = write_hyp(tmp / "h2.yaml", foo=1.0)
    seeds = tmp / "seeds"
    seeds.mkdir()
    (seeds / "a.yaml").write_text("lr0: [1, 2]\n")
    population = tmp / "pop.yaml"
    population.write_text("gen0number0: {lr0: 0.01}\ngen0number1: 3\n")
    corrupt = project / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.pkl").write_bytes(b"\x80\x05not a pickle")
    empty = project / "empty"
    empty.mkdir()
    badcsv = make_run(project, name="badcsv")
    (badcsv / "evolve.csv").write_text("gen,ind\n0,0\n")
    run = str(project / "exp")
    return {
        "meta unknown key": (["--meta", str(meta_unknown)], [str(meta_unknown), "'foo'"]),
        "meta low >= high": (["--meta", str(meta_order)], [str(meta_order), "'lr0'", "low"]),
        "meta log low <= 0": (["--meta", str(meta_log)], [str(meta_log), "'lr0'", "log"]),
        "meta missing key": (["--meta", str(meta_missing)], [str(meta_missing), "'mixup'"]),
        "base outside bounds": (["--hyp", str(hyp_outside)], [str(hyp_outside), "'lr0'", "outside"]),
        "unknown hyp key": (["--hyp", str(hyp_unknown)], [str(hyp_unknown), "'foo'"]),
        "bad population dir file": (["--population-dir", str(seeds)], [str(seeds / "a.yaml"), "'lr0'"]),
        "bad population file": (["--resume", str(population)], [str(population), "gen0number1"]),
        "missing resume target": (["--resume", str(tmp / "nope")], ["--resume", str(tmp / "nope")]),
        "corrupt checkpoint": (["--resume", str(corrupt)], [str(corrupt / "checkpoint.pkl"), "corrupt"]),
        "folder without checkpoint": (["--resume", str(empty)], [str(empty / "checkpoint.pkl"), "not found"]),
        "corrupt evolve.csv": (["--resume", str(badcsv)], [str(badcsv / "evolve.csv"), "header"]),
        "bad trainer spec": (["--trainer", "no_such_pkg.mod:fn"], ["--trainer", "no_such_pkg"]),
        "trainer not callable": (["--trainer", "os:sep"], ["--trainer", "not callable"]),
        "missing data YAML": (["--data", str(tmp / "missing.yaml")], ["--data", "missing.yaml", "not found"]),
        "existing run without resume": (["--exist-ok"], [run, "evolve.csv", "--resume"]),
        "bad schedule flag": (["--elite", "2,x"], ["--elite", "START,END"]),
        "population too small": (["--population", "1"], ["--population"]),
        "elite not below population": (["--elite", "1,6"], ["--elite"]),
        "bad image size": (["--imgsz", "100"], ["--imgsz", "multiple of 32"]),
        "num-cpus with address": (["--address", "auto", "--num-cpus", "2"], ["--num-cpus"]),
        "unknown mode": (["--mode", "steady"], ["--mode", "'steady'"]),
        "unknown early stop": (["--early-stop", "median"], ["--early-stop", "'median'"]),
        "grace epochs below 1": (["--grace-epochs", "0"], ["--grace-epochs", ">= 1"]),
        "reduction factor not above 1": (["--reduction-factor", "1"], ["--reduction-factor", "> 1"]),
        "reduction factor not a number": (["--reduction-factor", "x"], ["--reduction-factor", "'x'"]),
        "grace not below epochs": (["--early-stop", "asha", "--grace-epochs", "1"],
                                   ["--grace-epochs", "below --epochs (1)"]),
        "unknown fidelity": (["--fidelity", "short"], ["--fidelity", "'short'"]),
        "prefix with early stop none": (["--fidelity", "prefix", "--early-stop", "none"],
                                        ["--early-stop none", "--fidelity prefix"]),
        "grace at the prefix target": (["--fidelity", "prefix", "--epochs", "2", "--grace-epochs", "2"],
                                       ["--grace-epochs", "below --epochs (2)", "got 2"]),
        "grace past the prefix target": (["--grace-epochs", "3"],  # prefix, the default
                                         ["--grace-epochs", "below --epochs (1)", "got 3"]),
        "workers per trial below 1": (["--workers-per-trial", "0"], ["--workers-per-trial", ">= 1"]),
        "workers per trial with one GPU": (["--workers-per-trial", "2", "--gpus-per-trial", "1"],
                                           ["--workers-per-trial 2", "--gpus-per-trial 1"]),
        "empty storage": (["--storage", " "], ["--storage"]),
        "negative drift": (["--drift", "-1"], ["--drift", ">= 0"]),
        "non-positive init sigma": (["--init-sigma", "0"], ["--init-sigma"]),
    }


CASES = ["meta unknown key", "meta low >= high", "meta log low <= 0", "meta missing key",
         "base outside bounds", "unknown hyp key", "bad population dir file", "bad population file",
         "missing resume target", "corrupt checkpoint", "folder without checkpoint", "corrupt evolve.csv",
         "bad trainer spec", "trainer not callable", "missing data YAML", "existing run without resume",
         "bad schedule flag", "population too small", "elite not below population", "bad image size",
         "num-cpus with address", "unknown mode", "unknown early stop", "grace epochs below 1",
         "reduction factor not above 1", "reduction factor not a number", "grace not below epochs",
         "unknown fidelity", "prefix with early stop none", "grace at the prefix target",
         "grace past the prefix target",
         "workers per trial below 1", "workers per trial with one GPU", "empty storage",
         "negative drift", "non-positive init sigma"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, tmp_path, project, capsys):
    flags, fragments = bad_cases(tmp_path, project)[case]
    before = snapshot(project)
    code, err = cli([*FAST, "--project", str(project), *flags], capsys)
    assert code == 2
    assert err.startswith("orchestrate.py: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert snapshot(project) == before
    assert sorted(p.name for p in project.iterdir()) == ["badcsv", "corrupt", "empty", "exp"]


def test_resume_of_a_folder_in_use_is_refused(project, capsys):
    run = project / "exp"
    (run / ".lock").write_text(f"pid={os.getpid()}\nhost={socket.gethostname()}\n")
    before = snapshot(project)
    code, err = cli(["--resume", str(run)], capsys)
    assert code == 2 and err.count("\n") == 1 and "in use" in err and str(run) in err
    assert snapshot(project) == before


def test_resume_refuses_a_changed_search_space(tmp_path, capsys):
    meta = write_meta(tmp_path / "meta.yaml", lambda m: None)
    run = make_run(tmp_path / "runs", ["--meta", str(meta)])
    write_meta(meta, lambda m: m["lr0"].update(high=0.05))
    before = snapshot(run)
    code, err = cli(["--resume", str(run)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "checkpoint.pkl" in err and "changed since the run started" in err
    assert snapshot(run) == before


def test_a_real_process_prints_one_line_and_exits_2(tmp_path):
    meta = write_meta(tmp_path / "meta.yaml", lambda m: m.update(bogus={"evolve": True, "low": 0, "high": 1}))
    proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), *FAST, "--meta", str(meta),
                           "--project", str(tmp_path / "runs")],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"orchestrate.py: error: {meta}: unknown hyperparameter key 'bogus'"]
    assert not (tmp_path / "runs").exists()


def test_help_lists_every_flag_with_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        orchestrate.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    flags = ["--generations", "--population", "--data", "--hyp", "--meta", "--model", "--epochs", "--imgsz",
             "--batch", "--trainer", "--population-dir", "--resume", "--seed", "--project", "--name",
             "--exist-ok", "--address", "--cpus-per-trial", "--gpus-per-trial", "--max-concurrent",
             "--crossover", "--mutation", "--mutation-sigma", "--init", "--elite", "--tournament",
             "--crossover-rate", "--mutation-rate", "--workers", "--device", "--max-images", "--num-cpus",
             "--num-gpus", "--surrogate-landscape", "--surrogate-seconds", "--surrogate-spread",
             "--surrogate-failure-rate", "--surrogate-noise", "--verbose", "--mode", "--early-stop",
             "--grace-epochs", "--reduction-factor", "--workers-per-trial", "--storage",
             "--init-sigma", "--drift", "--bounds", "--age"]
    for flag in flags:
        assert flag in out, flag
    flat = " ".join(out.split())
    for default in ("the size of the current population (default: 50)", "(default: 300)",
                    "(default: runs/evolve)", "(default: 2,5, at most a quarter of --population)", "(default: 10,2)", "(default: 1.0,0.5)",
                    "(default: 0.5,0.01)",
                    "(default: generational)", "(default: none)", "(default: 3.0)",
                    "unless it is one of the --elite best (0: the best ever keep their seats) (default: 1.0)"):
        assert default in flat, default


def test_flags_build_the_config_and_remember_what_was_typed():
    argv = ["--generations", "5", "--elite", "3", "--tournament", "4,2", "--mutation-rate", "0.3,0.02",
            "--address", "auto", "--trainer", "surrogate", "--surrogate-failure-rate", "0.2", "--seed", "9",
            "--epochs", "2", "--data", "d.yaml", "-v"]
    cfg = config_from_argv(argv)
    assert (cfg.ga.generations, cfg.ga.population, cfg.ga.elite, cfg.ga.tournament) == (5, 50, (3, 3), (4, 2))
    assert cfg.ga.mutation_rate == (0.3, 0.02) and cfg.seed == 9 and cfg.train.seed == 9
    assert cfg.ray.address == "auto" and cfg.ray.cpus_per_trial == 1.0
    assert cfg.train.epochs == 2 and cfg.train.data == "d.yaml" and cfg.train.progress is False
    assert cfg.train.surrogate.failure_rate == 0.2
    # --verbose is the command's own flag: accepted, and no setting of the run
    assert cfg.explicit == {"--generations", "--elite", "--tournament", "--mutation-rate", "--address",
                            "--trainer", "--surrogate-failure-rate", "--seed", "--epochs", "--data"}


def test_scale_out_flags_reach_the_ray_config():
    argv = ["--mode", "async", "--early-stop", "asha", "--grace-epochs", "2", "--reduction-factor", "2.5",
            "--workers-per-trial", "2", "--storage", "/shared/ray", "--epochs", "5"]
    cfg = config_from_argv(argv)
    assert cfg.mode == "async"
    ray = cfg.ray
    assert (ray.early_stop, ray.grace_epochs, ray.reduction_factor) == ("asha", 2, 2.5)
    assert (ray.workers_per_trial, ray.storage) == (2, "/shared/ray")
    assert cfg.train.val_every == 1  # early stopping validates every epoch
    default = config_from_argv([])
    assert default.mode == "generational" and default.fidelity == "prefix"
    assert (default.ray.early_stop, early_stop(default)) == (None, "asha")  # the default fidelity's own
    assert default.ray.workers_per_trial is None and default.ray.storage is None


@pytest.mark.parametrize("population, elite", [(2, (1, 1)), (5, (1, 1)), (8, (2, 2)), (50, (2, 5))])
def test_a_small_population_gets_the_default_elite_capped_from_flags_and_from_python(population, elite):
    cfg = config_from_argv(["--population", str(population)])
    assert cfg.ga.elite is None and cfg.ga.elite_schedule == elite
    assert GAConfig(population=population).elite_schedule == elite


@pytest.mark.parametrize("argv, python", [
    (["--population", "4", "--seed", "5", "--address", ""],
     lambda: EvolveConfig(ga=GAConfig(population=4, seed=5), ray=RayConfig(address=""))),
    (["--population", "12", "--elite", "1,3", "--mode", "async", "--surrogate-landscape", "noisy"],
     lambda: EvolveConfig(ga=GAConfig(population=12, elite=(1, 3)), mode="async",
                          train=TrialConfig(surrogate=SurrogateOptions(landscape="noisy")))),
    ([], EvolveConfig),
])
def test_flags_and_python_build_equal_configs(argv, python):
    """Every policy is the config's own: the same settings typed or built in Python give equal configs
    (the elite fitted to the population, the trials' seed, an empty address meaning an embedded Ray)."""
    cfg, built = config_from_argv(argv), python()
    built.explicit = cfg.explicit  # the one difference: which flags were typed
    assert built == cfg
    assert built.train.seed == cfg.seed and cfg.ray.address is None


@pytest.mark.parametrize("argv, fragments", [
    (["--population", "x"], ["--population", "'x'"]),
    (["--no-such-flag"], ["unrecognized", "--no-such-flag"]),
    (["--elite", "1,6", "--population", "6"], ["--elite must stay below --population (6)"]),
    (["--mode", "steady"], ["--mode", "'steady'"]),
])
def test_config_from_argv_raises_one_line_config_errors(argv, fragments):
    with pytest.raises(ConfigError) as err:
        config_from_argv(argv)
    assert "\n" not in str(err.value)
    for fragment in fragments:
        assert fragment in str(err.value), (fragment, str(err.value))


def test_checkpoint_written_for_tests_is_loadable(project):
    # The fixture's run folder must look like a driver's, or the cases above would test the wrong thing.
    state = pickle.loads((project / "exp" / "checkpoint.pkl").read_bytes())
    assert state["generation"] == 0 and len(state["population"]) == 6
    plan = prepare(config_from_argv(["--resume", str(project / "exp")]))
    assert plan.run_dir == project / "exp" and plan.cfg.ga.population == 6 and plan.cfg.trainer == "surrogate"


# -- inputs of every kind, refused before anything is written (issue 22) ---------------------------------

def _inputs_cases(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (extra flags, fragments the one-line error must contain)."""
    from PIL import Image

    png = tmp / "hyp.png"
    Image.new("RGB", (4, 4)).save(png)
    meta = tmp / "meta.yaml"
    meta.write_bytes(hyps.path(hyps.META).read_bytes() + b"# r\xe9sum\xe9\n")
    data = tmp / "set"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8)).save(data / "images" / f"{i}.jpg")
        (data / "labels" / f"{i}.txt").write_bytes(b"0 0.5 0.5 0.2 0.2\n" + (b"\xff\n" if i else b""))
    (data / "d.yaml").write_text("train: images\nval: images\nnames: [a]\n")
    (data / "latin.yaml").write_bytes(b"train: images\nval: images\nnames: [caf\xe9]\n")
    detector = ["--trainer", "detector", "--data"]
    name = "--name must be one folder name inside --project"
    seed = "--seed must be a whole number from 0 to 4294967295"
    return {
        "empty --name": (["--name", ""], [name, "''"]),
        "nested --name": (["--name", "a/b/c"], [name, "'a/b/c'"]),
        "--name outside the project": (["--name", "../x"], [name, "'../x'"]),
        "absolute --name": (["--name", str(tmp / "abs")], [name, str(tmp / "abs")]),
        "dot --name": (["--name", ".."], [name]),
        "negative --seed": (["--seed", "-1"], [seed, "got -1"]),
        "oversized --seed": (["--seed", str(2**32)], [seed, f"got {2**32}"]),
        "--seed without room for validation seeds": (
            ["--seed", str(2**32 - 2)], ["--seed 4294967294 with --validate-seeds 3", "4294967297"]),
        "png as --hyp": (["--hyp", str(png)], [str(png), "not valid YAML"]),
        "latin-1 --meta": (["--meta", str(meta)], [str(meta), "not valid YAML"]),
        "latin-1 data YAML": ([*detector, str(data / "latin.yaml")],
                              [str(data / "latin.yaml"), "not valid YAML"]),
        "latin-1 label file": ([*detector, str(data / "d.yaml")],
                               [f"{data / 'labels' / '1.txt'}:2: not UTF-8"]),
    }


INPUT_CASES = ["png as --hyp", "latin-1 --meta", "latin-1 data YAML", "latin-1 label file", "empty --name",
               "nested --name", "--name outside the project", "absolute --name", "dot --name",
               "negative --seed", "oversized --seed", "--seed without room for validation seeds"]


@pytest.mark.parametrize("case", INPUT_CASES)
def test_bad_inputs_of_issue_22_are_one_line_exit_2_and_write_nothing(case, tmp_path, capsys):
    flags, fragments = _inputs_cases(tmp_path)[case]
    code, err = cli([*FAST, "--project", str(tmp_path / "runs"), *flags], capsys)
    assert code == 2 and err.startswith("orchestrate.py: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyp.png", "meta.yaml", "set"]  # nothing new


def test_the_largest_seeds_and_plain_names_are_accepted():
    for argv in (["--seed", str(2**32 - 4)], ["--seed", "0", "--name", "exp.v2 final"]):
        cfg = config_from_argv([*FAST, *argv])
        assert cfg.seed == int(argv[1])
