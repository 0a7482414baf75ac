"""Tests of evolve/driver.py: whole evolutions on the session's Ray with the surrogate trainer.

The reference run (population 6, 3 generations, one elite carried per generation) is shared; the other
runs are compared with it row for row: a second run with the same seed, a run killed with SIGKILL in
the middle of generation 1 and resumed, a run stopped with Ctrl-C and resumed. One more pair compares
the command line with ``evolve.run`` on an ``EvolveConfig`` built in Python.
"""
from __future__ import annotations

import logging
import os
import pickle
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
from evolve.config import (
    EvolveConfig,
    GAConfig,
    RayConfig,
    SurrogateOptions,
    TrialConfig,
    ValidationConfig,
    config_from_argv,
)
from evolve.contract import Metrics, fitness, sanitised, selection_value
from evolve.driver import run
from evolve.errors import ConfigError
from evolve.execution.jobs import WAIT, TrialJob
from evolve.loops.base import Interrupted
from evolve.loops.checkpoint import checkpoint_state
from evolve.loops.generational import GenerationalEvolution as _Evolution
from evolve.loops.generational import GenerationSource
from evolve.loops.plan import prepare
from evolve.output.records import CSV_COLUMNS, RunRecords, TrialRecord
from evolve.output.rundir import load_checkpoint
from evolve.search.ga import GeneticAlgorithm
from evolve.search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[3]
ORCHESTRATE = str(ROOT / "orchestrate.py")
# One elite per generation, so rows < population x generations.
FLAGS = ["--trainer", "surrogate", "--generations", "3", "--population", "6", "--epochs", "2",
         "--elite", "1,1", "--seed", "1"]
# Interrupted runs take 0.3 s per trial, one at a time, so that a kill lands in the middle of a generation;
# the surrogate's fitness does not depend on its simulated duration, so their rows match the reference's.
SLOW = ["--surrogate-seconds", "0.3", "--max-concurrent", "1"]
ROW_KEY = ["generation", "individual", "trial_id", "status", "fitness", *HYP_KEYS]


def config(argv: list[str]):
    return config_from_argv(argv)


def rows(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "evolve.csv")


def row_set(run_dir: Path) -> set[tuple]:
    return set(rows(run_dir)[ROW_KEY].itertuples(index=False, name=None))


@pytest.fixture(scope="module")
def reference(ray_address: str, tmp_path_factory: pytest.TempPathFactory,
              collect_logs) -> tuple[Path, list[str]]:
    """The uninterrupted run every other run is compared with, and what the driver logged."""
    project = tmp_path_factory.mktemp("reference")
    with collect_logs("evolve.loops") as messages:
        run_dir = run(config([*FLAGS, "--project", str(project), "--address", ray_address]))
    return run_dir, messages


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def generation_rows(run_dir: Path, generation: int) -> int:
    path = run_dir / "evolve.csv"
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()[1:]
    return sum(1 for line in lines if line.startswith(f"{generation},") and line.count(",") > 10)


def test_full_run_leaves_every_output(reference):
    run_dir, messages = reference
    df = rows(run_dir)
    assert list(df.columns) == CSV_COLUMNS
    assert sorted(df["generation"].unique()) == [0, 1, 2]
    assert (df["status"] == "ok").all()
    # Generation 0 trains all 6; later ones carry their elite (trained before) and train the rest.
    assert df.groupby("generation").size().tolist() == [6, 5, 5]
    assert list(df["trial_id"]) == [f"g{g:03d}i{i:03d}" for g, i in zip(df["generation"], df["individual"])]
    for _, r in df.iterrows():
        assert r["fitness"] == pytest.approx(fitness(r["metrics/mAP_0.5"], r["metrics/mAP_0.5:0.95"]))
    # hyp_evolve.yaml is the best row's hyps.
    best = df.loc[df["fitness"].idxmax()]
    saved = yaml.safe_load((run_dir / "hyp_evolve.yaml").read_text())
    assert list(saved) == list(HYP_KEYS)
    assert saved == pytest.approx({k: best[k] for k in HYP_KEYS})
    # evolve_population.yaml is the last generation, which is also what the checkpoint holds.
    state = load_checkpoint(run_dir)
    assert state["generation"] == 2 and len(state["population"]) == 6
    population = yaml.safe_load((run_dir / "evolve_population.yaml").read_text())
    assert list(population) == [f"gen2number{i}" for i in range(6)]
    space = SearchSpace.load()
    assert [population[f"gen2number{i}"] for i in range(6)] == [space.decode(g) for g in state["population"]]
    for name in ("evolve.png", "fitness.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run_dir / ".lock").exists()
    assert any(f"python -m detector train --hyp {run_dir / 'hyp_evolve.yaml'}" in m for m in messages)
    assert any(m.startswith(f"best fitness {best['fitness']:.5f}") for m in messages)


def test_carried_elites_and_repeats_are_not_trained_again(reference):
    run_dir, _ = reference
    df = rows(run_dir)
    assert len(df) < 6 * 3
    keys = [tuple(r) for r in df[list(SearchSpace.load().keys)].itertuples(index=False, name=None)]
    assert len(keys) == len(set(keys))
    # The elite of generation 2 is the best genome of generations 0-1, whose row is from before.
    state = load_checkpoint(run_dir)
    space = SearchSpace.load()
    elite = space.genome_key(state["population"][0])
    earlier = df[df["generation"] < 2]
    best_before = earlier.loc[earlier["fitness"].idxmax()]
    assert elite == tuple(best_before[k] for k in space.keys)


def test_same_seed_same_rows(reference, ray_address, tmp_path):
    run_dir = run(config([*FLAGS, "--project", str(tmp_path), "--address", ray_address]))
    assert row_set(run_dir) == row_set(reference[0])


def test_the_command_line_and_python_give_the_same_run(ray_address, tmp_path):
    # Population 6 without --elite (the default schedule fitted to it), --seed 3 on the noisy landscape
    # (whose noise draws on the trials' seed) and an empty address: each a policy that only the command
    # line used to apply. Both runs join the session's Ray, which an empty address does not replace.
    flags = ["--trainer", "surrogate", "--population", "6", "--generations", "3", "--epochs", "1",
             "--seed", "3", "--surrogate-landscape", "noisy", "--validate-top", "0", "--address", ""]
    assert orchestrate.main([*flags, "--project", str(tmp_path / "cli")]) == 0
    cfg = EvolveConfig(ga=GAConfig(population=6, generations=3, seed=3), trainer="surrogate",
                       train=TrialConfig(epochs=1, surrogate=SurrogateOptions(landscape="noisy")),
                       validation=ValidationConfig(top=0), ray=RayConfig(address=""),
                       project=str(tmp_path / "python"))
    python_dir = run(cfg)
    # Two trials run at once, so rows are appended in the order trials end: compare them in trial order.
    cli_rows, python_rows = (rows(d).drop(columns="seconds").sort_values(["generation", "individual"])
                             .reset_index(drop=True) for d in (tmp_path / "cli" / "exp", python_dir))
    assert len(cli_rows) == 6 + 5 + 5  # one elite carried per generation, as the default fits to 6
    pd.testing.assert_frame_equal(cli_rows, python_rows)


def test_sigkill_mid_generation_then_resume_gives_the_same_rows(reference, ray_address, tmp_path):
    project = tmp_path / "runs"
    run_dir = project / "exp"
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, ORCHESTRATE, *FLAGS, *SLOW, "--project", str(project),
                                 "--address", ray_address], stdout=log, stderr=log)
        try:
            wait_for(lambda: generation_rows(run_dir, 1) >= 1 or proc.poll() is not None, 180, "generation 1")
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = rows(run_dir)
    expected = rows(reference[0])
    assert 1 <= (done["generation"] == 1).sum() < (expected["generation"] == 1).sum()
    resume = [sys.executable, ORCHESTRATE, "--resume", str(run_dir), "--address", ray_address]
    resumed = subprocess.run(resume, check=False, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    df = rows(run_dir)
    assert not df.duplicated(["generation", "individual"]).any()
    assert row_set(run_dir) == row_set(reference[0])
    assert load_checkpoint(run_dir)["generation"] == 2
    # The trial-epochs count goes on from fidelity.csv: every trial that ended counts, none is lost.
    fid = pd.read_csv(run_dir / "fidelity.csv")
    assert set(fid["trial_id"]) == set(df["trial_id"]) and (fid["epochs"] == 2).all()
    total = yaml.safe_load((run_dir / "fidelity.yaml").read_text())["trial_epochs"]
    assert total == 2 * len(fid) >= 2 * len(df)


def test_trials_too_short_for_a_rung_count_their_epochs(reference):
    run_dir, _ = reference
    fid = pd.read_csv(run_dir / "fidelity.csv")
    assert list(fid.columns) == ["trial_id", "status", "epochs", "fitness"]  # no rung fits before epoch 2
    assert fid["trial_id"].tolist() == rows(run_dir)["trial_id"].tolist()
    summary = yaml.safe_load((run_dir / "fidelity.yaml").read_text())
    assert summary == {"fidelity": "prefix", "target_epochs": 2, "rungs": [], "trials": 16,
                       "trial_epochs": 32, "agreement": []}


def test_ctrl_c_exits_130_and_the_run_resumes(reference, ray_address, tmp_path):
    project = tmp_path / "runs"
    run_dir = project / "exp"
    proc = subprocess.Popen([sys.executable, ORCHESTRATE, *FLAGS, *SLOW, "--project", str(project),
                             "--address", ray_address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: generation_rows(run_dir, 0) >= 2 or proc.poll() is not None, 180, "two trials")
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert f"resume with: python orchestrate.py --resume {run_dir}" in err
    assert not (run_dir / ".lock").exists()
    assert len(rows(run_dir)) < len(rows(reference[0]))
    run(config(["--resume", str(run_dir), "--address", ray_address]))
    assert row_set(run_dir) == row_set(reference[0])


def test_injected_failures_are_rows_with_fitness_0_and_the_run_completes(ray_address, tmp_path):
    run_dir = run(config(["--trainer", "surrogate", "--generations", "2", "--population", "6",
                          "--epochs", "2", "--surrogate-failure-rate", "0.2", "--seed", "3",
                          "--project", str(tmp_path), "--address", ray_address]))
    df = rows(run_dir)
    failed = df[df["status"] == "failed"]
    assert len(failed) >= 1
    assert (failed["fitness"] == 0).all()
    assert (df.loc[df["status"] != "failed", "fitness"] > 0).all()
    assert sorted(df["generation"].unique()) == [0, 1]
    assert load_checkpoint(run_dir)["generation"] == 1
    assert next(iter(yaml.safe_load((run_dir / "evolve_population.yaml").read_text()))) == "gen1number0"
    best = yaml.safe_load((run_dir / "hyp_evolve.yaml").read_text())
    top = df.loc[df["fitness"].idxmax()]
    assert best == pytest.approx({k: top[k] for k in HYP_KEYS})


# --- pieces of the driver, without Ray -----------------------------------------------------------------

class ScriptedSource(GenerationSource):
    """A generation source whose generations, and what it does with results, the test decides."""

    def __init__(self, advance, record, on_start=lambda job: None, **kwargs):
        super().__init__(**kwargs)
        self._advance, self._record, self._on_start = advance, record, on_start


def test_generation_source_runs_every_generation_with_a_barrier_between_them():
    gen0 = [TrialJob(f"g000i00{i}", 0, i, {}) for i in range(2)]
    gen2 = [TrialJob("g002i000", 2, 0, {})]
    plans = iter([gen0, [], gen2, None])  # generation 1 has nothing to train (all carried)
    advanced: list[int] = []

    def advance():
        advanced.append(1)
        return next(plans)

    clock = iter([10.0, 11.0, 14.5, 16.0, 20.0, 20.5]).__next__
    seen: list[tuple[str, str, float]] = []
    started: list[int] = []
    source = ScriptedSource(advance, lambda j, m, s: seen.append((j.trial_id, m.status, s)),
                            on_start=lambda job: started.append(1), clock=clock)
    assert source.has_jobs() and len(advanced) == 1
    a, b = source.next_job(), source.next_job()
    assert (a.trial_id, b.trial_id) == ("g000i000", "g000i001")
    assert source.next_job() is WAIT  # the barrier: nothing of generation 2 before generation 0 is done
    source.on_result(b, Metrics(status="failed"))
    assert source.next_job() is WAIT and len(advanced) == 1
    source.on_result(a, Metrics())
    source.on_result(a, Metrics())  # a duplicate result never makes a second row
    c = source.next_job()
    assert c.trial_id == "g002i000" and len(advanced) == 3
    assert source.next_job() is WAIT
    source.on_result(c, Metrics(fitness=0.5))
    assert source.next_job() is None and len(advanced) == 4
    assert source.next_job() is None and len(advanced) == 4
    assert seen == [("g000i001", "failed", 3.5), ("g000i000", "ok", 6.0), ("g002i000", "ok", 0.5)]
    assert len(started) == 3
    # Tune pickles its search algorithm; a source goes without anything of the driver's.
    clone = pickle.loads(pickle.dumps(source))
    assert type(clone) is ScriptedSource and vars(clone) == {}


def test_a_source_with_nothing_to_run_never_starts_trials():
    source = ScriptedSource(lambda: None, lambda j, m, s: None)
    assert not source.has_jobs() and source.next_job() is None


def test_selection_values_put_finished_above_stopped_above_failed():
    ok_low = Metrics(fitness=0.05, status="ok")
    stopped_high = Metrics(fitness=0.95, status="stopped")
    stopped_zero = Metrics(fitness=0.0, status="stopped")
    failed = Metrics(fitness=0.7, status="failed")
    diverged = Metrics(fitness=float("nan"), status="diverged")
    assert selection_value(ok_low) == pytest.approx(3.05)
    assert selection_value(stopped_high) == pytest.approx(1.95)
    assert selection_value(stopped_zero) == 1.0
    assert selection_value(failed) == selection_value(diverged) == 0.0
    assert selection_value(Metrics(fitness=0.0)) == 3.0
    assert selection_value(Metrics(fitness=1.0, status="stopped")) == 2.0
    assert selection_value(Metrics(fitness=1.5)) == 4.0  # a user's trainer may claim more than 1
    # Within a tier the fitness decides.
    assert selection_value(Metrics(fitness=0.3)) > selection_value(Metrics(fitness=0.2))
    assert sanitised(failed).fitness == 0.0 and failed.fitness == 0.7


def test_a_stopped_trial_with_high_fitness_loses_tournaments_to_a_finished_one():
    n = len(SearchSpace.load())
    stopped, finished = [0.9] * n, [0.1] * n
    metrics = {tuple(stopped): Metrics(fitness=0.8, status="stopped"), tuple(finished): Metrics(fitness=0.3)}
    # No crossover or mutation: every child is a copy of its tournament's winner. 60 aspirants drawn from
    # two individuals: every tournament holds both (all alike has probability 2**-59).
    cfg = GAConfig(population=4, generations=2, tournament=(60, 60), crossover_rate=(0.0, 0.0),
                   mutation_rate=(0.0, 0.0), elite=(0, 0), seed=5)

    def winners(value) -> list[list[float]]:
        ga = GeneticAlgorithm(cfg, n)
        evaluated = [(list(g), value(m)) for g, m in metrics.items()]
        return [ga.breed_one(evaluated, 0.5) for _ in range(20)]

    assert all(child == finished for child in winners(selection_value))
    # Ranked by raw fitness the stopped trial would have won them all: the tiers make the difference.
    assert all(child == stopped for child in winners(lambda m: m.fitness))


def make_evolution(tmp_path: Path) -> _Evolution:
    plan = prepare(config(["--trainer", "surrogate", "--population", "6", "--generations", "2",
                           "--elite", "2,5", "--project", str(tmp_path)]))
    run_dir = tmp_path / "exp"
    run_dir.mkdir()
    return _Evolution(plan, run_dir)


def test_generational_elites_rank_every_finished_trial_above_stopped_ones(tmp_path):
    ev = make_evolution(tmp_path)
    space = ev.space
    population = [[0.1 * (i + 1)] * len(space) for i in range(6)]
    ev._start()
    ev._first = (0, population)
    assert len(ev._advance()) == 6
    outcomes = [Metrics(fitness=0.9, status="stopped"), Metrics(fitness=0.2), Metrics(fitness=0.1),
                Metrics(status="failed"), Metrics(fitness=0.5, status="stopped"), Metrics(fitness=0.05)]
    for genome, metrics in zip(population, outcomes):
        ev.cache[space.genome_key(genome)] = metrics
    ev._advance()  # closes generation 0 and breeds generation 1, the last: 5 elites
    assert ev.generation == 1
    assert ev.population[:5] == [population[i] for i in (1, 2, 5, 0, 4)]
    assert load_checkpoint(ev.run_dir)["generation"] == 1


def test_a_genome_is_trained_once_per_rounded_key(tmp_path):
    ev = make_evolution(tmp_path)
    space = ev.space
    g = [0.5] * len(space)
    near = [0.5 + 1e-12] + [0.5] * (len(space) - 1)  # decodes to the same rounded hyps
    other = [0.25] * len(space)
    done = [0.75] * len(space)
    ev.cache[space.genome_key(done)] = Metrics(fitness=0.2)
    jobs = ev._jobs(4, [g, near, other, done, g])
    assert [(j.trial_id, j.individual) for j in jobs] == [("g004i000", 0), ("g004i002", 2)]
    assert jobs[1].hyp == space.decode(other)


def test_plots_failing_never_end_the_run(tmp_path, monkeypatch, caplog):
    ev = make_evolution(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr("evolve.output.plotter.plot_evolve", broken)
    ev.population = [[0.5] * len(ev.space), [0.25] * len(ev.space)]
    ev._start()
    ev._record(TrialJob("g000i000", 0, 0, ev.space.decode(ev.population[0])), Metrics(fitness=0.1), 1.0)
    caplog.set_level(logging.WARNING, logger="evolve.loops")
    ev._finish_generation()
    ev.plotter.close()  # plots are drawn in the background
    assert "could not draw evolve.png: RuntimeError: no display" in caplog.text
    assert (ev.run_dir / "fitness.png").is_file()
    assert list(yaml.safe_load((ev.run_dir / "evolve_population.yaml").read_text())) == ["gen0number0",
                                                                                        "gen0number1"]


def test_resume_extends_generations_and_logs_ignored_flags(tmp_path, caplog):
    ev = make_evolution(tmp_path)
    from evolve.output.rundir import save_checkpoint

    save_checkpoint(ev.run_dir, checkpoint_state(ev.cfg, ev.plan.fingerprint, generation=1,
                                                 population=[[0.5] * len(ev.space)] * 6,
                                                 ga_state=ev.ga.get_state()))
    caplog.set_level(logging.WARNING)
    plan = prepare(config(["--resume", str(ev.run_dir), "--generations", "5", "--population", "9",
                           "--address", "auto", "--mode", "async"]))
    assert plan.cfg.ga.generations == 5 and plan.cfg.ga.population == 6 and plan.cfg.ray.address == "auto"
    assert plan.run_dir == ev.run_dir and plan.checkpoint["generation"] == 1
    assert plan.cfg.mode == "generational"
    assert "--population 9 ignored: the resumed run keeps 6" in caplog.text
    assert "--mode async ignored: the resumed run keeps generational" in caplog.text
    assert "--generations" not in caplog.text
    with pytest.raises(ConfigError, match=r"^--generations 1: the run in .* is already at generation 1 "
                                          r".*at least 2 generations"):
        prepare(config(["--resume", str(ev.run_dir), "--generations", "1"]))


def test_a_checkpoint_of_another_mode_than_its_configuration_is_refused(tmp_path):
    ev = make_evolution(tmp_path)
    from evolve.output.rundir import save_checkpoint

    state = checkpoint_state(ev.cfg, ev.plan.fingerprint, generation=0,
                             population=[[0.5] * len(ev.space)] * 6, ga_state=ev.ga.get_state())
    state["mode"] = "async"
    save_checkpoint(ev.run_dir, state)
    with pytest.raises(ConfigError, match=r"checkpoint\.pkl: checkpoint of a 'async' run, but its "
                                          r"configuration says 'generational'"):
        prepare(config(["--resume", str(ev.run_dir)]))


def test_seeds_are_the_base_the_population_dir_and_a_population_file(tmp_path):
    space = SearchSpace.load()
    folder = tmp_path / "seeds"
    folder.mkdir()
    (folder / "a.yaml").write_text(yaml.safe_dump(dict(space.base, lr0=0.02)))
    RunRecords(tmp_path / "old").write_population(0, [dict(space.base, lr0=0.03), dict(space.base, lr0=0.04)])
    plan = prepare(config(["--trainer", "surrogate", "--population", "6", "--population-dir", str(folder),
                           "--resume", str(tmp_path / "old" / "evolve_population.yaml"),
                           "--project", str(tmp_path / "runs")]))
    assert plan.checkpoint is None and plan.run_dir is None  # a population file starts a new run
    assert [s["lr0"] for s in plan.seeds] == [0.01, 0.02, 0.03, 0.04]
    assert not (tmp_path / "runs").exists()


def test_interrupted_carries_the_run_folder():
    exc = Interrupted(Path("runs/evolve/exp"))
    assert isinstance(exc, KeyboardInterrupt) and exc.run_dir == Path("runs/evolve/exp")


def test_records_of_a_resumed_run_are_read_back_exactly(tmp_path):
    # The cache of a resumed run is rebuilt from evolve.csv: fitness and rounded genome must round-trip.
    ev = make_evolution(tmp_path)
    genome = [0.123456789] * len(ev.space)
    m = Metrics(map50=0.61234567891, map50_95=0.4123456789).with_fitness()
    RunRecords(ev.run_dir).append(TrialRecord(0, 3, "g000i003", ev.space.decode(genome), m))
    (row,) = RunRecords(ev.run_dir).rows()
    assert row.metrics.fitness == m.fitness
    assert ev.space.genome_key(ev.space.encode(row.hyp)) == ev.space.genome_key(genome)
