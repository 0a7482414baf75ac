"""The search space of an evolution: which hyps evolve, their bounds, and the normalised genome encoding.

A genome is a list of floats in [0, 1], one per evolved key, in the key set's order. Position 0 is the
key's ``low`` bound and 1 its ``high``; with ``scale: log`` the position is logarithmic, so a step of
0.1 is the same relative change whether ``lr0`` is 1e-4 or 1e-2. Decoding always yields a complete hyp
dict: evolved keys from the genome, frozen keys from the base hyp file.
"""
from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import hyps
from evolve.errors import ConfigError
from evolve.search.keyset import YOLOV5, KeySet

SCALES = ("linear", "log")
REQUIRED_FIELDS = ("evolve", "low", "high")
KNOWN_FIELDS = frozenset({"evolve", "low", "high", "scale"})
SIGNIFICANT_DIGITS = 5


def round_sig(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """Round to ``digits`` significant digits so YAML and CSV stay readable and cache keys are stable."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.{digits}g}")


@dataclass(frozen=True)
class Gene:
    """One evolved hyperparameter: its bounds, whether it moves on a log scale, whether it is integer."""

    key: str
    low: float
    high: float
    log: bool
    integer: bool

    def encode(self, value: float) -> float:
        """Position of ``value`` in [0, 1] between the bounds (values outside are clipped)."""
        if self.log:
            if value <= self.low:
                return 0.0
            pos = (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        else:
            pos = (value - self.low) / (self.high - self.low)
        return min(1.0, max(0.0, pos))

    def decode(self, pos: float) -> float:
        """Value at position ``pos`` (clipped to [0, 1]), rounded for readability, never outside bounds."""
        pos = min(1.0, max(0.0, float(pos)))
        if self.log:
            value = math.exp(math.log(self.low) + pos * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + pos * (self.high - self.low)
        return self.tidy(value)

    def tidy(self, value: float) -> float:
        """Clip to the bounds and round: integers for integer keys, else 5 significant digits, and on a
        linear scale no finer than 1e-5 of the range (so 4e-8 of a 0..45 range reads as 0)."""
        value = min(self.high, max(self.low, float(value)))
        if self.integer:
            return int(min(math.floor(self.high), max(math.ceil(self.low), round(value))))
        if not self.log:
            value = round(value, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(self.high - self.low)))
        return min(self.high, max(self.low, round_sig(value)))


def _number(meta_path: Path, key: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{meta_path}: key '{key}': '{field}' must be a finite number, got {value!r}")
    return float(value)


def _parse_entry(meta_path: Path, key: str, entry: Any, integer: bool) -> tuple[bool, Gene]:
    """Validate one meta entry and return (evolve, gene) with the gene's bounds and scale."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{meta_path}: key '{key}': expected a mapping with evolve/low/high/scale, "
                          f"got {entry!r}")
    unknown = sorted(set(entry) - KNOWN_FIELDS)
    if unknown:
        raise ConfigError(f"{meta_path}: key '{key}': unknown field '{unknown[0]}' "
                          f"(known: {', '.join(sorted(KNOWN_FIELDS))})")
    missing = [f for f in REQUIRED_FIELDS if f not in entry]
    if missing:
        raise ConfigError(f"{meta_path}: key '{key}': missing field '{missing[0]}'")
    evolve = entry["evolve"]
    if not isinstance(evolve, bool):
        raise ConfigError(f"{meta_path}: key '{key}': 'evolve' must be true or false, got {evolve!r}")
    low = _number(meta_path, key, "low", entry["low"])
    high = _number(meta_path, key, "high", entry["high"])
    if low >= high:
        raise ConfigError(f"{meta_path}: key '{key}': low ({low:g}) must be below high ({high:g})")
    scale = entry.get("scale", "linear")
    if scale not in SCALES:
        raise ConfigError(f"{meta_path}: key '{key}': scale must be one of {', '.join(SCALES)}, "
                          f"got {scale!r}")
    if scale == "log" and low <= 0:
        raise ConfigError(f"{meta_path}: key '{key}': scale log needs low > 0, got {low:g}")
    return evolve, Gene(key, low, high, scale == "log", integer)


def load_meta(meta_path: Path, keyset: KeySet = YOLOV5) -> dict[str, tuple[bool, Gene | None]]:
    """Read and validate a meta YAML: every key of ``keyset`` present exactly once, nothing unknown."""
    if not meta_path.is_file():
        raise ConfigError(f"{meta_path}: search-space file not found")
    try:
        data = yaml.safe_load(meta_path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{meta_path}: not valid YAML: {exc}".splitlines()[0]) from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{meta_path}: expected a mapping of hyperparameter keys, "
                          f"got {type(data).__name__}")
    unknown = [k for k in data if k not in keyset.keys]
    if unknown:
        raise ConfigError(f"{meta_path}: unknown hyperparameter key '{unknown[0]}'")
    missing = [k for k in keyset.keys if k not in data]
    if missing:
        raise ConfigError(f"{meta_path}: missing hyperparameter key '{missing[0]}'")
    out: dict[str, tuple[bool, Gene | None]] = {}
    for key in keyset.keys:
        names = keyset.choices_of(key)
        out[key] = (_parse_choice(meta_path, key, data[key], names) if names is not None
                    else _parse_entry(meta_path, key, data[key], key in keyset.integer))
    return out


def _parse_choice(meta_path: Path, key: str, entry: Any, names: Sequence[str]) -> tuple[bool, None]:
    """A categorical key (one of ``names``) is never evolved: its entry is ``{evolve: false}``."""
    if not isinstance(entry, Mapping) or entry.get("evolve") is not False or set(entry) - {"evolve"}:
        raise ConfigError(f"{meta_path}: key '{key}' names a choice ({', '.join(names)}), not a number: its "
                          f"entry must be {{evolve: false}} and its value comes from the hyp file, got {entry!r}")
    return False, None


class SearchSpace:
    """The evolved genes (``genes``, ``keys``) and the base hyp that supplies every frozen key."""

    def __init__(self, base: Mapping[str, float], genes: Sequence[Gene], keyset: KeySet = YOLOV5) -> None:
        self.keyset = keyset
        self.base: dict[str, float] = dict(base)
        self.genes: list[Gene] = list(genes)
        self.keys: list[str] = [g.key for g in self.genes]

    @classmethod
    def load(cls, meta_path: str | Path | None = None, hyp_path: str | Path | None = None,
             keyset: KeySet = YOLOV5) -> SearchSpace:
        """Load a meta YAML and a base hyp of ``keyset`` and validate both (defaults: the files shipped
        in the ``hyps`` package, which hold the YOLOv5 key set)."""
        meta_path = Path(meta_path) if meta_path is not None else hyps.path(hyps.META)
        hyp_path = Path(hyp_path) if hyp_path is not None else hyps.path(hyps.HYP_SCRATCH_LOW)
        meta = load_meta(meta_path, keyset)
        base = keyset.load(hyp_path)
        genes = []
        for key in keyset.keys:
            evolve, gene = meta[key]
            if not evolve or gene is None:
                continue
            # A base outside the bounds would be clipped on encoding, so the seed would not be the base.
            if not gene.low <= base[key] <= gene.high:
                raise ConfigError(f"{hyp_path}: key '{key}': base value {base[key]:g} is outside the bounds "
                                  f"[{gene.low:g}, {gene.high:g}] of {meta_path}")
            genes.append(gene)
        if not genes:
            raise ConfigError(f"{meta_path}: no key has 'evolve: true', nothing to evolve")
        return cls(base, genes, keyset)

    def __len__(self) -> int:
        return len(self.genes)

    def encode(self, hyp: Mapping[str, float]) -> list[float]:
        """Genome of ``hyp`` (missing evolved keys take the base value); positions clipped to [0, 1]."""
        return [g.encode(float(hyp.get(g.key, self.base[g.key]))) for g in self.genes]

    def decode(self, genome: Sequence[float]) -> dict[str, float]:
        """A complete hyp dict: evolved keys from ``genome``, the others from the base hyp."""
        if len(genome) != len(self.genes):
            raise ValueError(f"genome has {len(genome)} genes, the search space has {len(self.genes)}")
        hyp = dict(self.base)
        for gene, pos in zip(self.genes, genome):
            hyp[gene.key] = gene.decode(pos)
        return hyp

    def random_genome(self, rng: random.Random) -> list[float]:
        """A genome drawn uniformly over the normalised space."""
        return [rng.random() for _ in self.genes]

    def genome_key(self, genome: Sequence[float]) -> tuple:
        """The decoded, rounded evolved values: two genomes with the same key train the same hyps."""
        hyp = self.decode(genome)
        return tuple(hyp[k] for k in self.keys)
