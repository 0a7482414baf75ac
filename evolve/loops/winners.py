"""Winner validation: the top-K distinct hyps of a finished evolution, M sentinel hyps from lower in its
ranking and its base hyp, all trained again with the same S seeds no trial used, for ``--validate-epochs``
epochs, as ordinary trials of a ``TrialRunner`` (the same resources, packing, DDP and failure handling as
any trial of the run; no early stopping, since every validation run is meant to reach its end). The
verdict is each candidate's paired difference to the base over those seeds (``evolve.output.winners``).

It runs after the last generation of an evolution, or on its own with ``--validate RUN_DIR`` on a finished
run. Every validated seed is appended to ``validation.csv`` as it ends; a killed validation, run again,
trains only the seeds without a row. The evolution's own records are only read.
"""
from __future__ import annotations

import copy
import logging
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evolve.config.fidelity import validation_epochs
from evolve.config.run import EvolveConfig
from evolve.config.trial import data_names
from evolve.contract import Metrics, selection_value, standing
from evolve.errors import ConfigError
from evolve.execution.jobs import JobSource, TrialJob
from evolve.execution.runner import TrialRunner
from evolve.loops.plan import Plan, prepare
from evolve.output.records import CSV_NAME, POPULATION_NAME, RunRecords, TrialRecord
from evolve.output.rundir import CHECKPOINT_NAME
from evolve.output.winners import (
    BASE,
    SENTINEL,
    TOP,
    Candidate,
    Summary,
    ValidationRecords,
    ValidationRow,
    summarise,
    summary_line,
    transfer_text,
    write_summary,
    write_validated_hyp,
)
from evolve.output.winners_plot import plot_validation
from evolve.search.space import SearchSpace

LOGGER = logging.getLogger(__name__)

TRIAL_PREFIX = "val"  # validation trials live in trials/val-<candidate>-s<seed>/
SEED_OFFSET = 1  # validation seeds are the run's seed + 1, + 2, ...: none is the seed its trials used
SENTINEL_FROM, SENTINEL_TO = 0.5, 0.875  # sentinels sit from the median to mid-bottom-quarter of the ranking


@dataclass
class ValidationPlan:
    """What to validate, with which seeds and epochs, in which run folder."""

    plan: Plan
    run_dir: Path
    candidates: list[Candidate]
    seeds: list[int]
    epochs: int


def validation_seeds(run_seed: int, count: int) -> list[int]:
    return [run_seed + SEED_OFFSET + s for s in range(count)]


def sentinel_positions(distinct: int, top: int, count: int) -> list[int]:
    """0-based places in a ranking of ``distinct`` hyps for ``count`` sentinels below the ``top`` first.

    They spread from the median to the middle of the bottom quarter (one sentinel: the median; two: the
    median and the 7/8 quantile), so the transfer coefficient is measured over the ranking, not only over
    its top, where even a perfect proxy shows a weak rank correlation. A place already taken goes to the
    nearest free one below the top (the better one on a tie); fewer free places than sentinels: all of them.
    """
    free = list(range(top, distinct))
    if count >= len(free):
        return free
    chosen: list[int] = []
    for i in range(count):
        quantile = SENTINEL_FROM + (SENTINEL_TO - SENTINEL_FROM) * (i / (count - 1) if count > 1 else 0.0)
        target = quantile * (distinct - 1)
        place = min(free, key=lambda p: (abs(p - target), p))
        free.remove(place)
        chosen.append(place)
    return sorted(chosen)


def choose_candidates(rows: list[TrialRecord], space: SearchSpace, top: int,
                      sentinels: int = 0) -> tuple[list[Candidate], int]:
    """The base hyp, up to ``top`` best distinct other hyps and up to ``sentinels`` from lower in the ranking
    (``sentinel_positions``), with the number of distinct hyps besides the base there are.

    Hyps rank by ``standing`` (finished above stopped, failed ones never); the earliest row wins ties and
    stands for a hyp evaluated more than once. The base is matched to its own trial by rounded genome.
    """
    def key(hyp: dict[str, float]) -> tuple:
        return space.genome_key(space.encode(hyp))

    base_key = key(space.base)
    base = Candidate(BASE, dict(space.base))
    for row in rows:
        if key(row.hyp) == base_key:
            base = Candidate(BASE, dict(space.base), row.trial_id, row.metrics.fitness,
                             score=selection_value(row.metrics))
            break
    ranked = sorted((r for r in rows if standing(r.metrics)[0] > 0), key=lambda r: standing(r.metrics),
                    reverse=True)
    chosen: list[TrialRecord] = []
    seen = {base_key}
    for row in ranked:
        if key(row.hyp) not in seen:
            seen.add(key(row.hyp))
            chosen.append(row)

    def candidate(label: str, place: int) -> Candidate:
        row = chosen[place]
        return Candidate(label, dict(row.hyp), row.trial_id, row.metrics.fitness, rank=place + 1,
                         score=selection_value(row.metrics))

    tops = [candidate(f"{TOP}{i + 1}", i) for i in range(min(top, len(chosen)))]
    places = sentinel_positions(len(chosen), len(tops), sentinels)
    return [base, *tops, *(candidate(f"{SENTINEL}{i + 1}", p) for i, p in enumerate(places))], len(chosen)


def _is_finished(run_dir: Path, plan: Plan) -> bool:
    """Whether the evolution in ``run_dir`` ran its last trial (what its checkpoint and population say)."""
    state, cfg = plan.checkpoint or {}, plan.cfg
    if cfg.mode == "async":
        return state.get("bred", -1) >= cfg.ga.generations * cfg.ga.population and not state.get("pending")
    if state.get("generation") != cfg.ga.generations - 1:
        return False
    # The population file is written at the barrier that closes a generation, after its last trial.
    try:
        population = yaml.safe_load((run_dir / POPULATION_NAME).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False
    last = f"gen{cfg.ga.generations - 1}number0"
    return isinstance(population, dict) and next(iter(population), "") == last


def plan_standalone(cfg: EvolveConfig) -> ValidationPlan:
    """The validation of the finished run ``cfg.validation.run_dir``; ConfigError (nothing written) if it
    is not a finished evolution or the settings do not fit it."""
    target = Path(str(cfg.validation.run_dir)).expanduser().absolute()
    name = f"--validate {cfg.validation.run_dir}"
    if not target.is_dir():
        raise ConfigError(f"{name}: no such run folder")
    for needed in (CSV_NAME, CHECKPOINT_NAME):
        if not (target / needed).is_file():
            raise ConfigError(f"{name}: not an evolution run folder (no {needed})")
    if cfg.validation.top < 1:
        raise ConfigError(f"{name}: --validate-top must be >= 1 to validate anything, got "
                          f"{cfg.validation.top}")
    resumed = copy.deepcopy(cfg)
    resumed.validation.run_dir = None
    resumed.resume = str(target)
    plan = prepare(resumed)
    # Asked for on its own, a validation follows this command's settings, not those the run started with.
    plan.cfg.validation = copy.deepcopy(cfg.validation)
    plan.cfg.validation.run_dir = None
    if not _is_finished(target, plan):
        raise ConfigError(f"{name}: the evolution there has not finished (continue it with --resume "
                          f"{cfg.validation.run_dir}; it validates its winners at the end)")
    return _plan(plan, target, strict=True)


def plan_after_run(plan: Plan, run_dir: Path) -> ValidationPlan | None:
    """The validation that follows an evolution, or None when it is turned off or nothing can be validated."""
    if plan.cfg.validation.top < 1:
        return None
    return _plan(plan, run_dir, strict=False)


def _plan(plan: Plan, run_dir: Path, strict: bool) -> ValidationPlan | None:
    vcfg = plan.cfg.validation
    rows = RunRecords(run_dir, plan.space.keyset, data=data_names(plan.cfg.train.data)).rows()
    candidates, distinct = choose_candidates(rows, plan.space, vcfg.top, vcfg.sentinels_wanted)
    if distinct < vcfg.top:
        message = (f"--validate-top {vcfg.top}: the run in {run_dir} has only {distinct} distinct evaluated "
                   f"hyp(s) besides the base")
        if strict:
            raise ConfigError(message)
        if distinct == 0:
            LOGGER.warning("%s; nothing to validate", message)
            return None
        LOGGER.warning("%s; validating those", message)
    left = max(0, distinct - vcfg.top)
    if left < vcfg.sentinels_wanted:
        message = (f"--validate-sentinels {vcfg.sentinels_wanted}: the run in {run_dir} has {left} distinct "
                   f"hyp(s) below its top {vcfg.top}")
        if strict and vcfg.sentinels is not None:  # asked for, on a run whose hyps are known: refused
            raise ConfigError(f"{message}; give --validate-sentinels {left} or fewer")
        # The default adapts to a small run; at the end of an evolution (duplicate hyps leave fewer than
        # planned) the top and the base can still be judged: a warning, not a refusal.
        (LOGGER.info if vcfg.sentinels is None else LOGGER.warning)(
            "%s; validating %d sentinel(s), so the transfer coefficient spans less of the ranking", message,
            left)
    out = ValidationPlan(plan, run_dir, candidates, validation_seeds(plan.cfg.seed, vcfg.seeds),
                         validation_epochs(plan.cfg))
    _check_earlier(out)
    return out


def _check_earlier(vplan: ValidationPlan) -> None:
    """ConfigError unless rows already in validation.csv are of this validation (same epochs)."""
    records = ValidationRecords(vplan.run_dir, data_names(vplan.plan.cfg.train.data))
    other = sorted({r.epochs for r in records.rows()} - {vplan.epochs})
    if other:
        raise ConfigError(f"{records.path}: holds validation runs of {other[0]} epochs, not {vplan.epochs}; "
                          f"move it away, or validate with --validate-epochs {other[0]}")


class ValidationSource(JobSource):
    """The runner's job source of a validation: one job per (candidate, seed) without a row yet."""

    def __init__(self, vplan: ValidationPlan, records: ValidationRecords) -> None:
        super().__init__()
        self.records = records
        self.epochs = vplan.epochs
        done = {(r.candidate, r.source_trial_id, r.seed) for r in records.rows()}
        self._queue: deque[tuple[TrialJob, Candidate]] = deque()
        for seed in vplan.seeds:  # seed-major: with fewer slots than jobs, every candidate gets a seed first
            for index, cand in enumerate(vplan.candidates):
                if (cand.label, cand.source_trial_id, seed) in done:
                    continue
                job = TrialJob(trial_id=f"{TRIAL_PREFIX}-{cand.label}-s{seed}", generation=-1,
                               individual=index, hyp=dict(cand.hyp), seed=seed)
                self._queue.append((job, cand))
        self._running: dict[str, Candidate] = {}
        self.skipped = len(vplan.candidates) * len(vplan.seeds) - len(self._queue)

    def __len__(self) -> int:
        return len(self._queue)

    def _next(self) -> Any:
        if not self._queue:
            return None
        job, cand = self._queue.popleft()
        self._running[job.trial_id] = cand
        return job

    def _record(self, job: TrialJob, metrics: Metrics, seconds: float) -> None:
        cand = self._running.pop(job.trial_id)
        self.records.append(ValidationRow(cand.label, cand.source_trial_id, int(job.seed or 0), self.epochs,
                                          metrics))
        LOGGER.info("validated %s (%s) seed %s: %s, fitness %.5f", cand.label, cand.source_trial_id or "base",
                    job.seed, metrics.status, metrics.fitness)


def run_validation(vplan: ValidationPlan, runner: TrialRunner | None = None) -> Summary:
    """Train the plan's missing (candidate, seed) runs, then write validation_summary.csv, hyp_validated.yaml
    and validation.png and log the verdict and transfer lines."""
    cfg = vplan.plan.cfg
    records = ValidationRecords(vplan.run_dir, data_names(cfg.train.data))
    source = ValidationSource(vplan, records)
    sentinels = sum(c.role == SENTINEL for c in vplan.candidates)
    LOGGER.info("validating the base hyp, %d candidate(s) and %d sentinel(s) with the same %d new seed(s) of "
                "%d epochs: %d run(s) to train, %d already in %s", len(vplan.candidates) - 1 - sentinels,
                sentinels, len(vplan.seeds), vplan.epochs, len(source), source.skipped, records.path)
    if len(source):
        ray_cfg = copy.deepcopy(cfg.ray)
        ray_cfg.early_stop = "none"  # a validation run is a full-length run: nothing stops it early
        train_cfg = cfg.train.replace(epochs=vplan.epochs)
        if runner is None:
            with TrialRunner(ray_cfg, cfg.trainer, train_cfg, vplan.run_dir) as own:
                own.run(source)
        else:
            runner.run(source)
    summary = summarise(vplan.candidates, records.rows(), len(vplan.seeds), vplan.epochs)
    for s in summary.standings:
        paired = "" if s.paired is None else (f"  paired {s.paired.mean:+.5f} [{s.paired.low:+.5f}, "
                                               f"{s.paired.high:+.5f}]")
        c = s.candidate
        LOGGER.info("  %-9s %-10s rank %-3s trial %s  validated %.5f +- %.5f (%d seed(s))%s", c.label,
                    c.source_trial_id or "-", c.rank or "-", _fmt(c.trial_fitness), s.mean, s.sd,
                    len(s.values), paired)
    write_summary(vplan.run_dir, summary)
    path = write_validated_hyp(vplan.run_dir, summary, vplan.plan.space.keyset)
    try:
        plot_validation(summary, vplan.run_dir)
    except Exception as exc:  # a plot is a convenience; the figures are in the CSV and the YAML
        LOGGER.warning("could not draw validation.png: %s: %s", type(exc).__name__, exc)
    LOGGER.info("%s", summary_line(summary))
    LOGGER.info("%s", transfer_text(summary))
    LOGGER.info("validated hyps in %s", path)
    return summary


def _fmt(value: float) -> str:
    return f"{value:.5f}" if math.isfinite(value) else "-"
