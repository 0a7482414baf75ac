"""The checkpoint of a run (``checkpoint.pkl``): what it holds, how it is made, and whether a run may go on
from it. Both loops build theirs with ``checkpoint_state`` and every resume checks it with
``check_checkpoint``, so the format is decided here only.

Generational runs save the population and GA state at the start of each generation; async runs save
the bred count, the current population and the children bred but not finished after every change.
A checkpoint is accepted only if it fits the configuration and the search space it is resumed with.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from evolve.config.run import EvolveConfig, resumed_config
from evolve.errors import ConfigError
from evolve.output.rundir import checkpoint_path
from evolve.search.space import SearchSpace

LOGGER = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2  # 2: trials configured by TrialConfig, typed surrogate options


def checkpoint_state(cfg: EvolveConfig, digest: str, **state: Any) -> dict[str, Any]:
    """A checkpoint of ``cfg``'s run: the loop's ``state`` (generation, population, GA state, ...) with
    the version, mode, configuration and fingerprint every checkpoint carries."""
    return {"version": CHECKPOINT_VERSION, "mode": cfg.mode, "config": cfg.to_dict(), "fingerprint": digest,
            "seed": cfg.seed, **state}


def fingerprint(cfg: EvolveConfig, space: SearchSpace) -> str:
    """A digest of everything that decides results, except the generation count (a run may be extended)."""
    settings = cfg.result_settings()
    settings["ga"].pop("generations")
    if not settings["ga"]["age"]:
        settings["ga"].pop("age")  # a run without ageing keeps the fingerprint it had before --age existed
    if settings.get("fidelity") == "compressed":
        settings.pop("fidelity")  # likewise a compressed run, the only kind before --fidelity existed
    blob = {"settings": settings, "base": space.base, "genes": [g.record() for g in space.genes]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resumed_from(cfg: EvolveConfig, checkpoint: dict[str, Any], run_dir: Path) -> EvolveConfig:
    """The configuration saved in ``checkpoint`` with this command's --generations and execution settings."""
    source = str(checkpoint_path(run_dir))
    if checkpoint.get("version") != CHECKPOINT_VERSION or "config" not in checkpoint:
        raise ConfigError(f"{source}: not a checkpoint of this version "
                          f"(version {checkpoint.get('version')!r})")
    saved = EvolveConfig.from_dict(checkpoint["config"], source=source)
    merged, notes = resumed_config(saved, cfg)
    for note in notes:
        LOGGER.warning("%s", note)
    merged.validate()
    generation = checkpoint.get("generation")
    if isinstance(generation, int) and merged.ga.generations <= generation:
        raise ConfigError(f"--generations {merged.ga.generations}: the run in {run_dir} is already at "
                          f"generation {generation} (counted from 0); ask for at least {generation + 1} "
                          "generations")
    return merged


def _fits(genome: Any, space: SearchSpace) -> bool:
    return isinstance(genome, (list, tuple)) and len(genome) == len(space)


def check_checkpoint(state: dict[str, Any], run_dir: Path, space: SearchSpace, digest: str,
                     mode: str) -> None:
    """ConfigError naming the checkpoint unless it belongs to this configuration and search space."""
    source = checkpoint_path(run_dir)
    generation, population = state.get("generation"), state.get("population")
    if state.get("mode", "generational") != mode:
        raise ConfigError(f"{source}: checkpoint of a {state.get('mode')!r} run, but its configuration "
                          f"says {mode!r}")
    if not isinstance(generation, int) or generation < 0 or "ga_state" not in state:
        raise ConfigError(f"{source}: checkpoint lacks a valid generation index or GA state")
    if mode == "async":
        # Members and reserve are (index, genome, selection value, fitness), pending children
        # (index, trial id, genome).
        bred, pending = state.get("bred"), state.get("pending")
        ok = isinstance(bred, int) and bred >= 0
        ok = ok and isinstance(population, list) and isinstance(pending, list)
        reserve = state.get("reserve", [])  # absent from checkpoints written before ageing
        ok = ok and isinstance(reserve, list)
        ok = ok and all(isinstance(m, (list, tuple)) and len(m) == 4 and _fits(m[1], space)
                        for m in [*population, *reserve])
        ok = ok and all(isinstance(c, (list, tuple)) and len(c) == 3 and _fits(c[2], space)
                        for c in pending)
        if not ok:
            raise ConfigError(f"{source}: async checkpoint lacks a valid bred count, population or pending "
                              f"children for the search space ({len(space)} genes)")
    elif not isinstance(population, list) or not population or not all(_fits(g, space) for g in population):
        raise ConfigError(f"{source}: checkpoint population does not fit the search space "
                          f"({len(space)} genes)")
    if state.get("fingerprint") != digest:
        raise ConfigError(f"{source}: the search space or settings changed since the run started "
                          f"(the meta or hyp file was edited?); restore them or start a new run")
