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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

import hyps
from evolve.errors import ConfigError
from evolve.search.keyset import YOLOV5, KeySet

SCALES = ("linear", "log")
TYPES = ("float", "int")
REQUIRED_FIELDS = ("evolve", "low", "high")
KNOWN_FIELDS = frozenset({"evolve", "low", "high", "scale", "type", "by", "ranges"})
SIGNIFICANT_DIGITS = 5


def round_sig(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """Round to ``digits`` significant digits so YAML and CSV stay readable and cache keys are stable."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.{digits}g}")


@dataclass(frozen=True)
class Gene:
    """One evolved hyperparameter: its bounds, whether it moves on a log scale, whether it is integer.

    A categorical gene (``choices``) holds one of a few names: its position in [0, 1] is cut into as
    many equal bins, choice i sitting at the centre of bin i. A conditional gene (``by``) takes its bounds
    from ``ranges``, one (choice, low, high) per choice of the categorical gene ``by``: its position is
    relative to the range of the current choice (``within``), so lr0 at 0.5 of SGD's range becomes 0.5
    of AdamW's when the optimizer gene changes; ``low``/``high`` then only bound the union.
    """

    key: str
    low: float
    high: float
    log: bool
    integer: bool
    choices: tuple[str, ...] = ()
    by: str = ""
    ranges: tuple[tuple[str, float, float], ...] = ()

    @property
    def levels(self) -> int:
        """Number of choices of a categorical gene, 0 for a numeric one."""
        return len(self.choices)

    def within(self, choice: Any) -> Gene:
        """The plain gene of a conditional one for the ``by`` gene's ``choice`` (itself if unconditional)."""
        if not self.by:
            return self
        # A choice without a range (a seed's optimizer the space does not list) takes the first range.
        low, high = next(((lo, hi) for name, lo, hi in self.ranges if name == choice), self.ranges[0][1:])
        return replace(self, low=low, high=high, by="", ranges=())

    def encode(self, value: Any) -> float:
        """Position of ``value`` in [0, 1] between the bounds (values outside are clipped)."""
        if self.choices:  # a choice the gene does not list (a seed's) starts from the first one
            index = self.choices.index(value) if value in self.choices else 0
            return (index + 0.5) / len(self.choices)
        if self.log:
            if value <= self.low:
                return 0.0
            pos = (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        else:
            pos = (value - self.low) / (self.high - self.low)
        return min(1.0, max(0.0, pos))

    def decode(self, pos: float) -> Any:
        """Value at position ``pos`` (clipped to [0, 1]), rounded for readability, never outside bounds."""
        pos = min(1.0, max(0.0, float(pos)))
        if self.choices:
            return self.choices[min(len(self.choices) - 1, int(pos * len(self.choices)))]
        if self.log:
            value = math.exp(math.log(self.low) + pos * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + pos * (self.high - self.low)
        return self.tidy(value)

    def tidy(self, value: Any) -> Any:
        """Clip to the bounds and round: integers for integer keys, else 5 significant digits, and on a
        linear scale no finer than 1e-5 of the range (so 4e-8 of a 0..45 range reads as 0); a choice is
        kept as it is."""
        if self.choices:
            return value if value in self.choices else self.choices[0]
        value = min(self.high, max(self.low, float(value)))
        if self.integer:
            return int(min(math.floor(self.high), max(math.ceil(self.low), round(value))))
        if not self.log:
            value = round(value, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(self.high - self.low)))
        return min(self.high, max(self.low, round_sig(value)))

    def record(self) -> dict[str, Any]:
        """The gene as plain data for the run's fingerprint; a numeric gene reads as it did before
        categorical and conditional genes existed, so a run started then still resumes."""
        data = asdict(self)
        for name in ("choices", "by", "ranges"):
            if not data[name]:
                data.pop(name)
        return data


def _error(meta_path: Path, key: str, text: str) -> ConfigError:
    return ConfigError(f"{meta_path}: key '{key}': {text}")


def _number(meta_path: Path, key: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _error(meta_path, key, f"'{field}' must be a finite number, got {value!r}")
    return float(value)


def _bounds(meta_path: Path, key: str, low: Any, high: Any, log: bool, integer: bool,
            where: str = "") -> tuple[float, float]:
    """Checked (low, high) of a gene or of one of its per-choice ranges (``where`` names the range)."""
    lo = _number(meta_path, key, f"{where}low", low)
    hi = _number(meta_path, key, f"{where}high", high)
    if lo >= hi:
        raise _error(meta_path, key, f"{where}low ({lo:g}) must be below high ({hi:g})")
    if log and lo <= 0:
        raise _error(meta_path, key, f"scale log needs {where}low > 0, got {lo:g}")
    if integer and not (lo.is_integer() and hi.is_integer()):
        raise _error(meta_path, key, f"type int needs whole-number bounds, got {where}low {lo:g}, high {hi:g}")
    return lo, hi


def _parse_ranges(meta_path: Path, key: str, entry: Mapping, log: bool,
                  integer: bool) -> tuple[str, tuple[tuple[str, float, float], ...]]:
    """``by`` and ``ranges`` of a conditional gene (checked against the ``by`` key in ``load_meta``)."""
    by, ranges = entry.get("by"), entry.get("ranges")
    if by is None and ranges is None:
        return "", ()
    if not isinstance(by, str) or not isinstance(ranges, Mapping) or not ranges:
        raise _error(meta_path, key, "a range per choice needs 'by: KEY' (a categorical key) and 'ranges: "
                                     "{CHOICE: [low, high], ...}', got by "
                                     f"{by!r}, ranges {ranges!r}")
    out = []
    for name, pair in ranges.items():
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise _error(meta_path, key, f"ranges: '{name}' must be [low, high], got {pair!r}")
        out.append((str(name), *_bounds(meta_path, key, pair[0], pair[1], log, integer, f"ranges.{name}: ")))
    return by, tuple(out)


def _parse_entry(meta_path: Path, key: str, entry: Any, integer: bool) -> tuple[bool, Gene]:
    """Validate one meta entry and return (evolve, gene) with the gene's bounds and scale."""
    if not isinstance(entry, Mapping):
        raise _error(meta_path, key, f"expected a mapping with evolve/low/high/scale, got {entry!r}")
    unknown = sorted(set(entry) - KNOWN_FIELDS)
    if unknown:
        hint = " (a numeric key cannot take choices)" if unknown[0] == "choices" else ""
        raise _error(meta_path, key, f"unknown field '{unknown[0]}' (known: {', '.join(sorted(KNOWN_FIELDS))})"
                                     f"{hint}")
    missing = [f for f in REQUIRED_FIELDS if f not in entry]
    if missing:
        raise _error(meta_path, key, f"missing field '{missing[0]}'")
    evolve = entry["evolve"]
    if not isinstance(evolve, bool):
        raise _error(meta_path, key, f"'evolve' must be true or false, got {evolve!r}")
    kind = entry.get("type", "int" if integer else "float")
    if kind not in TYPES:
        raise _error(meta_path, key, f"type must be one of {', '.join(TYPES)}, got {kind!r}")
    if integer and kind != "int":
        raise _error(meta_path, key, "is an integer key of the key set: its type must be int")
    scale = entry.get("scale", "linear")
    if scale not in SCALES:
        raise _error(meta_path, key, f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    log, integer = scale == "log", kind == "int"
    low, high = _bounds(meta_path, key, entry["low"], entry["high"], log, integer)
    by, ranges = _parse_ranges(meta_path, key, entry, log, integer)
    return evolve, Gene(key, low, high, log, integer, by=by, ranges=ranges)


def _parse_choice(meta_path: Path, key: str, entry: Any, names: Sequence[str]) -> tuple[bool, Gene | None]:
    """A categorical key: ``{evolve: false}`` (its value comes from the hyp file) or ``{evolve: BOOL,
    choices: [NAME, ...]}`` with names the key set allows."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("evolve"), bool) \
            or set(entry) - {"evolve", "choices"}:
        raise _error(meta_path, key, f"names a choice ({', '.join(names)}), not a number: its entry must be "
                                     f"{{evolve: true|false, choices: [NAME, ...]}}, got {entry!r}")
    if "choices" not in entry:
        if entry["evolve"]:
            raise _error(meta_path, key, "'evolve: true' needs 'choices: [NAME, ...]'")
        return False, None
    choices = entry["choices"]
    if not isinstance(choices, list) or not choices:
        raise _error(meta_path, key, f"'choices' must be a non-empty list of names, got {choices!r}")
    unknown = [c for c in choices if c not in names]
    if unknown:
        raise _error(meta_path, key, f"unknown choice {unknown[0]!r} (known: {', '.join(names)})")
    if len(set(choices)) != len(choices):
        raise _error(meta_path, key, "'choices' lists a name twice")
    return entry["evolve"], Gene(key, 0.0, 1.0, False, False, choices=tuple(choices))


def _check_conditional(meta_path: Path, gene: Gene, meta: Mapping[str, tuple[bool, Gene | None]]) -> None:
    by = meta.get(gene.by, (False, None))[1]
    if by is None or not by.choices:
        raise _error(meta_path, gene.key, f"'by: {gene.by}' must name a categorical key with 'choices' in "
                                          "this file")
    named = [name for name, _, _ in gene.ranges]
    stray = [n for n in named if n not in by.choices]
    if stray:
        raise _error(meta_path, gene.key, f"ranges: '{stray[0]}' is not a choice of '{gene.by}' "
                                          f"({', '.join(by.choices)})")
    lacking = [c for c in by.choices if c not in named]
    if lacking:
        raise _error(meta_path, gene.key, f"ranges: no range for '{lacking[0]}', a choice of '{gene.by}'")


def load_meta(meta_path: Path, keyset: KeySet = YOLOV5) -> dict[str, tuple[bool, Gene | None]]:
    """Read and validate a meta YAML: every key of ``keyset`` present exactly once, nothing unknown (an
    extension key of the key set, such as the detector's ``optimizer``, may be present)."""
    if not meta_path.is_file():
        raise ConfigError(f"{meta_path}: search-space file not found")
    try:
        data = yaml.safe_load(meta_path.read_bytes())  # a non-UTF-8 byte is a YAMLError
    except yaml.YAMLError as exc:
        raise ConfigError(f"{meta_path}: not valid YAML: {exc}".splitlines()[0]) from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{meta_path}: expected a mapping of hyperparameter keys, "
                          f"got {type(data).__name__}")
    unknown = [k for k in data if k not in keyset.keys and keyset.extension_of(k) is None]
    if unknown:
        raise ConfigError(f"{meta_path}: unknown hyperparameter key '{unknown[0]}'")
    missing = [k for k in keyset.keys if k not in data]
    if missing:
        raise ConfigError(f"{meta_path}: missing hyperparameter key '{missing[0]}'")
    out: dict[str, tuple[bool, Gene | None]] = {}
    for key in data:
        names = keyset.choices_of(key) or keyset.extension_of(key)
        out[key] = (_parse_choice(meta_path, key, data[key], names) if names is not None
                    else _parse_entry(meta_path, key, data[key], key in keyset.integer))
    for _, gene in out.values():
        if gene is not None and gene.by:
            _check_conditional(meta_path, gene, out)
    return out


class SearchSpace:
    """The evolved genes (``genes``, ``keys``) and the base hyp that supplies every frozen key."""

    def __init__(self, base: Mapping[str, Any], genes: Sequence[Gene], keyset: KeySet = YOLOV5) -> None:
        self.keyset = keyset
        self.base: dict[str, Any] = dict(base)
        self.genes: list[Gene] = list(genes)
        self.keys: list[str] = [g.key for g in self.genes]

    @classmethod
    def load(cls, meta_path: str | Path | None = None, hyp_path: str | Path | None = None,
             keyset: KeySet = YOLOV5) -> SearchSpace:
        """Load a meta YAML and a base hyp of ``keyset`` and validate both (defaults: the files shipped
        in the ``hyps`` package, which hold the YOLOv5 key set).

        An evolved extension key (the detector's ``optimizer``) joins the key set, and so the records; a
        base hyp file without it starts from the first of its ``choices``. A conditional gene whose
        ``by`` key is not evolved moves within its own ``low``/``high``.
        """
        meta_path = Path(meta_path) if meta_path is not None else hyps.path(hyps.META)
        hyp_path = Path(hyp_path) if hyp_path is not None else hyps.path(hyps.HYP_SCRATCH_LOW)
        meta = load_meta(meta_path, keyset)
        for key, (evolve, gene) in meta.items():
            if evolve and gene is not None and keyset.extension_of(key) is not None:
                keyset = keyset.with_extension(key, gene.choices[0])
        base = keyset.load(hyp_path)
        evolved = {k for k, (ev, g) in meta.items() if ev and g is not None and g.choices}
        genes = []
        for key in keyset.keys:
            evolve, gene = meta.get(key, (False, None))
            if not evolve or gene is None:
                continue
            if gene.by and gene.by not in evolved:
                gene = replace(gene, by="", ranges=())
            bounds = gene.within(base[gene.by]) if gene.by else gene
            if gene.choices and base[key] not in gene.choices:
                raise ConfigError(f"{hyp_path}: key '{key}': base value {base[key]!r} is not among the choices "
                                  f"({', '.join(gene.choices)}) of {meta_path}")
            # A base outside the bounds would be clipped on encoding, so the seed would not be the base.
            if not gene.choices and not bounds.low <= base[key] <= bounds.high:
                where = f" for {gene.by} {base[gene.by]}" if gene.by else ""
                raise ConfigError(f"{hyp_path}: key '{key}': base value {base[key]:g} is outside the bounds "
                                  f"[{bounds.low:g}, {bounds.high:g}]{where} of {meta_path}")
            genes.append(gene)
        if not genes:
            raise ConfigError(f"{meta_path}: no key has 'evolve: true', nothing to evolve")
        return cls(base, genes, keyset)

    def __len__(self) -> int:
        return len(self.genes)

    @property
    def levels(self) -> list[int]:
        """Per gene, its number of choices (0 for a numeric gene): what the GA needs to know of them."""
        return [g.levels for g in self.genes]

    def _bounded(self, gene: Gene, hyp: Mapping[str, Any]) -> Gene:
        """The gene with the bounds it has in ``hyp`` (a conditional gene's range for hyp's choice)."""
        return gene.within(hyp.get(gene.by, self.base[gene.by])) if gene.by else gene

    def encode(self, hyp: Mapping[str, Any]) -> list[float]:
        """Genome of ``hyp`` (missing evolved keys take the base value); positions clipped to [0, 1]."""
        out = []
        for g in self.genes:
            value = hyp.get(g.key, self.base[g.key])
            out.append(self._bounded(g, hyp).encode(value if g.choices else float(value)))
        return out

    def decode(self, genome: Sequence[float]) -> dict[str, Any]:
        """A complete hyp dict: evolved keys from ``genome``, the others from the base hyp; a conditional
        gene is decoded in the range of the choice decoded for its ``by`` key."""
        if len(genome) != len(self.genes):
            raise ValueError(f"genome has {len(genome)} genes, the search space has {len(self.genes)}")
        hyp = dict(self.base)
        for gene, pos in zip(self.genes, genome):
            if not gene.by:
                hyp[gene.key] = gene.decode(pos)
        for gene, pos in zip(self.genes, genome):
            if gene.by:
                hyp[gene.key] = self._bounded(gene, hyp).decode(pos)
        return hyp

    def random_genome(self, rng: random.Random) -> list[float]:
        """A genome drawn uniformly over the normalised space (a choice at the centre of its bin)."""
        return [g.encode(g.decode(x)) if g.choices else x for g, x in ((g, rng.random()) for g in self.genes)]

    def genome_key(self, genome: Sequence[float]) -> tuple:
        """The decoded, rounded evolved values: two genomes with the same key train the same hyps."""
        hyp = self.decode(genome)
        return tuple(hyp[k] for k in self.keys)
