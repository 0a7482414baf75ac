"""Tests for evolve.space: meta validation errors, the normalised encoding, decoding and cache keys."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import yaml

import hyps
from detector.hyp import DEFAULT_HYP, HYP_KEYS
from evolve.errors import ConfigError
from evolve.search.space import Gene, SearchSpace, round_sig


def _meta() -> dict:
    return yaml.safe_load(hyps.path(hyps.META).read_text())


def _write(tmp_path: Path, data, name: str = "meta.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_default_space_genes_in_key_order() -> None:
    space = SearchSpace.load()
    meta = _meta()
    assert space.keys == [k for k in HYP_KEYS if meta[k]["evolve"]]
    assert len(space) == 25
    assert "iou_t" not in space.keys and "anchors" not in space.keys
    lr0 = space.genes[space.keys.index("lr0")]
    assert lr0 == Gene("lr0", 1e-5, 1e-1, True, False)
    assert space.base == DEFAULT_HYP


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda m: m.update(bogus={"evolve": True, "low": 0, "high": 1}),
         ["unknown hyperparameter", "'bogus'"]),
        (lambda m: m.pop("mixup"), ["missing hyperparameter", "'mixup'"]),
        (lambda m: m["lr0"].update(low=0.2), ["'lr0'", "low", "below high"]),
        (lambda m: m["momentum"].update(low=0.95, high=0.95), ["'momentum'", "below high"]),
        (lambda m: m["box"].update(low=0.0), ["'box'", "log needs low > 0"]),
        (lambda m: m["degrees"].update(scale="cubic"), ["'degrees'", "scale must be one of"]),
        (lambda m: m["shear"].update(high="ten"), ["'shear'", "'high' must be a finite number"]),
        (lambda m: m["hsv_h"].update(evolve="yes"), ["'hsv_h'", "'evolve' must be true or false"]),
        (lambda m: m["hsv_v"].pop("low"), ["'hsv_v'", "missing field 'low'"]),
        (lambda m: m["hsv_s"].update(gain=1.0), ["'hsv_s'", "unknown field 'gain'"]),
        (lambda m: m.update(fliplr=0.5), ["'fliplr'", "expected a mapping"]),
        (lambda m: m["scale"].update(high=0.4),
         ["'scale'", "base value 0.5 is outside", "hyp.scratch-low.yaml"]),
    ],
)
def test_meta_errors_name_file_and_key(tmp_path: Path, edit, words) -> None:
    meta = _meta()
    edit(meta)
    path = _write(tmp_path, meta)
    with pytest.raises(ConfigError) as info:
        SearchSpace.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert "meta.yaml" in message or "hyp.scratch-low.yaml" in message
    for word in words:
        assert word in message


def test_meta_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: search-space file not found"):
        SearchSpace.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        SearchSpace.load(_write(tmp_path, "lr0: {evolve: [\n", "bad.yaml"))
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        SearchSpace.load(_write(tmp_path, "- lr0\n", "list.yaml"))
    frozen = {k: {**v, "evolve": False} for k, v in _meta().items()}
    with pytest.raises(ConfigError, match="frozen.yaml: no key has 'evolve: true'"):
        SearchSpace.load(_write(tmp_path, frozen, "frozen.yaml"))


def test_hyp_errors_become_config_errors(tmp_path: Path) -> None:
    hyp = dict(DEFAULT_HYP, lr00=0.01)
    path = _write(tmp_path, hyp, "myhyp.yaml")
    with pytest.raises(ConfigError, match="myhyp.yaml: unknown hyperparameter key 'lr00'"):
        SearchSpace.load(hyp_path=path)
    with pytest.raises(ConfigError, match="missing.yaml: hyp file not found"):
        SearchSpace.load(hyp_path=tmp_path / "missing.yaml")


def test_frozen_key_outside_bounds_is_fine(tmp_path: Path) -> None:
    # Bounds of a frozen key are never used, so a base outside them must not block the run.
    hyp = dict(DEFAULT_HYP, iou_t=0.05)
    space = SearchSpace.load(hyp_path=_write(tmp_path, hyp, "hyp.yaml"))
    assert space.decode(space.encode(space.base))["iou_t"] == 0.05


def test_encode_decode_round_trip_base() -> None:
    space = SearchSpace.load()
    genome = space.encode(space.base)
    assert all(0.0 <= g <= 1.0 for g in genome)
    assert space.decode(genome) == space.base
    pos = dict(zip(space.keys, genome))
    assert pos["lr0"] == pytest.approx(0.75)  # 1e-2 is 3/4 of the way from 1e-5 to 1e-1 in log
    assert pos["momentum"] == pytest.approx((0.937 - 0.6) / 0.38)
    assert pos["degrees"] == 0.0 and pos["mosaic"] == 1.0


def test_log_scale_is_geometric() -> None:
    space = SearchSpace.load()
    genome = space.encode(space.base)
    i = space.keys.index("lr0")
    genome[i] = 0.5
    assert space.decode(genome)["lr0"] == pytest.approx(1e-3)
    genome[i] = 0.25
    assert space.decode(genome)["lr0"] == pytest.approx(1e-4)


def test_round_trip_random_genomes_and_bounds() -> None:
    space = SearchSpace.load()
    rng = random.Random(0)
    for _ in range(200):
        genome = space.random_genome(rng)
        hyp = space.decode(genome)
        for gene in space.genes:
            assert gene.low <= hyp[gene.key] <= gene.high
        again = space.encode(hyp)
        # Only the 5-significant-digit rounding separates the genome from its re-encoding.
        assert max(abs(a - b) for a, b in zip(genome, again)) < 1e-3
        assert space.decode(again) == hyp


def test_out_of_range_genes_and_values_are_clipped() -> None:
    space = SearchSpace.load()
    low = space.decode([-0.5] * len(space))
    high = space.decode([1.7] * len(space))
    for gene in space.genes:
        assert low[gene.key] == gene.low and high[gene.key] == gene.high
    genome = space.encode({**space.base, "lr0": 5.0, "degrees": -3.0})
    assert genome[space.keys.index("lr0")] == 1.0 and genome[space.keys.index("degrees")] == 0.0
    with pytest.raises(ValueError, match="24 genes"):
        space.decode([0.5] * 24)


def test_integer_keys_stay_integers(tmp_path: Path) -> None:
    meta = _meta()
    meta["anchors"]["evolve"] = True
    space = SearchSpace.load(_write(tmp_path, meta))
    i = space.keys.index("anchors")
    assert space.genes[i].integer
    seen = set()
    for pos in (0.0, 0.1, 0.33, 0.5, 0.77, 1.0):
        genome = space.encode(space.base)
        genome[i] = pos
        value = space.decode(genome)["anchors"]
        assert isinstance(value, int) and 2 <= value <= 10
        seen.add(value)
        assert space.decode(space.encode(space.decode(genome)))["anchors"] == value
    assert min(seen) == 2 and max(seen) == 10
    assert space.decode(space.encode(space.base))["anchors"] == 3


def test_rounding_and_genome_key() -> None:
    assert round_sig(0.123456789) == 0.12346
    assert round_sig(12345.678) == 12346.0
    assert round_sig(0.0) == 0.0
    space = SearchSpace.load()
    genome = space.encode(space.base)
    nudged = [g + 1e-9 for g in genome]
    assert space.genome_key(nudged) == space.genome_key(genome)  # below the rounding: same trial
    moved = list(genome)
    moved[space.keys.index("degrees")] = 0.1
    assert space.genome_key(moved) != space.genome_key(genome)
    assert len(space.genome_key(genome)) == len(space)


def test_zero_valued_gene_can_move() -> None:
    space = SearchSpace.load()
    genome = space.encode(space.base)
    i = space.keys.index("mixup")
    assert genome[i] == 0.0
    genome[i] += 0.05
    assert space.decode(genome)["mixup"] == pytest.approx(0.05)
    assert math.isclose(space.encode(space.decode(genome))[i], 0.05)
