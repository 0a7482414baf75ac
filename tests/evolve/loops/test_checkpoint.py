"""Tests of evolve/loops/checkpoint.py: a checkpoint is resumed only in the folder of the run that wrote it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evolve.config import config_from_argv
from evolve.contract import Metrics
from evolve.errors import ConfigError
from evolve.execution.jobs import TrialJob
from evolve.loops.checkpoint import RUN_NAME, read_identity
from evolve.loops.generational import GenerationalEvolution
from evolve.loops.plan import prepare
from evolve.output.rundir import load_checkpoint


def config(argv: list[str]):
    return config_from_argv(argv)


def evolution(project: Path, name: str, trials: int, fitness: float = 0.1) -> GenerationalEvolution:
    """A generational run in ``project/name`` (same settings each time) with ``trials`` trials of generation
    0 recorded after its checkpoint, as a driver killed in the middle of generation 0 leaves it."""
    plan = prepare(config(["--trainer", "surrogate", "--population", "4", "--generations", "2", "--seed", "1",
                           "--project", str(project)]))
    run_dir = project / name
    run_dir.mkdir(parents=True)
    ev = GenerationalEvolution(plan, run_dir)
    ev._first = ev._start()
    jobs = ev._advance()  # generation 0 bred and checkpointed
    for i, job in enumerate(jobs[:trials]):
        ev._record(job, Metrics(fitness=fitness * (i + 1), map50=0.5, map50_95=0.1), 1.0)
    return ev


def test_a_run_resumes_from_its_own_checkpoint_after_more_rows(tmp_path):
    ev = evolution(tmp_path, "a", 2)
    ev._save_checkpoint()  # the checkpoint has seen 2 rows ...
    job = TrialJob("g000i002", 0, 2, ev.space.decode(ev.population[2]))
    ev._record(job, Metrics(fitness=0.3), 1.0)  # ... and one more row followed it
    state = load_checkpoint(ev.run_dir)
    assert state["records"]["rows"] == 2 and state["run"]["id"] == read_identity(ev.run_dir).id
    plan = prepare(config(["--resume", str(ev.run_dir)]))
    assert plan.checkpoint["run"]["id"] == ev.identity.id
    # The whole folder moved elsewhere is still the same run.
    moved = tmp_path / "moved"
    shutil.copytree(ev.run_dir, moved)
    assert prepare(config(["--resume", str(moved)])).run_dir == moved


def test_a_checkpoint_copied_from_another_run_is_refused_naming_both(tmp_path):
    a, b = evolution(tmp_path, "a", 1), evolution(tmp_path, "b", 3)
    assert a.identity.id != b.identity.id
    before = (b.run_dir / "evolve.csv").read_bytes()
    shutil.copy(a.run_dir / "checkpoint.pkl", b.run_dir / "checkpoint.pkl")
    with pytest.raises(ConfigError) as err:
        prepare(config(["--resume", str(b.run_dir)]))
    message = str(err.value)
    assert message.startswith(f"{b.run_dir / 'checkpoint.pkl'}: checkpoint of run {a.identity.id} (started ")
    assert f"in {a.run_dir})" in message and f"this folder holds run {b.identity.id}" in message
    assert "\n" not in message and (b.run_dir / "evolve.csv").read_bytes() == before


def test_without_the_folder_identity_the_records_decide(tmp_path):
    # A folder of a run from before identities (or whose .run was lost): its rows are not the checkpoint's.
    a, b = evolution(tmp_path, "a", 2), evolution(tmp_path, "b", 2, fitness=0.2)
    a._save_checkpoint()
    b._record(TrialJob("g000i002", 0, 2, b.space.decode(b.population[2])), Metrics(fitness=0.7), 1.0)
    (b.run_dir / RUN_NAME).unlink()
    shutil.copy(a.run_dir / "checkpoint.pkl", b.run_dir / "checkpoint.pkl")
    with pytest.raises(ConfigError, match=rf"checkpoint of run {a.identity.id} .*whose first 2 trials are not "
                                          rf"those in {b.run_dir / 'evolve.csv'}"):
        prepare(config(["--resume", str(b.run_dir)]))
    # Its own rows fewer than the checkpoint saw: refused as well.
    (a.run_dir / "evolve.csv").write_text((a.run_dir / "evolve.csv").read_text().split("\n", 1)[0] + "\n")
    with pytest.raises(ConfigError, match="whose first 2 trials are not those in"):
        prepare(config(["--resume", str(a.run_dir)]))


def test_the_identity_file_is_one_json_line(tmp_path):
    ev = evolution(tmp_path, "a", 0)
    data = json.loads((ev.run_dir / RUN_NAME).read_text())
    assert set(data) == {"id", "started", "folder"} and data["folder"] == str(ev.run_dir.absolute())
    assert len(data["id"]) == 12
