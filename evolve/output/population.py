"""Hyps read as seeds of a run: an ``evolve_population.yaml`` (``gen{g}number{i}: {hyp}`` entries), a
plain hyp file (one individual), or every hyp file of a folder (``--population-dir``), each validated
against the trainer's key set and completed with its defaults."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import yaml

from evolve.errors import ConfigError
from evolve.search.keyset import YOLOV5, KeySet

_POPULATION_KEY = re.compile(r"^gen(\d+)number(\d+)$")


def read_population(path: str | Path, keyset: KeySet = YOLOV5) -> list[dict[str, float]]:
    """Hyps from an ``evolve_population.yaml`` (``gen{g}number{i}: {hyp}`` entries, in file order) or from
    a plain hyp file (one individual); each validated and completed with defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: population file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        raise ConfigError(f"{path}: empty file, expected hyperparameters")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of hyperparameters, got {type(data).__name__}")
    layered = any(isinstance(v, Mapping) for v in data.values()) or any(
        isinstance(k, str) and _POPULATION_KEY.match(k) for k in data
    )
    if not layered:
        return [keyset.validate(data, str(path))]
    out = []
    for name, entry in data.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"{path}: entry '{name}' is not a mapping of hyperparameters (got {type(entry).__name__})"
            )
        out.append(keyset.validate(entry, f"{path}: entry '{name}'"))
    return out


def read_hyp_dir(folder: str | Path, keyset: KeySet = YOLOV5) -> list[dict[str, float]]:
    """Every ``*.yaml``/``*.yml`` file in ``folder`` (sorted by name) as hyps; population files contribute
    each of their individuals."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: population folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise ConfigError(f"{folder}: no *.yaml or *.yml hyp files in the folder")
    return [hyp for p in files for hyp in read_population(p, keyset)]
