"""Tests of evolve/steady.py: the async (steady-state) evolution.

The bookkeeping (breeding, population, resume reconciliation) is tested without Ray; whole runs use the
session's Ray with the surrogate trainer: a reference run with one trial at a time (deterministic for a
seed, so a second run must give the same rows in the same order), a run killed with SIGKILL and
resumed, and a run with ASHA early stopping.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from detector.hyp import HYP_KEYS
from evolve.contract import Metrics
from evolve.contract import selection_value
from evolve.driver import run
from evolve.loops.plan import prepare
from evolve.errors import ConfigError
from evolve.config import GAConfig, config_from_argv
from evolve.search.ga import GeneticAlgorithm
from evolve.output.records import CSV_COLUMNS, RunRecords
from evolve.output.rundir import load_checkpoint, save_checkpoint
from evolve.execution.jobs import WAIT
from evolve.search.space import SearchSpace
from evolve.loops.steady import REBREED_LIMIT, Child, SteadyEvolution, SteadyState, child_name

ROOT = Path(__file__).resolve().parents[3]
ORCHESTRATE = str(ROOT / "orchestrate.py")
POP, GENS = 4, 3
FLAGS = ["--mode", "async", "--trainer", "surrogate", "--generations", str(GENS), "--population", str(POP),
         "--epochs", "2", "--seed", "2"]
ROW_KEY = ["generation", "individual", "trial_id", "status", "fitness", *HYP_KEYS]
ALL_IDS = [child_name(b, POP)[2] for b in range(POP * GENS)]


def config(argv: list[str]):
    return config_from_argv(argv)


def rows(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "evolve.csv")


def row_list(run_dir: Path) -> list[tuple]:
    return list(rows(run_dir)[ROW_KEY].itertuples(index=False, name=None))


def make_state(population: int = POP, generations: int = GENS, seed: int = 0, age: int = 0) -> SteadyState:
    space = SearchSpace.load()
    ga = GeneticAlgorithm(GAConfig(population=population, generations=generations, elite=(1, 1), seed=seed),
                          len(space))
    return SteadyState(ga, space, population, population * generations, age)


# --- bookkeeping, without Ray ----------------------------------------------------------------------------

def test_child_names_count_nominal_generations():
    assert child_name(0, 4) == (0, 0, "g000i000")
    assert child_name(9, 4) == (2, 1, "g002i001")
    assert child_name(1234, 50) == (24, 34, "g024i034")


def test_one_child_per_free_slot_until_the_budget_then_none():
    state = make_state()
    space = state.space
    state.seed([space.random_genome(random.Random(i)) for i in range(POP)])
    assert state.bred == POP and len(state.queue) == POP
    first = [state.next_child() for _ in range(POP)]
    assert [c.index for c in first] == [0, 1, 2, 3]
    assert state.next_child() is WAIT  # nothing evaluated yet to breed from
    state.finish(first[0].trial_id, Metrics(fitness=0.01))
    child = state.next_child()
    assert (child.index, child.trial_id, state.bred) == (4, "g001i000", 5)
    running = [*first[1:], child]
    seen = [c.trial_id for c in first] + [child.trial_id]
    while True:
        nxt = state.next_child()
        if nxt is None:
            break
        if nxt is WAIT:
            done = running.pop(0)
            state.finish(done.trial_id, Metrics(fitness=0.1 + 0.01 * done.index))
            continue
        running.append(nxt)
        seen.append(nxt.trial_id)
    assert seen == ALL_IDS and not state.running and state.bred == POP * GENS
    assert len(state.known) == POP * GENS  # every child a different rounded genome
    assert len(state.members) == POP
    # The population is the best evaluated: here the latest children, whose fitness is highest.
    assert [m.index for m in state.members] == [11, 10, 9, 8]


def test_the_population_ranks_finished_above_stopped_above_failed():
    state = make_state(population=3)
    genome = [0.5] * len(state.space)
    outcomes = [Metrics(fitness=0.9, status="stopped"), Metrics(fitness=0.2), Metrics(status="failed"),
                Metrics(fitness=0.1), Metrics(fitness=0.2)]
    for i, metrics in enumerate(outcomes):
        state.admit(Child(i, child_name(i, 3)[2], [x + 0.01 * i for x in genome]), metrics)
    # Both finished trials beat the stopped one despite its 0.9; ties go to the earlier child.
    assert [(m.index, m.fitness) for m in state.members] == [(1, 0.2), (4, 0.2), (3, 0.1)]
    assert [m.value for m in state.members] == [selection_value(outcomes[i]) for i in (1, 4, 3)]
    state.admit(Child(5, "g001i002", [0.1] * len(genome)), Metrics(fitness=0.3))
    assert [m.index for m in state.members] == [5, 1, 4]


def lucky_start(age: int) -> SteadyState:
    """Population 3 after children 0-4 of fitness 0.9 0.8 0.7 0.2 0.1, with 5 bred: 0-2 are the best."""
    state = make_state(population=3, age=age)
    state.bred = 5
    for i, fit in enumerate((0.9, 0.8, 0.7, 0.2, 0.1)):
        state.admit(Child(i, child_name(i, 3)[2], [0.1 + 0.1 * i] * len(state.space)), Metrics(fitness=fit))
    return state


def test_with_ageing_a_lucky_old_member_loses_its_seat_to_a_young_one(monkeypatch):
    state = lucky_start(age=4)
    # Child 0 is older than 4 births but is the elite (--elite 1): it keeps its seat.
    assert [m.index for m in state.members] == [0, 1, 2]
    assert [m.index for m in state.reserve] == [3, 4]
    seen = []
    monkeypatch.setattr(state.ga, "breed_one", lambda evaluated, progress: seen.append(evaluated)
                        or [0.77] * len(state.space))
    state.bred = 7  # two more births: children 1 and 2 are now 4 or more births old
    state.breed()
    assert [m.index for m in state.members] == [0, 3, 4] and state.reserve == []
    assert [v for _, v in seen[0]] == [selection_value(Metrics(fitness=f)) for f in (0.9, 0.2, 0.1)]
    # That breed was the eighth birth: child 3 is now too old as well, and child 7 takes its seat.
    state.admit(Child(7, "g002i001", [0.05] * len(state.space)), Metrics(fitness=0.15))
    assert state.bred == 8 and [m.index for m in state.members] == [0, 7, 4] and state.reserve == []


def test_without_ageing_the_best_ever_keep_their_seats():
    state = lucky_start(age=0)
    state.bred = 7
    state.reseat()
    assert [m.index for m in state.members] == [0, 1, 2] and state.reserve == []


def test_a_duplicate_child_is_bred_again_and_never_trained(monkeypatch, caplog):
    state = make_state()
    space = state.space
    old, new = [0.5] * len(space), [0.25] * len(space)
    state.admit(Child(0, "g000i000", old), Metrics(fitness=0.5))
    state.bred = POP
    answers = iter([list(old), [0.5 + 1e-12] + old[1:], list(new)])
    monkeypatch.setattr(state.ga, "breed_one", lambda evaluated, progress: next(answers))
    child = state.breed()
    assert child.genome == new and child.index == POP
    # A GA that keeps giving the same genome gets a random one after REBREED_LIMIT tries.
    calls = []
    monkeypatch.setattr(state.ga, "breed_one", lambda evaluated, progress: calls.append(1) or list(old))
    with caplog.at_level(logging.WARNING, logger="evolve.loops.steady"):
        fallback = state.breed()
    assert len(calls) == REBREED_LIMIT and "using a random genome" in caplog.text
    assert space.genome_key(fallback.genome) not in (space.genome_key(old), space.genome_key(new))
    assert fallback.genome == make_fallback_again(POP + 1)


def make_fallback_again(bred: int) -> list[float]:
    # The fallback genome depends only on the seed and the child's index, so a resumed run draws it again.
    state = make_state()
    state.bred = bred
    return state._fallback()


def test_progress_of_the_schedules_runs_in_trials(monkeypatch):
    state = make_state()
    state.admit(Child(0, "g000i000", [0.5] * len(state.space)), Metrics(fitness=0.5))
    seen = []
    monkeypatch.setattr(state.ga, "breed_one", lambda evaluated, progress: seen.append(progress)
                        or [0.1 * len(seen)] * len(state.space))
    for bred in (4, 6, 11):
        state.bred = bred
        state.breed()
    assert seen == [4 / 12, 6 / 12, 11 / 12]


def test_resume_relaunches_pending_children_and_admits_those_already_recorded(tmp_path):
    plan = prepare(config([*FLAGS, "--project", str(tmp_path)]))
    run_dir = tmp_path / "exp"
    run_dir.mkdir()
    first = SteadyEvolution(plan, run_dir)
    first._start()
    state = load_checkpoint(run_dir)
    assert (state["mode"], state["bred"], state["population"]) == ("async", POP, [])
    assert [p[1] for p in state["pending"]] == ALL_IDS[:POP]
    jobs = [first.next_job() for _ in range(3)]
    first.on_result(jobs[1], Metrics(map50=0.5, map50_95=0.3).with_fitness())
    # Killed after writing the row of jobs[0] but before saving the checkpoint that follows it.
    saved = (run_dir / "checkpoint.pkl").read_bytes()
    first.on_result(jobs[0], Metrics(map50=0.4, map50_95=0.2).with_fitness())
    (run_dir / "checkpoint.pkl").write_bytes(saved)
    ckpt = load_checkpoint(run_dir)
    assert [p[1] for p in ckpt["pending"]] == ["g000i000", "g000i002", "g000i003"]

    again = SteadyEvolution(prepare(config(["--resume", str(run_dir)])), run_dir)
    again._start()
    assert [c.trial_id for c in again.state.queue] == ["g000i002", "g000i003"]
    assert sorted(m.index for m in again.state.members) == [0, 1]
    assert again.state.members[0].genome == first.state.members[0].genome  # exact, not read from the CSV
    assert again.ga.get_state() == first.ga.get_state()
    assert len(RunRecords(run_dir).rows()) == 2


def test_resume_with_ageing_keeps_the_reserve_and_breeds_the_same_children(tmp_path):
    plan = prepare(config([*FLAGS, "--age", "1.5", "--project", str(tmp_path)]))  # 6 births
    run_dir = tmp_path / "exp"
    run_dir.mkdir()
    first = SteadyEvolution(plan, run_dir)
    first._start()
    for i in range(6):  # the four seeds, then two bred children
        job = first.next_job()
        first.on_result(job, Metrics(map50=0.1 + 0.05 * i, map50_95=0.05 + 0.02 * i).with_fitness())
    assert (first.state.bred, len(first.state.members), len(first.state.reserve)) == (6, POP, 2)
    again = SteadyEvolution(prepare(config(["--resume", str(run_dir)])), run_dir)
    again._start()
    assert again.state.age == 6
    assert [m.saved() for m in again.state.reserve] == [m.saved() for m in first.state.reserve]
    for _ in range(3):  # from the eighth birth child 0 is too old; both runs breed the same children
        assert again.next_job().hyp == first.next_job().hyp
    assert [m.index for m in again.state.members] == [m.index for m in first.state.members]


def test_a_checkpoint_from_before_ageing_resumes_without_it(tmp_path):
    plan = prepare(config([*FLAGS, "--age", "0", "--project", str(tmp_path)]))
    run_dir = tmp_path / "exp"
    run_dir.mkdir()
    SteadyEvolution(plan, run_dir)._start()
    state = load_checkpoint(run_dir)
    del state["config"]["ga"]["age"], state["reserve"]  # as written before --age existed
    save_checkpoint(run_dir, state)
    again = SteadyEvolution(prepare(config(["--resume", str(run_dir)])), run_dir)
    again._start()
    assert (again.cfg.ga.age, again.state.age, again.state.reserve) == (0.0, 0, [])
    assert [GAConfig(population=50).age_births(), GAConfig(population=4, age=0.1).age_births()] == [50, 1]


# --- whole runs on Ray ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An async run with one trial at a time: its rows follow from the seed alone."""
    project = tmp_path_factory.mktemp("async-reference")
    return run(config([*FLAGS, "--max-concurrent", "1", "--project", str(project), "--address", ray_address]))


def test_async_run_trains_the_budget_once_each_and_writes_every_output(reference):
    df = rows(reference)
    assert list(df.columns) == CSV_COLUMNS
    assert list(df["trial_id"]) == ALL_IDS  # one at a time: results arrive in breeding order
    assert list(df["generation"]) == [b // POP for b in range(POP * GENS)]
    assert list(df["individual"]) == [b % POP for b in range(POP * GENS)]
    assert (df["status"] == "ok").all()
    keys = df[list(SearchSpace.load().keys)].itertuples(index=False, name=None)
    assert len(set(keys)) == POP * GENS
    state = load_checkpoint(reference)
    assert state["mode"] == "async" and state["bred"] == POP * GENS and state["pending"] == []
    # With the default --age 1 (POP births) and elite 1, the population is the best row ever, then the best
    # rows of the last nominal generation (the last POP children bred), best first; evolve_population.yaml
    # holds it.
    ranked = df.sort_values("fitness", ascending=False, kind="stable")
    young = ranked.iloc[1:][ranked.iloc[1:]["generation"] == GENS - 1]
    best = pd.concat([ranked.head(1), young]).head(POP)
    assert len(best) == POP and list(best.index) != list(ranked.head(POP).index)  # an old member aged out
    assert [m[3] for m in state["population"]] == pytest.approx(list(best["fitness"]))
    population = yaml.safe_load((reference / "evolve_population.yaml").read_text())
    assert list(population) == [f"gen{GENS - 1}number{i}" for i in range(POP)]
    assert population[f"gen{GENS - 1}number0"] == pytest.approx({k: best.iloc[0][k] for k in HYP_KEYS})
    saved = yaml.safe_load((reference / "hyp_evolve.yaml").read_text())
    assert saved == pytest.approx({k: best.iloc[0][k] for k in HYP_KEYS})
    for name in ("evolve.png", "fitness.png"):
        assert (reference / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (reference / ".lock").exists()


def test_one_trial_at_a_time_is_deterministic_for_a_seed(reference, ray_address, tmp_path):
    again = run(config([*FLAGS, "--max-concurrent", "1", "--project", str(tmp_path),
                        "--address", ray_address]))
    assert row_list(again) == row_list(reference)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def count_rows(run_dir: Path) -> int:
    path = run_dir / "evolve.csv"
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines()[1:] if line.count(",") > 10)


def test_sigkill_mid_run_then_resume_trains_every_child_exactly_once(ray_address, tmp_path):
    project = tmp_path / "runs"
    run_dir = project / "exp"
    slow = ["--surrogate-seconds", "0.3", "--max-concurrent", "2"]
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, ORCHESTRATE, *FLAGS, *slow, "--project", str(project),
                                 "--address", ray_address], stdout=log, stderr=log)
        try:
            # Past the initial population, so that bred children are pending when the driver dies.
            wait_for(lambda: count_rows(run_dir) >= POP + 2 or proc.poll() is not None, 180, "six rows")
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = rows(run_dir)
    assert POP + 2 <= len(done) < POP * GENS
    # A kill between a row and the checkpoint after it leaves that child pending with a row: the resumed
    # run counts it as finished; the others are trained again.
    pending = {p[1] for p in load_checkpoint(run_dir)["pending"]}
    unfinished = pending - set(done["trial_id"])
    assert unfinished and len(pending - unfinished) <= 1
    resume = [sys.executable, ORCHESTRATE, "--resume", str(run_dir), "--address", ray_address]
    resumed = subprocess.run(resume, check=False, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    df = rows(run_dir)
    assert not df.duplicated(["trial_id"]).any() and not df.duplicated(["generation", "individual"]).any()
    assert sorted(df["trial_id"]) == ALL_IDS  # every bred child recorded exactly once: the whole budget
    assert df.iloc[: len(done)][ROW_KEY].equals(done[ROW_KEY])  # the rows before the kill are untouched
    keys = df[list(SearchSpace.load().keys)].itertuples(index=False, name=None)
    assert len(set(keys)) == POP * GENS
    state = load_checkpoint(run_dir)
    assert state["bred"] == POP * GENS and state["pending"] == []
    assert f"{len(unfinished)} bred trials to run again first" in resumed.stderr


def test_asha_stops_trials_which_rank_below_every_finished_one(ray_address, tmp_path):
    run_dir = run(config([*FLAGS, "--epochs", "4", "--early-stop", "asha", "--grace-epochs", "1",
                          "--reduction-factor", "2", "--surrogate-seconds", "0.2", "--max-concurrent", "2",
                          "--project", str(tmp_path), "--address", ray_address]))
    df = rows(run_dir)
    assert sorted(df["trial_id"]) == ALL_IDS
    assert set(df["status"]) == {"ok", "stopped"}, df["status"].value_counts()
    stopped = df[df["status"] == "stopped"]
    assert (stopped["fitness"] > 0).all()  # the fitness they reached is recorded, not 0
    state = load_checkpoint(run_dir)
    values = [m[2] for m in state["population"]]
    assert values == sorted(values, reverse=True)
    ok_fitness = dict(zip(df["trial_id"], df["fitness"]))
    statuses = dict(zip(df["trial_id"], df["status"]))
    for index, _, value, fit in state["population"]:
        tid = child_name(index, POP)[2]
        assert fit == ok_fitness[tid] and value == selection_value(Metrics(fitness=fit, status=statuses[tid]))
    best = yaml.safe_load((run_dir / "hyp_evolve.yaml").read_text())
    top = df[df["status"] == "ok"].sort_values("fitness", ascending=False).iloc[0]
    assert best == pytest.approx({k: top[k] for k in HYP_KEYS})


def test_a_finished_async_run_can_be_extended_by_generations(reference, tmp_path):
    run_dir = tmp_path / "exp"
    shutil.copytree(reference, run_dir)
    with pytest.raises(ConfigError, match=r"^--generations 2: the run in .* is already at generation 2"):
        prepare(config(["--resume", str(run_dir), "--generations", "2"]))
    evolution = SteadyEvolution(prepare(config(["--resume", str(run_dir), "--generations", "4"])), run_dir)
    evolution._start()
    assert (evolution.state.bred, evolution.state.budget, len(evolution.state.queue)) == (12, 16, 0)
    job = evolution.next_job()
    assert (job.trial_id, job.generation, job.individual) == ("g003i000", 3, 0)
    assert space_key(job.hyp) not in set(rows(run_dir)[list(SearchSpace.load().keys)].itertuples(
        index=False, name=None))
    assert load_checkpoint(run_dir)["bred"] == 13


def space_key(hyp: dict) -> tuple:
    space = SearchSpace.load()
    return space.genome_key(space.encode(hyp))


def test_a_damaged_async_checkpoint_is_refused_with_its_name(tmp_path):
    plan = prepare(config([*FLAGS, "--project", str(tmp_path)]))
    run_dir = tmp_path / "exp"
    run_dir.mkdir()
    SteadyEvolution(plan, run_dir)._start()
    state = load_checkpoint(run_dir)
    state["pending"] = [(0, "g000i000", [0.5, 0.5])]  # a genome of another search space
    save_checkpoint(run_dir, state)
    with pytest.raises(ConfigError, match=r"checkpoint\.pkl: async checkpoint lacks a valid bred count, "
                                          r"population or pending children"):
        prepare(config(["--resume", str(run_dir)]))
