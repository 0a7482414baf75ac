"""The checkpoint of a run (``checkpoint.pkl``): what it holds, how it is made, and whether a run may go on
from it. Both loops build theirs with ``checkpoint_state`` and every resume checks it with
``check_checkpoint``, so the format is decided here only.

Generational runs save the population and GA state at the start of each generation; async runs save
the bred count, the current population and the children bred but not finished after every change.
A checkpoint is accepted only if it fits the configuration and the search space it is resumed with, and
only in the folder of the run that wrote it: each run has an identity (``RunIdentity``, kept in the
folder's ``.run`` file and in every checkpoint) and every checkpoint names the records it had seen (rows
and a digest of evolve.csv), so a checkpoint copied in from another run, whose genomes would otherwise be
matched by position to this folder's rows, is refused naming both runs. A checkpoint written before the
trainer's key set gained a key (``upgraded``) is brought to this version first, so such a run goes on.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from evolve.config.run import TARGET_MARK, EvolveConfig, resumed_config
from evolve.errors import ConfigError
from evolve.output.records import CSV_NAME, missing_keys
from evolve.output.rundir import atomic_write_text, checkpoint_path
from evolve.search.space import SearchSpace

LOGGER = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2  # 2: trials configured by TrialConfig, typed surrogate options


def records_mark(path: Path, rows: int) -> dict[str, Any] | None:
    """``RunRecords.mark()`` of the first ``rows`` rows of the evolve.csv at ``path`` (header included), or
    None when the file has fewer complete rows."""
    if rows == 0:
        return {"rows": 0, "sha256": None}
    data = path.read_bytes() if path.is_file() else b""
    end = -1
    for _ in range(rows + 1):  # the header line, then the rows
        end = data.find(b"\n", end + 1)
        if end < 0:
            return None
    return {"rows": rows, "sha256": hashlib.sha256(data[:end + 1]).hexdigest()}


RUN_NAME = ".run"  # the run's identity, beside its records


@dataclass(frozen=True)
class RunIdentity:
    """Which run a folder and a checkpoint belong to: a random id, when and where the run started."""

    id: str
    started: str
    folder: str

    @classmethod
    def new(cls, run_dir: Path) -> "RunIdentity":
        return cls(uuid.uuid4().hex[:12], time.strftime("%Y-%m-%d %H:%M:%S"), str(Path(run_dir).absolute()))

    @classmethod
    def from_dict(cls, data: Any) -> Optional["RunIdentity"]:
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("id", "started",
                                                                                       "folder")):
            return None
        return cls(data["id"], data["started"], data["folder"])

    def describe(self) -> str:
        return f"run {self.id} (started {self.started} in {self.folder})"


def read_identity(run_dir: Path) -> Optional[RunIdentity]:
    """The identity in ``run_dir/.run``, or None (a run written before identities, or no run yet)."""
    try:
        return RunIdentity.from_dict(json.loads((Path(run_dir) / RUN_NAME).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def claim_identity(run_dir: Path, checkpoint: Optional[dict[str, Any]]) -> RunIdentity:
    """The identity of the run going on in ``run_dir``: the resumed checkpoint's, else the folder's (a run
    from before identities), else a new one; written to ``run_dir/.run`` when the folder lacks it."""
    identity = RunIdentity.from_dict((checkpoint or {}).get("run")) if checkpoint is not None else None
    on_disk = read_identity(run_dir)
    if identity is None:
        identity = on_disk if checkpoint is not None and on_disk is not None else RunIdentity.new(run_dir)
    if identity != on_disk:
        atomic_write_text(Path(run_dir) / RUN_NAME, json.dumps(asdict(identity)) + "\n")
    return identity


def checkpoint_state(cfg: EvolveConfig, digest: str, **state: Any) -> dict[str, Any]:
    """A checkpoint of ``cfg``'s run: the loop's ``state`` (generation, population, GA state, ...) with
    the version, mode, configuration and fingerprint every checkpoint carries."""
    return {"version": CHECKPOINT_VERSION, "mode": cfg.mode, "config": cfg.to_dict(), "fingerprint": digest,
            "seed": cfg.seed, **state}


def fingerprint(cfg: EvolveConfig, space: SearchSpace, without: Sequence[str] = ()) -> str:
    """A digest of everything that decides results, except the generation count (a run may be extended);
    ``without``: as a run whose key set lacked those keys saw the same search space (``upgraded``)."""
    return _digest(cfg.result_settings(), space, without)


def _digest(settings: dict[str, Any], space: SearchSpace, without: Sequence[str] = ()) -> str:
    settings["ga"].pop("generations")
    if not settings["ga"]["age"]:
        settings["ga"].pop("age")  # a run without ageing keeps the fingerprint it had before --age existed
    if settings.get("fidelity") == "compressed":
        settings.pop("fidelity")  # likewise a compressed run, the only kind before --fidelity existed
    blob = {"settings": settings, "base": {k: v for k, v in space.base.items() if k not in without},
            "genes": [g.record() for g in space.genes if g.key not in without]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _older_prefix(state: dict[str, Any], run_dir: Path, cfg: EvolveConfig, space: SearchSpace, digest: str,
                  without: Sequence[str] = ()) -> dict[str, Any]:
    """``state`` with fingerprint ``digest`` when it is the checkpoint of a ``prefix`` run saved before
    ``--epochs`` was the target length, whose configuration ``EvolveConfig.from_dict`` has brought to this
    version (``cfg``, as resumed), and it fits the search space as that run saw it (``without`` the keys its key set lacked);
    else ``state`` as it is."""
    saved = state.get("config")
    if not isinstance(saved, dict) or saved.get("fidelity") != "prefix" or saved.get(TARGET_MARK) \
            or state.get("fingerprint") == digest:
        return state
    try:
        settings = EvolveConfig.from_dict(saved, upgrade=False).result_settings()
    except ConfigError:
        return state
    settings.pop(TARGET_MARK, None)
    if state.get("fingerprint") != _digest(settings, space, without):
        return state
    LOGGER.info("%s: a prefix run saved before --epochs was its target length; it goes on as it began, with "
                "--epochs %s", checkpoint_path(run_dir), cfg.train.epochs)
    return {**state, "fingerprint": digest}


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


def upgraded(state: dict[str, Any], run_dir: Path, cfg: EvolveConfig, space: SearchSpace,
             digest: str) -> dict[str, Any]:
    """``state`` as this version's checkpoint when it was written before the key set gained keys its
    evolve.csv has no column for (``cls_pw`` of the Ultralytics key set), else ``state`` as it is.

    It is upgraded only when it fits the search space as that run saw it (the same fingerprint without
    those keys) and the base holds them at the key set default, the value its trials trained with: every
    genome gains their genes at that value, and a meta file that evolves them evolves them from here on.
    A checkpoint of a ``prefix`` run older than ``--epochs`` as its target length is brought along too
    (``_older_prefix``). Anything else is left to ``check_checkpoint`` to refuse."""
    try:
        with (Path(run_dir) / CSV_NAME).open(encoding="utf-8", newline="") as fh:
            missing = missing_keys(next(csv.reader(fh), []), space.keyset)
    except (OSError, UnicodeDecodeError):
        return _older_prefix(state, run_dir, cfg, space, digest)
    # Both may apply: an older prefix run's fingerprint is carried to the form the key-set step checks.
    state = _older_prefix(state, run_dir, cfg, space, fingerprint(cfg, space, without=missing), missing)
    defaults = space.keyset.default_hyp()
    if (not missing or state.get("fingerprint") == digest or not isinstance(state.get("population"), list)
            or any(space.base[k] != defaults[k] for k in missing)
            or state.get("fingerprint") != fingerprint(cfg, space, without=missing)):
        return state
    at = [i for i, g in enumerate(space.genes) if g.key in missing]
    fill = space.encode(space.base)

    def grown(genome: Any) -> list[float]:
        out = list(genome)
        for i in at:  # ascending, so each index is already that of the grown genome
            out.insert(i, fill[i])
        return out

    state = copy.deepcopy(state)
    members = state.get("mode") == "async"  # async members are (index, genome, selection value, fitness)
    state["population"] = [(m[0], grown(m[1]), *m[2:]) if members else grown(m) for m in state["population"]]
    if "reserve" in state:
        state["reserve"] = [(m[0], grown(m[1]), *m[2:]) for m in state["reserve"]]
    if "pending" in state:
        state["pending"] = [(c[0], c[1], grown(c[2])) for c in state["pending"]]
    ga_state = state.get("ga_state")
    if isinstance(ga_state, dict) and "archive" in ga_state:
        ga_state["archive"] = [(tuple(grown(k)), v) for k, v in ga_state["archive"]]
    state["fingerprint"] = digest
    LOGGER.info("%s: written before the %s key set had %s; its genomes gain %s at the default the trials "
                "on record trained with%s", checkpoint_path(run_dir), space.keyset.name, ", ".join(missing),
                "them" if len(missing) > 1 else "it",
                ", evolved from here on" if at else "")
    return state


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
    _check_same_run(state, Path(run_dir), source)
    if state.get("fingerprint") != digest:
        raise ConfigError(f"{source}: the search space or settings changed since the run started "
                          f"(the meta or hyp file was edited?); restore them or start a new run")


def _check_same_run(state: dict[str, Any], run_dir: Path, source: Path) -> None:
    """ConfigError naming both runs unless the checkpoint was written by the run whose records are in
    ``run_dir`` (checkpoints written before identities carry neither and are taken as they are)."""
    mine, folder = RunIdentity.from_dict(state.get("run")), read_identity(run_dir)
    theirs = mine.describe() if mine is not None else "another run"
    if mine is not None and folder is not None and mine.id != folder.id:
        raise ConfigError(f"{source}: checkpoint of {theirs}, but this folder holds {folder.describe()}; "
                          "put this run's own checkpoint back, or resume the other run in its own folder")
    mark = state.get("records")
    if not isinstance(mark, dict) or not isinstance(mark.get("rows"), int):
        return
    csv_path = run_dir / CSV_NAME
    if records_mark(csv_path, mark["rows"]) != mark:
        here = folder.describe() if folder is not None else f"the run in {run_dir}"
        raise ConfigError(f"{source}: checkpoint of {theirs}, whose first {mark['rows']} trials are not those "
                          f"in {csv_path} ({here}); put this run's own checkpoint back, or resume the other "
                          "run in its own folder")
