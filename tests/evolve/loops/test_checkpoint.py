"""Tests of evolve/loops/checkpoint.py: a checkpoint is resumed only in the folder of the run that wrote it,
and one written before its key set gained a key is upgraded."""
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


def test_a_checkpoint_from_before_the_key_set_gained_a_key_resumes_at_its_default(tmp_path, tiny_data):
    # An Ultralytics run of the version whose key set had no cls_pw: its records and checkpoint as that
    # version wrote them (the same code, with the key set it had).
    pytest.importorskip("ultralytics")
    from dataclasses import replace

    from evolve.loops.checkpoint import checkpoint_state, fingerprint, records_mark, upgraded
    from evolve.output.records import RunRecords, TrialRecord
    from evolve.output.rundir import save_checkpoint
    from evolve.search.space import SearchSpace

    argv = ["--trainer", "ultralytics", "--model", "yolov8n.yaml", "--imgsz", "64", "--epochs", "1",
            "--data", str(tiny_data), "--population", "2", "--generations", "2", "--project", str(tmp_path)]
    plan = prepare(config(argv))
    keyset = plan.space.keyset
    old_keys = replace(keyset, defaults=tuple(d for d in keyset.defaults if d[0] != "cls_pw"))
    old = SearchSpace({k: v for k, v in plan.space.base.items() if k != "cls_pw"},
                      [g for g in plan.space.genes if g.key != "cls_pw"], old_keys)
    genomes = [old.encode(old.base), old.encode({**old.base, "lr0": 0.02, "cls": 1.0})]
    run_dir = tmp_path / "old"
    records = RunRecords(run_dir, old_keys)
    for i, genome in enumerate(genomes):
        records.append(TrialRecord(0, i, f"g000i00{i}", old.decode(genome),
                                   Metrics(map50=0.5, map50_95=0.1 * (i + 1)).with_fitness()))
    state = checkpoint_state(plan.cfg, fingerprint(plan.cfg, old), generation=0, population=genomes,
                             ga_state={"random": None, "archive": [(tuple(g), 0.1) for g in genomes]},
                             records=records_mark(run_dir / "evolve.csv", 2))
    save_checkpoint(run_dir, state)
    # The same run saved also before --epochs was a prefix run's target length: both upgrades apply.
    from evolve.config.run import TARGET_MARK, EvolveConfig
    from evolve.loops.checkpoint import _digest

    both = tmp_path / "both"
    shutil.copytree(run_dir, both)
    legacy = {k: v for k, v in state["config"].items() if k != TARGET_MARK}
    settings = EvolveConfig.from_dict(legacy, upgrade=False).result_settings()
    settings.pop(TARGET_MARK)
    save_checkpoint(both, {**state, "config": legacy, "fingerprint": _digest(settings, old)})
    # Its search space edited since (here the base lr0): refused as any edited run is.
    edited = tmp_path / "edited"
    shutil.copytree(run_dir, edited)
    save_checkpoint(edited, {**state, "fingerprint": fingerprint(
        plan.cfg, SearchSpace({**old.base, "lr0": 0.02}, old.genes, old_keys))})
    with pytest.raises(ConfigError, match="checkpoint population does not fit the search space"):
        prepare(config(["--resume", str(edited)]))

    # An async run's members (index, genome, selection value, fitness) and pending children gain it too.
    members = [(i, g, 0.5, 0.1) for i, g in enumerate(genomes)]
    async_state = upgraded({**state, "mode": "async", "population": members, "reserve": members[:1],
                            "pending": [(2, "g001i000", genomes[1])]}, run_dir, plan.cfg, plan.space,
                           plan.fingerprint)
    at = plan.space.keys.index("cls_pw")
    grown = [g[:at] + [0.0] + g[at:] for g in genomes]
    assert [m[1] for m in async_state["population"]] == grown and async_state["reserve"][0][1] == grown[0]
    assert async_state["pending"] == [(2, "g001i000", grown[1])]
    assert async_state["population"][1][2:] == (0.5, 0.1)

    twice = prepare(config(["--resume", str(both)]))
    assert twice.checkpoint["population"] == grown and twice.checkpoint["fingerprint"] == twice.fingerprint
    resumed = prepare(config(["--resume", str(run_dir)]))
    population = resumed.checkpoint["population"]
    assert [len(g) for g in population] == [len(resumed.space)] * 2 == [len(old) + 1] * 2
    assert population == grown  # the new gene at the default the trials trained with
    assert [len(k) for k, _ in resumed.checkpoint["ga_state"]["archive"]] == [len(resumed.space)] * 2
    assert resumed.checkpoint["fingerprint"] == resumed.fingerprint
    ev = GenerationalEvolution(resumed, run_dir)  # reads the old evolve.csv: its trials map onto the genomes
    generation, population = ev._start()
    assert generation == 0 and all(ev.space.genome_key(g) in ev.cache for g in population)


def test_a_prefix_run_saved_before_epochs_was_its_target_resumes_with_its_trial_length(tmp_path):
    from evolve.config.run import TARGET_MARK, EvolveConfig
    from evolve.loops.checkpoint import _digest
    from evolve.output.rundir import save_checkpoint

    plan = prepare(config(["--trainer", "surrogate", "--population", "4", "--generations", "2", "--seed", "1",
                           "--epochs", "6", "--project", str(tmp_path)]))
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    ev = GenerationalEvolution(plan, run_dir)
    ev._first = ev._start()
    ev._advance()
    state = load_checkpoint(run_dir)
    # As an earlier version saved it: --epochs 2, trials of the validation length (3 x 2), no mark.
    legacy = dict(state["config"], train={**state["config"]["train"], "epochs": 2})
    del legacy[TARGET_MARK]
    settings = EvolveConfig.from_dict(legacy, upgrade=False).result_settings()
    settings.pop(TARGET_MARK)
    save_checkpoint(run_dir, {**state, "config": legacy, "fingerprint": _digest(settings, plan.space)})
    again = prepare(config(["--resume", str(run_dir)]))
    assert (again.cfg.train.epochs, again.fingerprint) == (6, plan.fingerprint)
    save_checkpoint(run_dir, {**state, "config": legacy, "fingerprint": "0" * 16})  # settings changed since
    with pytest.raises(ConfigError, match="settings changed since the run started"):
        prepare(config(["--resume", str(run_dir)]))
