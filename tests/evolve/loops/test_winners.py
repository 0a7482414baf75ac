"""Tests of winner validation (evolve/loops/winners.py, evolve/output/winners.py): a surrogate
evolution validated at its end, the same run validated again on its own (nothing re-run, its records
untouched), a validation killed with SIGKILL and resumed, every bad input of ``--validate``, and the
pieces (candidates, summary, Spearman) without Ray.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import orchestrate
from detector.hyp import HYP_KEYS
from evolve.config import config_from_argv
from evolve.contract import Metrics
from evolve.driver import run
from evolve.loops.checkpoint import checkpoint_state
from evolve.loops.plan import prepare
from evolve.loops.winners import choose_candidates
from evolve.output.records import METRIC_COLUMNS, RunRecords, TrialRecord
from evolve.output.rundir import save_checkpoint
from evolve.output.winners import (
    COLUMNS,
    Candidate,
    ValidationRecords,
    ValidationRow,
    spearman,
    summarise,
    summary_line,
    transfer_text,
)
from evolve.search.ga import GeneticAlgorithm
from evolve.search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[3]
ORCHESTRATE = str(ROOT / "orchestrate.py")
# Noisy landscape: the training seed changes the fitness, as it does in real training.
FLAGS = ["--trainer", "surrogate", "--surrogate-landscape", "noisy", "--generations", "2", "--population",
         "6", "--epochs", "1", "--seed", "1", "--surrogate-seconds", "0.2"]
RECORDS = ("evolve.csv", "hyp_evolve.yaml", "evolve_population.yaml", "checkpoint.pkl", "evolve.png",
           "fitness.png", "evolve.log")
VALIDATION_FILES = ("validation.csv", "hyp_validated.yaml", "validation.png")


def config(argv: list[str]):
    return config_from_argv(argv)


def snapshot(folder: Path, names=RECORDS) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in names if (folder / n).is_file()}


@pytest.fixture(scope="module")
def validated(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A surrogate evolution validated at its end (top 3, 2 seeds) and what its log says."""
    project = tmp_path_factory.mktemp("validated")
    run_dir = run(config([*FLAGS, "--validate-top", "3", "--validate-seeds", "2", "--project", str(project),
                          "--address", ray_address]))
    return run_dir, (run_dir / "evolve.log").read_text().splitlines()


def test_an_evolution_validates_its_top_3_and_the_base_with_2_new_seeds(validated):
    run_dir, log = validated
    trials = pd.read_csv(run_dir / "evolve.csv")
    df = pd.read_csv(run_dir / "validation.csv")
    assert list(df.columns) == COLUMNS
    assert len(df) == 8 and not df.duplicated(["candidate", "seed"]).any()
    assert sorted(df["candidate"].unique()) == ["base", "top1", "top2", "top3"]
    assert sorted(df["seed"].unique()) == [2, 3]  # new seeds: the trials trained with seed 1
    assert (df["epochs"] == 3).all() and (df["status"] == "ok").all()  # 3x the trials' epochs
    # The candidates are the three best distinct trials other than the base, in rank order.
    base = trials[trials["trial_id"] == "g000i000"].iloc[0]  # rows are in the order trials ended
    others = trials[trials["trial_id"] != base["trial_id"]].sort_values("fitness", ascending=False,
                                                                        kind="stable")
    top = df.drop_duplicates("candidate").set_index("candidate")["source_trial_id"]
    assert top["base"] == base["trial_id"] == "g000i000"
    assert [top["top1"], top["top2"], top["top3"]] == list(others["trial_id"][:3])
    # A new seed gives a new result: validation is not a copy of the trial.
    fit = dict(zip(trials["trial_id"], trials["fitness"]))
    assert not all(math.isclose(r.fitness, fit[r.source_trial_id]) for r in df.itertuples())
    # hyp_validated.yaml: the best mean, the full key set, a header with both figures and the gain.
    means = df.groupby("candidate")["fitness"].mean()
    sds = df.groupby("candidate")["fitness"].std()
    winner = means.idxmax()
    text = (run_dir / "hyp_validated.yaml").read_text()
    saved = yaml.safe_load(text)
    assert list(saved) == list(HYP_KEYS)
    source = top[winner]
    assert saved == pytest.approx(trials.set_index("trial_id").loc[source, list(HYP_KEYS)].to_dict())
    assert f"fitness: {means[winner]:.6g} +- {sds[winner]:.6g}" in text
    assert f"base hyp: {means['base']:.6g} +- {sds['base']:.6g}" in text
    assert f"gain over the base: {(means[winner] / means['base'] - 1) * 100:+.2f}%" in text
    assert (run_dir / "validation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = [line for line in log if "validated: " in line]
    assert len(summary) == 1
    gain = means[winner] / means["base"] - 1
    if winner != "base" and means[winner] - means["base"] > max(sds[winner], sds["base"]):
        assert f"validated: {gain * 100:+.1f}% fitness over the base hyp (mean of 2 seeds" in summary[0]
    else:
        assert "no candidate beats the base hyp by more than the seed spread" in summary[0]
    assert any("transfer: Spearman" in line for line in log)


def test_validating_again_runs_nothing_and_leaves_the_evolution_records_alone(validated, ray_address):
    run_dir, _ = validated
    before = snapshot(run_dir)
    rows = (run_dir / "validation.csv").read_bytes()
    run(config(["--validate", str(run_dir), "--validate-top", "3", "--validate-seeds", "2",
                "--address", ray_address]))
    assert snapshot(run_dir) == before
    assert (run_dir / "validation.csv").read_bytes() == rows
    log = (run_dir / "validation.log").read_text()
    assert "8 run(s) to train" not in log and "0 run(s) to train, 8 already" in log


def test_the_real_gain_benchmark_reports_from_a_validated_run(validated):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import real_gain
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    run_dir, log = validated
    lines = real_gain.report(run_dir, 90.0, (1.0, 2.0, 3.0))
    summary = next(line for line in log if "validated: " in line)
    assert "validated: " + summary.split("validated: ", 1)[1] in lines  # the same figures as the run
    assert any(line.startswith("base validated fitness") for line in lines)
    assert any(line.startswith("transfer: Spearman") for line in lines)
    assert any(line.startswith("wall time 1.5 min; load average at the start 1.00 2.00 3.00")
               for line in lines)


def _unvalidated_copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns(*VALIDATION_FILES, "validation.log", "val-*"))
    return to


def test_sigkill_during_validation_then_resume_runs_no_seed_twice(validated, ray_address, tmp_path):
    run_dir = _unvalidated_copy(validated[0], tmp_path / "exp")
    before = snapshot(run_dir)
    argv = [sys.executable, ORCHESTRATE, "--validate", str(run_dir), "--validate-seeds", "2",
            "--max-concurrent", "1", "--address", ray_address]
    csv_path = run_dir / "validation.csv"

    def rows_done() -> int:
        return max(0, len(csv_path.read_text().splitlines()) - 1) if csv_path.is_file() else 0

    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 180
            while rows_done() < 2 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]
    first = ValidationRecords(run_dir).rows()
    assert 2 <= len(first) < 8
    resumed = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{8 - len(first)} run(s) to train, {len(first)} already" in resumed.stderr
    rows = ValidationRecords(run_dir).rows()
    assert len(rows) == 8 and len({r.key for r in rows}) == 8
    assert [r.key for r in rows[:len(first)]] == [r.key for r in first]
    for row in first:  # a seed finished before the kill was never started again
        log = (run_dir / "trials" / f"val-{row.candidate}-s{row.seed}" / "trial.log").read_text()
        assert log.count("starts with trainer") == 1
    assert snapshot(run_dir) == before
    assert all((run_dir / name).is_file() for name in VALIDATION_FILES)


# --- bad input: one line, exit 2, nothing written ---------------------------------------------------------

def _finished_run(project: Path, trained: int, generations: int = 2) -> Path:
    """A run folder as a finished generational run leaves it, with ``trained`` trials (built without Ray)."""
    argv = ["--trainer", "surrogate", "--generations", str(generations), "--population", "4",
            "--project", str(project)]
    plan = prepare(config_from_argv(argv))
    run_dir = project / "exp"
    run_dir.mkdir(parents=True)
    ga = GeneticAlgorithm(plan.cfg.ga, len(plan.space))
    population = ga.initial_population([plan.space.encode(plan.space.base)])
    save_checkpoint(run_dir, checkpoint_state(plan.cfg, plan.fingerprint, generation=generations - 1,
                                              population=population, ga_state=ga.get_state()))
    records = RunRecords(run_dir)
    for i in range(trained):
        records.append(TrialRecord(0, i, f"g000i{i:03d}", plan.space.decode(population[i]),
                                   Metrics(map50=0.5, map50_95=0.3 + 0.01 * i).with_fitness()))
    records.write_population(generations - 1, [plan.space.decode(g) for g in population])
    return run_dir


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        orchestrate.main(argv)
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing folder", "no checkpoint", "not finished", "top above distinct",
                                  "seeds below 1", "epochs below 1", "top 0", "with resume"])
def test_bad_validate_input_is_one_line_exit_2_and_touches_nothing(case, tmp_path, capsys):
    run_dir = _finished_run(tmp_path / "runs", trained=3)
    unfinished = _finished_run(tmp_path / "other", trained=3, generations=3)
    save_checkpoint(unfinished, {**pickle_load(unfinished), "generation": 1})
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "evolve.csv").write_text("")
    cases = {
        "missing folder": (["--validate", str(tmp_path / "nope")], "no such run folder"),
        "no checkpoint": (["--validate", str(bare)], "not an evolution run folder (no checkpoint.pkl)"),
        "not finished": (["--validate", str(unfinished)], "has not finished"),
        "top above distinct": (["--validate", str(run_dir), "--validate-top", "3"],
                               "--validate-top 3: the run in"),
        "seeds below 1": (["--validate", str(run_dir), "--validate-seeds", "0"],
                          "--validate-seeds must be >= 1"),
        "epochs below 1": (["--validate", str(run_dir), "--validate-epochs", "0"],
                           "--validate-epochs must be >= 1"),
        "top 0": (["--validate", str(run_dir), "--validate-top", "0"], "--validate-top must be >= 1"),
        "with resume": (["--validate", str(run_dir), "--resume", str(run_dir)], "exclude each other"),
    }
    argv, fragment = cases[case]
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    code, err = _cli(argv, capsys)
    assert code == 2
    assert err.startswith("orchestrate.py: error: ") and err.count("\n") == 1, err
    assert fragment in err, err
    after = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert after == before


def pickle_load(run_dir: Path) -> dict:
    from evolve.output.rundir import load_checkpoint

    return load_checkpoint(run_dir)


def test_a_validation_of_other_epochs_is_refused_not_mixed(tmp_path, capsys):
    run_dir = _finished_run(tmp_path / "runs", trained=3)
    ValidationRecords(run_dir).append(ValidationRow("base", "g000i000", 1, 7, Metrics().with_fitness()))
    before = (run_dir / "validation.csv").read_bytes()
    code, err = _cli(["--validate", str(run_dir), "--validate-top", "2"], capsys)
    assert code == 2 and "holds validation runs of 7 epochs, not 3" in err and err.count("\n") == 1
    assert (run_dir / "validation.csv").read_bytes() == before


# --- pieces, without Ray -----------------------------------------------------------------------------------

def test_candidates_are_distinct_ranked_skip_failed_and_never_repeat_the_base():
    space = SearchSpace.load()
    base = dict(space.base)
    a = {**base, "lr0": 0.02}
    b = {**base, "lr0": 0.03}
    c = {**base, "lr0": 0.04}

    def rec(i, hyp, fit, status="ok"):
        return TrialRecord(0, i, f"t{i}", hyp, Metrics(fitness=fit, status=status))

    rows = [rec(0, base, 0.9), rec(1, a, 0.5), rec(2, a, 0.7), rec(3, b, 0.6), rec(4, c, 0.99, "failed"),
            rec(5, c, 0.95, "stopped")]
    cands, distinct = choose_candidates(rows, space, top=2)
    assert distinct == 3  # a, b and c (stopped, ranked below every finished trial)
    assert [(x.label, x.source_trial_id, x.trial_fitness) for x in cands] == [
        ("base", "t0", 0.9), ("top1", "t2", 0.7), ("top2", "t3", 0.6)]


def test_spearman_matches_the_definition():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Without ties: 1 - 6 sum d^2 / (n (n^2 - 1)); ranks (1,2,3,4) vs (2,1,4,3): d^2 sums to 4.
    assert spearman([0.1, 0.2, 0.3, 0.4], [0.5, 0.4, 0.9, 0.8]) == pytest.approx(1 - 6 * 4 / (4 * 15))
    assert math.isnan(spearman([1, 2], [1, 2])) and math.isnan(spearman([1, 2, 3], [5, 5, 5]))


def _summary(base: list[float], top: list[float], trial=(0.3, 0.4)):
    cands = [Candidate("base", {}, "g000i000", trial[0]), Candidate("top1", {}, "g001i002", trial[1])]
    rows = [ValidationRow("base", "g000i000", s, 9, Metrics(fitness=v)) for s, v in enumerate(base)]
    rows += [ValidationRow("top1", "g001i002", s, 9, Metrics(fitness=v)) for s, v in enumerate(top)]
    return summarise(cands, rows, seeds=len(base), epochs=9)


def test_the_summary_line_gives_the_gain_or_says_plainly_there_is_none():
    win = _summary([0.20, 0.22], [0.30, 0.31])
    assert win.winner.candidate.label == "top1" and win.beats_base
    assert summary_line(win).startswith("validated: +45.2% fitness over the base hyp (mean of 2 seeds, "
                                        "9 epochs, sd 0.0071)")
    close = _summary([0.20, 0.30], [0.26, 0.27])
    assert not close.beats_base
    assert summary_line(close).startswith("validated: no candidate beats the base hyp by more than the seed "
                                          "spread")
    worse = _summary([0.30, 0.31], [0.20, 0.21])
    assert worse.winner is worse.base and worse.gain == 0.0 and not worse.beats_base


def test_transfer_text_warns_when_the_trials_ranked_poorly():
    cands = [Candidate(f"c{i}", {}, f"t{i}", t) for i, t in enumerate([0.1, 0.2, 0.3, 0.4])]
    cands[0].label = "base"
    rows = [ValidationRow(c.label, c.source_trial_id, 0, 3, Metrics(fitness=v))
            for c, v in zip(cands, [0.4, 0.3, 0.2, 0.1])]
    text = transfer_text(summarise(cands, rows, 1, 3))
    assert text.startswith("transfer: Spearman -1.00") and "--early-stop asha" in text


def test_a_torn_last_row_is_dropped_and_the_file_repaired(tmp_path):
    records = ValidationRecords(tmp_path)
    records.append(ValidationRow("base", "g000i000", 1, 3, Metrics(map50=0.5, map50_95=0.3).with_fitness()))
    with (tmp_path / "validation.csv").open("a") as fh:
        fh.write("top1,g001i0")
    rows = ValidationRecords(tmp_path).rows()
    assert [r.key for r in rows] == [("base", "g000i000", 1)]
    assert (tmp_path / "validation.csv").read_text().endswith("\n")
    assert len(METRIC_COLUMNS) == 7 and set(METRIC_COLUMNS) <= set(COLUMNS)
