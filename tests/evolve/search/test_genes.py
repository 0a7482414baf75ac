"""Tests for categorical, conditional and integer genes: the search-space file format, its errors, the
encoding (lr0 keeps its relative place when the optimizer changes) and how the GA breeds such genes."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import yaml

import hyps
from conftest import optimizer_meta
from evolve.config import GAConfig
from evolve.errors import ConfigError
from evolve.search.baselines import ga_search, yolov5_classic
from evolve.search.ga import GeneticAlgorithm
from evolve.search.keyset import ULTRALYTICS, YOLOV5
from evolve.search.space import SearchSpace
from orchestrate import main


def _space(tmp_path: Path) -> SearchSpace:
    return SearchSpace.load(optimizer_meta(tmp_path))


def test_default_space_keeps_the_optimizer_off_and_the_yolov5_key_set() -> None:
    space = SearchSpace.load()
    assert space.keyset is YOLOV5 and "optimizer" not in space.base and set(space.levels) == {0}
    lr0 = space.genes[space.keys.index("lr0")]
    assert (lr0.low, lr0.high, lr0.by, lr0.ranges) == (1e-5, 1e-1, "", ())  # optimizer frozen: own bounds


def test_optimizer_gene_joins_the_key_set_and_starts_from_the_first_choice(tmp_path: Path) -> None:
    space = _space(tmp_path)
    assert space.keyset.keys == (*YOLOV5.keys, "optimizer") and space.keys[-1] == "optimizer"
    assert space.base["optimizer"] == "AdamW" and space.levels[-1] == 3 and sum(space.levels) == 3
    assert space.decode(space.encode(space.base)) == space.base


def test_lr0_keeps_its_relative_place_when_the_optimizer_changes(tmp_path: Path) -> None:
    space = _space(tmp_path)
    genome = space.encode(space.base)
    i, j = space.keys.index("lr0"), space.keys.index("optimizer")
    genome[i] = 0.5
    picks = {}
    for level, name in enumerate(("AdamW", "Adam", "SGD")):
        genome[j] = (level + 0.5) / 3
        hyp = space.decode(genome)
        picks[name] = hyp["lr0"]
        assert hyp["optimizer"] == name
        assert space.encode(hyp)[i] == pytest.approx(0.5, abs=1e-4)
    assert picks["SGD"] == pytest.approx(1e-2, rel=1e-4)  # geometric middle of [1e-3, 1e-1]
    assert picks["AdamW"] == picks["Adam"] == pytest.approx(math.sqrt(1e-4 * 2e-2), rel=1e-4)
    rng = random.Random(0)
    for _ in range(200):
        hyp = space.decode(space.random_genome(rng))
        low, high = {"SGD": (1e-3, 1e-1)}.get(hyp["optimizer"], (1e-4, 2e-2))
        assert low <= hyp["lr0"] <= high


def test_type_int_gene_decodes_to_integers(tmp_path: Path) -> None:
    meta = yaml.safe_load(hyps.path(hyps.META).read_text())
    meta["warmup_epochs"].update(type="int", low=0, high=5)
    path = tmp_path / "meta.yaml"
    path.write_text(yaml.safe_dump(meta))
    space = SearchSpace.load(path)
    values = {space.decode(space.random_genome(random.Random(s)))["warmup_epochs"] for s in range(50)}
    assert values <= set(range(6)) and len(values) > 3 and all(isinstance(v, int) for v in values)


BAD = {
    "unknown choice": (lambda m: m["optimizer"].update(choices=["SGD", "Lion"]),
                       ["'optimizer'", "unknown choice 'Lion'"]),
    "range for an unlisted choice": (lambda m: m["optimizer"].update(choices=["SGD", "AdamW"]),
                                     ["'lr0'", "'Adam' is not a choice of 'optimizer'"]),
    "range missing for a choice": (lambda m: m["lr0"]["ranges"].pop("SGD"), ["'lr0'", "no range for 'SGD'"]),
    "by names a numeric key": (lambda m: m["lr0"].update(by="momentum"),
                               ["'lr0'", "'by: momentum' must name a categorical key"]),
    "empty choices": (lambda m: m["optimizer"].update(choices=[]), ["'optimizer'", "non-empty list"]),
    "int gene with fractional bounds": (lambda m: m["anchors"].update(low=2.5),
                                        ["'anchors'", "type int needs whole-number bounds"]),
    "choices on a numeric key": (lambda m: m["momentum"].update(choices=[0.9]),
                                 ["'momentum'", "unknown field 'choices'"]),
    "integer key typed float": (lambda m: m["anchors"].update(type="float"), ["'anchors'", "type must be int"]),
    "evolved choice without choices": (lambda m: m.update(optimizer={"evolve": True}),
                                       ["'optimizer'", "needs 'choices"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_space_file_is_one_line_exit_2_naming_file_and_key(case, tmp_path: Path, capsys) -> None:
    edit, words = BAD[case]
    meta = yaml.safe_load(optimizer_meta(tmp_path).read_text())
    edit(meta)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(meta))
    with pytest.raises(ConfigError) as err:
        SearchSpace.load(path)
    for word in [str(path), *words]:
        assert word in str(err.value), (word, str(err.value))
    with pytest.raises(SystemExit) as stop:
        main(["--trainer", "surrogate", "--meta", str(path), "--project", str(tmp_path / "runs")])
    message = capsys.readouterr().err
    assert stop.value.code == 2 and message.count("\n") == 1 and str(path) in message
    assert not (tmp_path / "runs").exists()


def test_base_choice_outside_the_space_names_the_hyp_file(tmp_path: Path) -> None:
    meta = yaml.safe_load(hyps.path(hyps.META_ULTRALYTICS).read_text())
    meta["optimizer"] = {"evolve": True, "choices": ["AdamW", "Adam"]}
    meta["lr0"]["ranges"].pop("SGD")
    path = tmp_path / "meta.yaml"
    path.write_text(yaml.safe_dump(meta))
    with pytest.raises(ConfigError, match=r"hyp\.ultralytics\.yaml: key 'optimizer': base value 'SGD'"):
        SearchSpace.load(path, hyps.path(hyps.HYP_ULTRALYTICS), ULTRALYTICS)
    meta["optimizer"]["choices"].append("SGD")
    meta["lr0"]["ranges"]["SGD"] = [1e-3, 1e-1]
    path.write_text(yaml.safe_dump(meta))
    space = SearchSpace.load(path, hyps.path(hyps.HYP_ULTRALYTICS), ULTRALYTICS)
    assert space.keys[-1] == "optimizer" and space.keyset is ULTRALYTICS and space.levels[-1] == 3


def _bowl(levels):
    # Numeric genes peak at 0.3; the categorical gene's best choice is its last one.
    def fit(genome):
        value = 1.0 - sum((g - 0.3) ** 2 for g, k in zip(genome, levels) if not k)
        return value + sum(0.2 * (int(g * k) == k - 1) for g, k in zip(genome, levels) if k)
    return fit


@pytest.mark.parametrize("crossover, mutation, screen", [("blend", "gaussian", 1), ("uniform", "polynomial", 3),
                                                         ("one_point", "gaussian", 1)])
def test_ga_keeps_choices_on_their_bins_and_finds_the_best_one(crossover, mutation, screen) -> None:
    levels = [0, 0, 3, 0, 2]
    fit = _bowl(levels)
    cfg = GAConfig(population=12, generations=8, crossover=crossover, mutation=mutation, screen=screen,
                   covariance=0.3, seed=1)
    ga = GeneticAlgorithm(cfg, len(levels), levels)
    centres = {2: {1 / 6, 0.5, 5 / 6}, 4: {0.25, 0.75}}
    pop = ga.initial_population([[0.5, 0.5, 0.4, 0.5, 0.1]])
    seen = {2: set(), 4: set()}
    for gen in range(1, cfg.generations):
        for genome in pop:
            for i, allowed in centres.items():
                assert genome[i] in allowed
                seen[i].add(genome[i])
        pop = ga.next_generation([(g, fit(g)) for g in pop], gen)
    assert seen == centres  # every choice was tried
    best = max(pop, key=fit)
    assert best[2] == 5 / 6 and best[4] == 0.75


def test_search_schemes_run_on_a_space_with_an_optimizer_gene(tmp_path: Path) -> None:
    space = _space(tmp_path)

    def objective(hyp):
        return {"AdamW": 0.3, "Adam": 0.2, "SGD": 0.1}[hyp["optimizer"]] + 0.01 * hyp["mosaic"]

    trials = ga_search(space, objective, 60, seed=0, cfg=GAConfig(population=10, generations=6, seed=0))
    assert {h["optimizer"] for h, _ in trials} == {"AdamW", "Adam", "SGD"}
    assert all(h["optimizer"] == "AdamW" for h, _ in yolov5_classic(space, objective, 5))
