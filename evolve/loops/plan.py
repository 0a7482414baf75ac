"""Planning an evolution: ``prepare(cfg)`` validates every input and returns a ``Plan``, writing nothing.

All bad input (flags, meta, hyp, seeds, resume target, trainer, data) is found here, before a run folder
or a trial exists, and reported as one ``ConfigError`` line naming the file, key or flag. The data set is
checked by the trainer's own data check (``Trainer.check_data``: the detector's parsers of the data YAML
and every label file), so bad data is refused before Ray starts instead of failing every trial.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.config.fidelity import resolve_grace
from evolve.config.run import EvolveConfig
from evolve.config.trial import data_sets
from evolve.errors import ConfigError
from evolve.execution.trainers import check, preflight
from evolve.loops.checkpoint import check_checkpoint, fingerprint, resumed_from, upgraded
from evolve.output.population import read_hyp_dir, read_population
from evolve.output.rundir import load_checkpoint
from evolve.search.space import SearchSpace

LOGGER = logging.getLogger(__name__)


@dataclass
class Plan:
    """A validated evolution, ready to start: nothing has been written anywhere yet."""

    cfg: EvolveConfig
    space: SearchSpace
    fingerprint: str
    run_dir: Path | None = None  # the folder of a run being resumed
    checkpoint: dict[str, Any] | None = None
    seeds: list[dict[str, float]] = field(default_factory=list)


def _absolute(cfg: EvolveConfig) -> EvolveConfig:
    # Ray Tune runs trials in their own working folders and a resumed run may start elsewhere.
    cfg = copy.deepcopy(cfg)
    for name in ("hyp", "meta", "population_dir", "resume"):
        if getattr(cfg, name):
            setattr(cfg, name, str(Path(getattr(cfg, name)).expanduser().absolute()))
    if cfg.train.data:
        cfg.train.data = ",".join(str(Path(d).expanduser().absolute()) for d in data_sets(cfg.train.data))
    return cfg


def prepare(cfg: EvolveConfig) -> Plan:
    """Validate every input (flags, meta, hyp, seeds, resume target, trainer, data) without writing anything.

    The search space is the trainer's (its key set, its default meta and hyp files) unless ``--meta`` and
    ``--hyp`` name others. Raises ``ConfigError`` with one line naming the file, key or flag.
    """
    cfg = _absolute(cfg)
    cfg.validate()
    checkpoint = run_dir = None
    resume_target = None
    if cfg.resume:
        target = Path(cfg.resume)
        if not target.exists():
            raise ConfigError(f"--resume {target}: no such file or run folder")
        if target.is_dir():
            run_dir = target
            checkpoint = load_checkpoint(run_dir)
            cfg = resumed_from(cfg, checkpoint, run_dir)
        else:
            resume_target = target
    trainer = check(cfg.trainer)
    space = trainer.space(cfg)
    cfg = resolve_grace(cfg, space.base)  # before the fingerprint: a run's first rung is a result setting
    digest = fingerprint(cfg, space)
    if checkpoint is not None and run_dir is not None:
        checkpoint = upgraded(checkpoint, run_dir, cfg, space, digest)
        check_checkpoint(checkpoint, run_dir, space, digest, cfg.mode)
    # Every data set of a list is checked as the only one would be (each trial trains on all of them).
    for data in data_sets(cfg.train.data) or [None]:
        if data is not None and not Path(data).is_file():
            raise ConfigError(f"--data {data}: data YAML not found")
        one = copy.deepcopy(cfg)
        one.train.data = data
        preflight(trainer, one)
        summary = trainer.check_data(one.train)
        if summary is not None:
            (LOGGER.warning if summary.unreadable else LOGGER.info)("%s%s", f"{data}: " if data else "",
                                                                    summary.line())
    seeds = [dict(space.base)]
    if cfg.population_dir and checkpoint is None:
        seeds += read_hyp_dir(cfg.population_dir, space.keyset)
    if resume_target is not None:
        seeds += read_population(resume_target, space.keyset)
    if run_dir is None:
        existing = Path(cfg.project) / cfg.name
        if cfg.exist_ok and (existing / "evolve.csv").exists():
            raise ConfigError(f"{existing}: already holds an evolution (evolve.csv); continue it with "
                              f"--resume {existing}, or choose another --name")
    return Plan(cfg, space, digest, run_dir, checkpoint, seeds)
