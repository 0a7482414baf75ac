"""Tests for evolve.search.surrogate: determinism, the known optimum, landscapes, failures, curves and
durations."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from evolve.config import SurrogateOptions, TrialConfig
from evolve.contract import Metrics, fitness
from evolve.errors import ConfigError
from evolve.search.space import SearchSpace
from evolve.search.surrogate import (
    LANDSCAPES,
    landscape,
    noise_std,
    optimum,
    train,
    true_fitness,
)


def _cfg(epochs: int = 1, **options) -> TrialConfig:
    return TrialConfig(epochs=epochs, surrogate=options)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.load()


def test_deterministic_and_realistic(space: SearchSpace) -> None:
    hyp = dict(space.base, lr0=0.02, mosaic=0.7)
    a, b = train(hyp, _cfg(3)), train(dict(hyp), _cfg(3))
    assert (a.map50, a.map50_95, a.fitness, a.precision) == (b.map50, b.map50_95, b.fitness, b.precision)
    assert a.status == "ok" and a.epochs == 3
    assert 0.0 < a.map50_95 < a.map50 < 1.0 and a.map50_95 <= 0.6
    assert a.fitness == pytest.approx(fitness(a.map50, a.map50_95))
    base = train(space.base, _cfg())
    assert 0.35 < base.fitness < 0.55  # the YOLOv5 defaults are decent, not optimal
    # A run without surrogate options uses the smooth landscape, seed 0.
    assert train(space.base, TrialConfig(epochs=1)).fitness == base.fitness


@pytest.mark.parametrize("name", LANDSCAPES)
def test_optimum_inside_bounds_and_is_the_max(space: SearchSpace, name: str) -> None:
    best, value = optimum(name, space)
    genome = np.array(space.encode(best))
    assert 0.0 < genome.min() and genome.max() < 1.0  # not on a bound, so not a corner
    assert np.abs(genome - 0.5).max() > 0.1  # not the centre of the space
    assert best != space.base
    assert value == pytest.approx(true_fitness(best, name))
    assert 0.6 < value < 0.7
    rng = random.Random(1)
    samples = [space.decode(space.random_genome(rng)) for _ in range(300)]
    # Samples near the optimum are the real test of "is the max": random ones are far below anyway.
    for _ in range(200):
        g = np.clip(genome + np.array([rng.gauss(0, 0.03) for _ in genome]), 0, 1)
        samples.append(space.decode(g.tolist()))
    assert max(true_fitness(h, name) for h in samples) < value
    if name != "noisy":
        assert train(best, _cfg(landscape=name)).fitness == pytest.approx(value)


def test_seed_changes_the_landscape(space: SearchSpace) -> None:
    a, _ = optimum("smooth", space, seed=0)
    b, _ = optimum("smooth", space, seed=1)
    assert a != b
    assert true_fitness(space.base, "smooth", 0) != true_fitness(space.base, "smooth", 1)


def test_sensitivity_differs_between_keys(space: SearchSpace) -> None:
    best, value = optimum("smooth", space)
    genome = space.encode(best)

    def loss(key: str) -> float:
        g = list(genome)
        i = space.keys.index(key)
        g[i] = g[i] + 0.2 if g[i] < 0.5 else g[i] - 0.2
        return value - true_fitness(space.decode(g), "smooth")

    assert loss("lr0") > 0.1 and loss("momentum") > 0.1
    assert loss("mosaic") > 5 * loss("hsv_h") and loss("lr0") > 10 * loss("fliplr")
    assert 0.0 < loss("hsv_h") < 0.01


@pytest.mark.parametrize("name", ["smooth", "rotated"])
def test_keys_interact(space: SearchSpace, name: str) -> None:
    # Separable would mean the joint change costs exactly the sum of the single changes.
    inst = landscape(name, 0)
    i, j = space.keys.index("lr0"), space.keys.index("momentum")
    da, db = np.zeros(len(space)), np.zeros(len(space))
    da[i], db[j] = 0.1, 0.1
    t = inst.target
    joint = inst.deficit(t + da + db) - inst.deficit(t + da) - inst.deficit(t + db)
    assert abs(joint) > 1e-3
    if name == "rotated":
        k, m = space.keys.index("hsv_h"), space.keys.index("copy_paste")
        dc, dd = np.zeros(len(space)), np.zeros(len(space))
        dc[k], dd[m] = 0.1, 0.1
        assert abs(inst.deficit(t + dc + dd) - inst.deficit(t + dc) - inst.deficit(t + dd)) > 1e-5


def test_rugged_has_local_optima(space: SearchSpace) -> None:
    inst = landscape("rugged", 0)
    i = space.keys.index("lr0")
    xs = np.linspace(0.0, 1.0, 401)
    values = []
    for x in xs:
        u = inst.target.copy()
        u[i] = x
        values.append(-inst.deficit(u))
    values = np.array(values)
    peaks = [k for k in range(1, len(xs) - 1) if values[k] > values[k - 1] and values[k] > values[k + 1]]
    assert len(peaks) >= 3  # the global optimum and at least two local ones along this one key
    smooth = landscape("smooth", 0)
    assert not np.allclose(inst.target, smooth.target)


def test_noise_deterministic_per_hyp_and_seed(space: SearchSpace) -> None:
    rng = random.Random(3)
    hyps = [space.decode([min(1, max(0, g + rng.gauss(0, 0.05))) for g in space.encode(space.base)])
            for _ in range(300)]
    diffs = [train(h, _cfg(landscape="noisy")).fitness - true_fitness(h, "noisy") for h in hyps]
    assert 0.012 < float(np.std(diffs)) < 0.03
    again = train(hyps[0], _cfg(landscape="noisy")).fitness
    assert again == train(hyps[0], _cfg(landscape="noisy")).fitness
    other_seed = [train(h, _cfg(landscape="noisy", seed=5)).fitness - true_fitness(h, "noisy", 5)
                  for h in hyps[:20]]
    assert other_seed != diffs[:20]
    quiet = [train(h, _cfg(landscape="noisy", noise=0.005)).fitness - true_fitness(h, "noisy") for h in hyps]
    assert float(np.std(quiet)) < 0.008


def test_failure_rate_and_determinism(space: SearchSpace) -> None:
    rng = random.Random(0)
    hyps = [space.decode(space.random_genome(rng)) for _ in range(500)]
    failed = []
    for h in hyps:
        try:
            train(h, _cfg(failure_rate=0.2))
        except RuntimeError as exc:
            assert "injected failure" in str(exc)
            failed.append(h)
    assert 70 <= len(failed) <= 130
    with pytest.raises(RuntimeError):
        train(failed[0], _cfg(failure_rate=0.2))
    assert train(failed[0], _cfg(failure_rate=0.0)).status == "ok"


def test_learning_curve_and_reports(space: SearchSpace) -> None:
    seen: list[tuple[int, Metrics]] = []
    result = train(space.base, _cfg(10), report=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == list(range(1, 11))
    assert [m.epochs for _, m in seen] == list(range(1, 11))
    curve = [m.fitness for _, m in seen]
    assert all(b >= a for a, b in itertools.pairwise(curve))
    assert curve[0] < 0.8 * curve[-1]
    assert seen[-1][1].fitness == result.fitness == train(space.base, _cfg(1)).fitness
    assert seen[0][1].box_loss > seen[-1][1].box_loss


def test_learning_speed_depends_on_hyp(space: SearchSpace) -> None:
    # A low learning rate learns slower: its early-epoch fraction of the final value is smaller.
    def early_fraction(hyp) -> float:
        seen = []
        final = train(hyp, _cfg(10), report=lambda e, m: seen.append(m.fitness))
        return seen[1] / final.fitness

    assert early_fraction(dict(space.base, lr0=0.0005)) < early_fraction(dict(space.base, lr0=0.02))


def test_simulated_duration(space: SearchSpace) -> None:
    rng = random.Random(0)
    times = []
    for _ in range(4):
        hyp = space.decode(space.random_genome(rng))
        times.append(train(hyp, _cfg(2, seconds=0.06, seconds_spread=0.5)).seconds)
    assert all(0.025 <= t <= 0.2 for t in times)
    assert max(times) - min(times) > 0.005


@pytest.mark.parametrize(
    "options, words",
    [
        ({"landscape": "bumpy"}, "--surrogate-landscape must be one of"),
        ({"nosie": 0.1}, "unknown option 'nosie'"),
        ({"noise": -1}, "--surrogate-noise must be >= 0"),
        ({"seconds_spread": 2}, "--surrogate-spread must be <= 1"),
        ({"failure_rate": 1.5}, "--surrogate-failure-rate must be <= 1"),
        ({"seed": 1.5}, "'seed' must be an integer"),
    ],
)
def test_bad_options(space: SearchSpace, options, words) -> None:
    with pytest.raises(ConfigError, match=words):
        train(space.base, TrialConfig.from_any({"epochs": 1, "surrogate": options}))


def test_config_from_any() -> None:
    assert SurrogateOptions.from_any(None) == SurrogateOptions()
    cfg = SurrogateOptions(landscape="rugged")
    assert SurrogateOptions.from_any(cfg) is cfg
    assert SurrogateOptions.from_any({"noise": 0.1}).noise == 0.1
    assert noise_std(SurrogateOptions(landscape="noisy")) == 0.02
    assert noise_std(SurrogateOptions(landscape="smooth", noise=0.1)) == 0.0
    with pytest.raises(ConfigError, match="must be a mapping"):
        SurrogateOptions.from_any([1, 2])
