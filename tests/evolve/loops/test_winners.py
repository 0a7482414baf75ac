"""Tests of winner validation (evolve/loops/winners.py, evolve/output/winners.py, winners_plot.py,
config/winners.py): a surrogate evolution validated at its end (top 3, 2 sentinels, the base, on the same
seeds; the paired verdict and the summary file), the same run validated again on its own (nothing re-run,
its records untouched), a validation killed with SIGKILL and resumed, every bad input of the validation
flags, too few hyps for the sentinels, and the pieces (candidates, sentinels, verdict, lines) without Ray.
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
from evolve.config import EvolveConfig, GAConfig, ValidationConfig, config_from_argv
from evolve.contract import Metrics
from evolve.driver import run
from evolve.errors import ConfigError
from evolve.loops.checkpoint import checkpoint_state
from evolve.loops.plan import prepare
from evolve.loops.winners import choose_candidates, plan_standalone, sentinel_positions
from evolve.output.records import RunRecords, TrialRecord
from evolve.output.rundir import save_checkpoint
from evolve.output.verdict_stats import t_quantile
from evolve.output.winners import (
    COLUMNS,
    SUMMARY_COLUMNS,
    ValidationRecords,
    ValidationRow,
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
VALIDATION_FILES = ("validation.csv", "validation_summary.csv", "hyp_validated.yaml", "validation.png")
LABELS = ["base", "sentinel1", "sentinel2", "top1", "top2", "top3"]


def config(argv: list[str]):
    return config_from_argv(argv)


def snapshot(folder: Path, names=RECORDS) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in names if (folder / n).is_file()}


@pytest.fixture(scope="module")
def validated(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A surrogate evolution validated at its end (top 3, 2 sentinels by default, 2 seeds) and its log."""
    project = tmp_path_factory.mktemp("validated")
    run_dir = run(config([*FLAGS, "--validate-top", "3", "--validate-seeds", "2", "--project", str(project),
                          "--address", ray_address]))
    return run_dir, (run_dir / "evolve.log").read_text().splitlines()


def _distinct_ranking(trials: pd.DataFrame) -> list[str]:
    """trial_ids of the run's distinct hyps other than the base, best first (the earliest row of a hyp)."""
    others = trials[trials["trial_id"] != "g000i000"].sort_values("fitness", ascending=False, kind="stable")
    return list(others.drop_duplicates(list(HYP_KEYS))["trial_id"])


def test_an_evolution_validates_top_3_2_sentinels_and_the_base_on_the_same_seeds(validated):
    run_dir, log = validated
    trials = pd.read_csv(run_dir / "evolve.csv")
    assert (trials["status"] == "ok").all()
    df = pd.read_csv(run_dir / "validation.csv")
    assert list(df.columns) == COLUMNS
    assert len(df) == 12 and not df.duplicated(["candidate", "seed"]).any()
    assert sorted(df["candidate"].unique()) == LABELS
    # Every hyp trains on the same new seeds (the trials trained with seed 1): the pairs of the verdict.
    assert all(sorted(g["seed"]) == [2, 3] for _, g in df.groupby("candidate"))
    assert (df["epochs"] == 1).all() and (df["status"] == "ok").all()  # the target length, --epochs
    # The candidates are the three best distinct trials other than the base, in rank order; the sentinels
    # sit at the median and the 7/8 quantile of the same ranking.
    ranking = _distinct_ranking(trials)
    top = df.drop_duplicates("candidate").set_index("candidate")["source_trial_id"]
    assert top["base"] == "g000i000"
    assert [top["top1"], top["top2"], top["top3"]] == ranking[:3]
    places = sentinel_positions(len(ranking), 3, 2)
    assert len(ranking) >= 7 and places == [round(0.5 * (len(ranking) - 1) - 0.01),
                                            round(0.875 * (len(ranking) - 1))]
    assert [top["sentinel1"], top["sentinel2"]] == [ranking[p] for p in places]
    # A new seed gives a new result: validation is not a copy of the trial.
    fit = dict(zip(trials["trial_id"], trials["fitness"]))
    assert not all(math.isclose(r.fitness, fit[r.source_trial_id]) for r in df.itertuples())

    # validation_summary.csv: per hyp the mean, and the paired difference to the base with its t interval.
    summary = pd.read_csv(run_dir / "validation_summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary["candidate"]) == ["base", "top1", "top2", "top3", "sentinel1", "sentinel2"]
    assert list(summary["role"]) == ["base", "top", "top", "top", "sentinel", "sentinel"]
    assert list(summary["rank"]) == [0, 1, 2, 3, *(p + 1 for p in places)]
    wide = df.pivot(index="seed", columns="candidate", values="fitness")
    summary = summary.set_index("candidate")
    for label in LABELS[1:]:
        diff = wide[label] - wide["base"]
        half = t_quantile(0.975, 1) * diff.std(ddof=1) / math.sqrt(2)
        row = summary.loc[label]
        assert row["pairs"] == 2 and row["seeds"] == 2 and row["mean"] == pytest.approx(wide[label].mean())
        assert (row["diff_mean"], row["diff_low"], row["diff_high"]) == (
            pytest.approx(diff.mean()), pytest.approx(diff.mean() - half), pytest.approx(diff.mean() + half))
        assert row["above_base"] == int(diff.mean() - half > 0)
    assert math.isnan(summary.loc["base", "diff_mean"]) and summary.loc["base", "pairs"] == 0
    # The verdict: the top candidate with the largest paired gain among those above 0, else the base.
    above = summary[(summary["role"] == "top") & (summary["above_base"] == 1)]
    chosen = above["diff_mean"].idxmax() if len(above) else "base"
    assert list(summary.index[summary["chosen"] == 1]) == [chosen]
    # The transfer over all six hyps, with n and its p, on every row.
    rho = summary["trial_fitness"].rank().corr(summary["mean"].rank())
    assert summary["transfer_spearman"].tolist() == pytest.approx([rho] * 6)
    assert (summary["transfer_n"] == 6).all()
    assert summary["transfer_p"].between(1 / 720 - 1e-12, 1).all()

    # hyp_validated.yaml: the verdict's hyp, full key set, a header saying which and why.
    text = (run_dir / "hyp_validated.yaml").read_text()
    saved = yaml.safe_load(text)
    assert list(saved) == list(HYP_KEYS)
    assert saved == pytest.approx(trials.set_index("trial_id").loc[top[chosen], list(HYP_KEYS)].to_dict())
    means, sds = df.groupby("candidate")["fitness"].mean(), df.groupby("candidate")["fitness"].std()
    assert f"fitness: {means[chosen]:.6g} +- {sds[chosen]:.6g}" in text
    assert f"base hyp: {means['base']:.6g} +- {sds['base']:.6g}" in text
    verdict = [line for line in log if "validated: " in line]
    assert len(verdict) == 1
    if chosen == "base":
        assert "# Verdict: the base hyp. No candidate's 95% interval of the paired difference is above 0" \
            in text
        assert "no candidate's 95% interval of the paired difference is above the base hyp over 2 paired " \
               "seeds of 1 epochs" in verdict[0]
        assert verdict[0].endswith("; hyp_validated.yaml is the base hyp")
    else:
        assert f"# Verdict: {chosen} (trial_id {top[chosen]}) beats the base hyp" in text
        gain = summary.loc[chosen, "diff_mean"]
        assert f"validated: {chosen} beats the base hyp by {gain:+.4f}" in verdict[0]
    for label in ("top1", "top2", "top3"):
        row = summary.loc[label]
        shown = f"{label} {row['diff_mean']:+.4f} [{row['diff_low']:+.4f}, {row['diff_high']:+.4f}]"
        assert shown in verdict[0] or label == chosen
    assert any(f"transfer: Spearman {rho:+.2f} between trial and validated fitness over 6 hyps (one-sided "
               f"permutation p {summary['transfer_p'].iloc[0]:.3f})" in line for line in log)
    assert (run_dir / "validation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validating_again_runs_nothing_and_leaves_the_evolution_records_alone(validated, ray_address):
    run_dir, _ = validated
    before = snapshot(run_dir)
    rows = (run_dir / "validation.csv").read_bytes()
    run(config(["--validate", str(run_dir), "--validate-top", "3", "--validate-seeds", "2",
                "--address", ray_address]))
    assert snapshot(run_dir) == before
    assert (run_dir / "validation.csv").read_bytes() == rows
    log = (run_dir / "validation.log").read_text()
    assert "12 run(s) to train" not in log and "0 run(s) to train, 12 already" in log


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

    # Killed once the first seed of every hyp is in (seed-major order: the sentinels' too).
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 240
            while rows_done() < 6 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]
    first = ValidationRecords(run_dir).rows()
    assert 6 <= len(first) < 12
    assert {r.candidate for r in first} == set(LABELS)
    resumed = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{12 - len(first)} run(s) to train, {len(first)} already" in resumed.stderr
    rows = ValidationRecords(run_dir).rows()
    assert len(rows) == 12 and len({r.key for r in rows}) == 12
    assert [r.key for r in rows[:len(first)]] == [r.key for r in first]
    for row in first:  # a seed finished before the kill was never started again, a sentinel's neither
        log = (run_dir / "trials" / f"val-{row.candidate}-s{row.seed}" / "trial.log").read_text()
        assert log.count("starts with trainer") == 1
    assert snapshot(run_dir) == before
    assert all((run_dir / name).is_file() for name in VALIDATION_FILES)
    assert len(pd.read_csv(run_dir / "validation_summary.csv")) == 6


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
                                  "seeds below 1", "seeds 1", "sentinels below 0", "epochs below 1", "top 0",
                                  "with resume"])
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
        "seeds 1": (["--validate", str(run_dir), "--validate-seeds", "1"],
                    "--validate-seeds 1: the paired verdict against the base hyp needs at least 2 seeds"),
        "sentinels below 0": (["--validate", str(run_dir), "--validate-sentinels", "-1"],
                              "--validate-sentinels must be >= 0"),
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
    assert code == 2 and "holds validation runs of 7 epochs, not 100" in err and err.count("\n") == 1
    assert (run_dir / "validation.csv").read_bytes() == before


def test_one_seed_for_an_evolution_is_refused_before_any_folder(tmp_path, capsys):
    project = tmp_path / "runs"
    code, err = _cli(["--trainer", "surrogate", "--generations", "1", "--population", "2", "--project",
                      str(project), "--validate-seeds", "1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--validate-seeds 1: the paired verdict" in err, err
    assert not project.exists()
    # Without validation there is no verdict, and one seed is no contradiction.
    assert config(["--validate-top", "0", "--validate-seeds", "1"]).validation.seeds == 1
    defaults = config([]).validation
    assert (defaults.top, defaults.sentinels_wanted, defaults.seeds) == (3, 2, 3)


def test_too_few_hyps_for_the_default_sentinels_validates_those_left_and_an_asked_number_is_refused(
        tmp_path, caplog, capsys):
    run_dir = _finished_run(tmp_path / "runs", trained=4)  # the base and 3 other hyps
    with caplog.at_level("INFO", logger="evolve.loops.winners"):
        vplan = plan_standalone(config(["--validate", str(run_dir), "--validate-top", "2"]))
    assert [c.label for c in vplan.candidates] == ["base", "top1", "top2", "sentinel1"]
    assert [c.source_trial_id for c in vplan.candidates] == ["g000i000", "g000i003", "g000i002", "g000i001"]
    assert vplan.seeds == [1, 2, 3]  # the default 3 seeds, after the run's seed 0
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(said) == 1 and said[0][0] == "INFO" and said[0][1].startswith("--validate-sentinels 2: the run in ")
    assert "has 1 distinct hyp(s) below its top 2; validating 1 sentinel(s)" in said[0][1]
    assert not (run_dir / "validation.csv").exists()
    caplog.clear()
    with caplog.at_level("INFO", logger="evolve.loops.winners"):
        vplan = plan_standalone(config(["--validate", str(run_dir), "--validate-top", "3"]))
    assert [c.label for c in vplan.candidates] == ["base", "top1", "top2", "top3"]
    assert "validating 0 sentinel(s)" in caplog.records[0].getMessage()
    # Asked for by number, on a run whose hyps are known: one line, exit 2, nothing written.
    code, err = _cli(["--validate", str(run_dir), "--validate-top", "2", "--validate-sentinels", "2"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.strip().endswith("has 1 distinct hyp(s) below its top 2; give --validate-sentinels 1 or fewer")
    assert not (run_dir / "validation.csv").exists()


def test_more_sentinels_than_an_evolution_can_have_is_refused_before_any_folder(tmp_path, capsys):
    project = tmp_path / "runs"
    code, err = _cli(["--trainer", "surrogate", "--generations", "2", "--population", "2", "--project",
                      str(project), "--validate-top", "2", "--validate-sentinels", "2"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert ("--validate-sentinels 2: an evolution of at most 4 trials (--population 2 x --generations 2) has "
            "at most 3 hyp(s) besides the base, 2 of them taken by --validate-top 2; give "
            "--validate-sentinels 1 or fewer") in err
    assert not project.exists()
    # The same from Python; the default adapts to a small run instead, and 1 fits.
    with pytest.raises(ConfigError, match=r"^--validate-sentinels 2: an evolution of at most 4 trials"):
        EvolveConfig(ga=GAConfig(population=2, generations=2),
                     validation=ValidationConfig(top=2, sentinels=2)).validate()
    config(["--generations", "2", "--population", "2", "--validate-top", "2", "--validate-sentinels", "1"])
    config(["--generations", "1", "--population", "2"])  # default top 3 and sentinels: no refusal


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
    assert [(x.label, x.source_trial_id, x.trial_fitness, x.rank) for x in cands] == [
        ("base", "t0", 0.9, 0), ("top1", "t2", 0.7, 1), ("top2", "t3", 0.6, 2)]
    # The one hyp left below the top becomes the sentinel; a second is not there to take.
    cands, _ = choose_candidates(rows, space, top=2, sentinels=2)
    assert [(x.label, x.source_trial_id, x.rank, x.role) for x in cands[3:]] == [
        ("sentinel1", "t5", 3, "sentinel")]


def test_sentinels_spread_from_the_median_to_the_bottom_quarter():
    assert sentinel_positions(10, 3, 2) == [4, 8]  # median of 0..9 is 4.5 (the better place), 7/8: 7.9
    assert sentinel_positions(20, 3, 2) == [9, 17]
    assert sentinel_positions(100, 3, 1) == [49]
    assert sentinel_positions(100, 3, 3) == [49, 68, 87]
    assert sentinel_positions(6, 3, 2) == [3, 4]  # the median is in the top: the nearest free place
    assert sentinel_positions(8, 5, 2) == [5, 6]
    assert sentinel_positions(5, 3, 2) == [3, 4] and sentinel_positions(4, 3, 2) == [3]
    assert sentinel_positions(3, 3, 2) == [] and sentinel_positions(10, 3, 0) == []
