"""The records of one evolution: ``evolve.csv`` (every finished trial), ``hyp_evolve.yaml`` (the best hyps
so far) and ``evolve_population.yaml`` (a population, also the format of seed and resume files).

The CSV is the source of truth a resumed run reads back, so it is appended and fsync'd one row at a time
and a line torn by a killed driver is dropped on the next open rather than poisoning the file. A file of
an older layout (no ``reason``, a key set lacking keys added since) is read and rewritten in this one.

A run on several data sets (``--data a.yaml,b.yaml``) writes the means in the usual columns and each data
set's fitness and seven metrics after them, as ``<name>/fitness``, ``<name>/metrics/precision`` ...
(``data_columns``); a data set a failed trial never reached is left empty. A run on one data set has no
such columns, so its file is as it always was.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from evolve.contract import DEFAULT_FITNESS_WEIGHTS, Metrics, describe_weights, one_line, standing
from evolve.errors import ConfigError
from evolve.output.rundir import atomic_write_text, disk_full
from evolve.search.keyset import YOLOV5, KeySet

LOGGER = logging.getLogger(__name__)

CSV_NAME = "evolve.csv"
BEST_NAME = "hyp_evolve.yaml"
POPULATION_NAME = "evolve_population.yaml"

# YOLOv5's results column names, mapped to the Metrics fields they hold.
METRIC_FIELDS: dict[str, str] = {
    "metrics/precision": "precision",
    "metrics/recall": "recall",
    "metrics/mAP_0.5": "map50",
    "metrics/mAP_0.5:0.95": "map50_95",
    "val/box_loss": "box_loss",
    "val/obj_loss": "obj_loss",
    "val/cls_loss": "cls_loss",
}
METRIC_COLUMNS: list[str] = list(METRIC_FIELDS)
LEAD_COLUMNS: list[str] = ["generation", "individual", "trial_id", "status", "fitness", *METRIC_COLUMNS,
                           "seconds"]


# Appended after the hyp keys, so the YOLOv5-compatible columns keep their places; files written before it
# existed are still read, and are rewritten with it (empty) when a run appends to them.
TAIL_COLUMNS: list[str] = ["reason"]


PART_COLUMNS: list[str] = ["fitness", *METRIC_COLUMNS]  # written per data set of a run on several


def data_columns(names: Sequence[str]) -> list[str]:
    """The per-data-set columns of a run on the data sets ``names`` (none for one data set)."""
    return [f"{name}/{column}" for name in names for column in PART_COLUMNS]


def csv_columns(keyset: KeySet = YOLOV5, tail: bool = True, data: Sequence[str] = ()) -> list[str]:
    """The columns of evolve.csv: where the trial sat, how it did, every hyp key of the key set, why a
    trial failed and, with several data sets, how it did on each (``tail=False``: the columns of files
    written before ``reason`` existed)."""
    return [*LEAD_COLUMNS, *keyset.keys, *((*TAIL_COLUMNS, *data_columns(data)) if tail else ())]


CSV_COLUMNS: list[str] = csv_columns(YOLOV5)


@dataclass
class TrialRecord:
    """One finished trial: where it sat in the evolution, the hyps it trained with and how it did."""

    generation: int
    individual: int
    trial_id: str
    hyp: dict[str, float]
    metrics: Metrics


def _rank(rec: TrialRecord) -> tuple[int, float] | None:
    """Sort key for "best" (``evolve.contract.standing``); a failed or diverged trial is not eligible."""
    rank = standing(rec.metrics)
    return rank if rank[0] > 0 else None


def number_cell(value: Any) -> str:
    # repr keeps metrics exact, so a resumed run compares fitnesses exactly as the original did; a value a
    # user's trainer left as None or text is recorded as nan rather than losing the row.
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return "nan"


def part_field(column: str) -> str:
    """The Metrics field of a per-data-set column name (``fitness`` or one of METRIC_COLUMNS)."""
    return "fitness" if column == "fitness" else METRIC_FIELDS[column]


def per_data_cells(metrics: Metrics, data: Sequence[str]) -> list[str]:
    """The per-data-set cells of a row (``data_columns(data)``); empty for a data set never reached."""
    return [number_cell(metrics.per_data[n][part_field(c)]) if n in metrics.per_data else ""
            for n in data for c in PART_COLUMNS]


def read_per_data(cells: Mapping[str, str], data: Sequence[str]) -> dict[str, dict[str, float]]:
    """The per-data-set figures of a row read back; a data set with an empty fitness was never reached.
    ValueError naming the column on a cell that is not a number."""
    out: dict[str, dict[str, float]] = {}
    for name in data:
        if cells[f"{name}/fitness"] == "":
            continue
        out[name] = {}
        for part in PART_COLUMNS:
            column = f"{name}/{part}"
            try:
                out[name][part_field(part)] = float(cells[column])
            except ValueError:
                raise ValueError(f"column '{column}' is not a number: {cells[column]!r}") from None
    return out


def _format_row(rec: TrialRecord, hyp: Mapping[str, float], keyset: KeySet, data: Sequence[str]) -> str:
    m = rec.metrics
    values: list[Any] = [
        int(rec.generation), int(rec.individual), str(rec.trial_id), m.status, number_cell(m.fitness),
        *(number_cell(getattr(m, METRIC_FIELDS[c])) for c in METRIC_COLUMNS),
        number_cell(m.seconds),
        *(keyset.format_value(k, hyp[k]) for k in keyset.keys),
        one_line(m.reason),
        *per_data_cells(m, data),
    ]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _parse_row(path: Path, line_no: int, row: list[str], keyset: KeySet, columns: list[str],
               data: Sequence[str] = ()) -> TrialRecord:
    if len(row) != len(columns):
        raise ConfigError(f"{path}: line {line_no}: {len(row)} fields, expected {len(columns)}")
    cells = dict(zip(columns, row))
    column = ""
    try:
        column = "generation"
        generation = int(cells[column])
        column = "individual"
        individual = int(cells[column])
        numbers: dict[str, float] = {}
        for column in ("fitness", *METRIC_COLUMNS, "seconds", *(k for k in keyset.keys if k in cells)):
            if keyset.choices_of(column) is None:  # a named choice (the optimizer) stays text
                numbers[column] = float(cells[column])
    except ValueError:
        raise ConfigError(
            f"{path}: line {line_no}: column '{column}' is not a number: {cells[column]!r}"
        ) from None
    try:
        per_data = read_per_data(cells, data)
    except ValueError as exc:  # its message names the column, as above
        raise ConfigError(f"{path}: line {line_no}: {exc}") from None
    try:
        metrics = Metrics(
            **{METRIC_FIELDS[c]: numbers[c] for c in METRIC_COLUMNS},
            fitness=numbers["fitness"], seconds=numbers["seconds"], status=cells["status"],
            reason=cells.get("reason", ""), per_data=per_data,
        )
    except ValueError as exc:
        raise ConfigError(f"{path}: line {line_no}: column 'status': {exc}") from None
    # A key the file has no column for (added to the key set later, see missing_keys) is its default.
    defaults = keyset.default_hyp()
    hyp = {k: (defaults[k] if k not in cells else cells[k] if keyset.choices_of(k) is not None
               else int(round(numbers[k])) if k in keyset.integer else numbers[k]) for k in keyset.keys}
    return TrialRecord(generation, individual, cells["trial_id"], hyp, metrics)


def _read_csv(path: Path, keyset: KeySet, data: Sequence[str] = ()) -> tuple[list[TrialRecord], str | None]:
    """Parse evolve.csv; returns its records and, when its last line is torn or the file predates the
    ``reason`` column, the text to keep (in the current layout).

    Raises ConfigError naming the file when the header belongs to another layout or a complete line is bad.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text CSV (byte {exc.start} is not UTF-8)") from None
    lines = text.split("\n")
    # Rows are written whole, newline last: text after the final newline means the writer was killed.
    tail = lines.pop()
    torn = bool(tail)
    if lines and "\x00" in lines[-1]:
        # A crash after the file grew but before its data landed leaves NULs in the last line.
        tail = lines.pop()
        torn = True
    columns = csv_columns(keyset, data=data)
    if not lines and torn and not ",".join(columns).startswith(tail):
        raise ConfigError(f"{path}: header is not that of an evolve.csv of this version; use another folder")
    clean = "".join(line + "\n" for line in lines) if torn else None
    if not lines:
        return [], clean
    header = next(csv.reader([lines[0]]))
    missing = missing_keys(header, keyset)
    older = [c for c in columns if c not in missing]  # this version's layout less the keys it lacks
    before_reason = [c for c in csv_columns(keyset, tail=False) if c not in missing]
    if (header == before_reason and not data) or (missing and header == older):
        records = [_parse_row(path, i, row, keyset, header, data)
                   for i, row in enumerate(csv.reader(lines[1:]), start=2) if row]
        return records, _upgraded(lines, header, columns, keyset)
    if header != columns:
        shorter = min(len(header), len(columns))
        diff = next((i for i, (a, b) in enumerate(zip(header, columns)) if a != b), shorter)
        got = header[diff] if diff < len(header) else "<end>"
        want = columns[diff] if diff < len(columns) else "<end>"
        raise ConfigError(
            f"{path}: header differs from this version's columns (column {diff + 1}: '{got}', expected "
            f"'{want}'); move the file away or use another run folder"
        )
    records = [
        _parse_row(path, i, row, keyset, columns, data)
        for i, row in enumerate(csv.reader(lines[1:]), start=2)
        if row
    ]
    return records, clean


def missing_keys(header: Sequence[str], keyset: KeySet) -> list[str]:
    """The keys of ``keyset`` an evolve.csv header lacks: added to the key set after the file was written
    (Ultralytics' ``cls_pw``), so its trials trained at their defaults, which reading fills in."""
    return [k for k in keyset.keys if k not in header]


def _upgraded(lines: Sequence[str], header: list[str], columns: list[str], keyset: KeySet) -> str:
    """The complete ``lines`` of an older layout (``header``) in this version's ``columns``: a missing key
    gets its default, a missing reason stays empty; the other cells keep their text."""
    fill = {k: keyset.format_value(k, v) for k, v in keyset.defaults}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in filter(None, csv.reader(lines[1:])):
        cells = dict(zip(header, row))
        writer.writerow([cells.get(c, fill.get(c, "")) for c in columns])
    return buf.getvalue()


def _repair_note(path: Path, keyset: KeySet) -> tuple[int, str]:
    """How a rewrite of the file on opening is logged: its level and what it does."""
    text = path.read_text(encoding="utf-8")
    first = next(csv.reader([text.split("\n", 1)[0]]), [])
    torn = "; dropping an incomplete last line (its writer was killed)" if not text.endswith("\n") else ""
    missing = missing_keys(first, keyset)
    if missing:
        filled = ", ".join(f"{k} {keyset.default_hyp()[k]!r}" for k in missing)
        return (logging.WARNING if torn else logging.INFO,
                f"written before the {keyset.name} key set had {', '.join(missing)}; adding the column(s) "
                f"with the default the trials already recorded trained with ({filled}){torn}")
    if first == csv_columns(keyset, tail=False):
        return logging.WARNING, "adding the 'reason' column (empty for the trials already recorded)"
    return logging.WARNING, "dropping an incomplete last line (its writer was killed)"


def use_line(keyset_name: str, path: Path) -> str:
    """The header line of hyp_evolve.yaml saying how to train with it: a command of the trainers that take
    hyp files of that key set (the detector's refuses Ultralytics' keys, and Ultralytics' YOLOv5's)."""
    if keyset_name == "yolov5":
        return (f"# Use: python -m detector train --data DATA.yaml --hyp {path}"
                "  (YOLOv5: python train.py --hyp this file)")
    if keyset_name == "ultralytics":
        # Without model= Ultralytics would fetch its default weights; cfg= takes every key of this file.
        return (f"# Use: yolo train cfg={path} model=MODEL.yaml data=DATA.yaml  (Python: "
                f"YOLO('MODEL.yaml').train(cfg='{path}', data='DATA.yaml'))")
    return f"# Use: as the hyps of the trainer that evolved it (key set {keyset_name})"


class RunRecords:
    """Appends trials to ``run_dir/evolve.csv`` and keeps ``hyp_evolve.yaml`` on the best one.

    Opening an existing run folder checks the CSV header (ConfigError, file untouched, if it differs) and
    repairs a torn last line, so a resumed run appends to a clean file.
    """

    def __init__(self, run_dir: str | Path, keyset: KeySet = YOLOV5,
                 weights: tuple[float, ...] = DEFAULT_FITNESS_WEIGHTS, data: Sequence[str] = ()) -> None:
        self.run_dir = Path(run_dir)
        self.keyset = keyset
        self.data = list(data)  # names of the data sets of a run on several (evolve.config.trial.data_names)
        self.weights = tuple(weights)  # --fitness-weights: named in hyp_evolve.yaml's header
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / CSV_NAME
        self.best_path = self.run_dir / BEST_NAME
        self.population_path = self.run_dir / POPULATION_NAME
        self._count = 0
        self._best: TrialRecord | None = None
        self._has_header = False
        self._digest = hashlib.sha256()  # of the file's bytes: a checkpoint names the records it saw
        if self.csv_path.is_file():
            records, clean = _read_csv(self.csv_path, keyset, self.data)
            if clean is not None:
                level, note = _repair_note(self.csv_path, keyset)
                LOGGER.log(level, "%s: %s", self.csv_path, note)
                atomic_write_text(self.csv_path, clean)
            self._digest.update(self.csv_path.read_bytes())
            self._has_header = self.csv_path.stat().st_size > 0
            for rec in records:
                self._consider(rec)
            self._count = len(records)

    def __len__(self) -> int:
        return self._count

    def mark(self) -> dict[str, Any]:
        """The records as they are now (rows and the digest of the file's bytes), for a checkpoint: a
        resumed run checks that its evolve.csv begins with exactly these (``records_mark``). No rows: no
        digest (whether the header was written yet says nothing about the run)."""
        return {"rows": self._count, "sha256": self._digest.hexdigest() if self._count else None}

    def _consider(self, rec: TrialRecord) -> bool:
        """Make ``rec`` the best if it beats the current best (earliest wins ties); True if it did."""
        rank = _rank(rec)
        if rank is None:
            return False
        best_rank = _rank(self._best) if self._best is not None else None
        if best_rank is None or rank > best_rank:
            self._best = rec
            return True
        return False

    def append(self, rec: TrialRecord) -> None:
        """Append one finished trial (flushed and fsync'd) and refresh hyp_evolve.yaml if the best changed.

        OSError(ENOSPC), nothing written, for a trial that failed because a disk is full: the run stops
        (resumable) and the trial runs again on resume instead of staying failed."""
        if rec.metrics.status == "failed" and disk_full(rec.metrics.reason, self.run_dir):
            raise OSError(errno.ENOSPC, f"No space left on device (trial {rec.trial_id} failed for want of disk "
                                        f"space: {rec.metrics.reason or 'the run folder is full'})",
                          str(self.run_dir))
        hyp = self.keyset.validate(rec.hyp, source=f"trial {rec.trial_id} hyp")
        rec = TrialRecord(int(rec.generation), int(rec.individual), str(rec.trial_id), hyp, rec.metrics)
        line = _format_row(rec, hyp, self.keyset, self.data)
        if not self._has_header:
            line = ",".join(csv_columns(self.keyset, data=self.data)) + "\n" + line
        with self.csv_path.open("a", encoding="utf-8", newline="") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._digest.update(line.encode("utf-8"))
        self._has_header = True
        self._count += 1
        changed = self._consider(rec)
        if self._best is not None and (changed or self._count == 1 or not self.best_path.exists()):
            self._write_best()

    def rows(self) -> list[TrialRecord]:
        """Every trial in evolve.csv, in file order, read back from disk (hyps as written: 6 digits)."""
        if not self.csv_path.is_file():
            return []
        return _read_csv(self.csv_path, self.keyset, self.data)[0]

    def best(self) -> TrialRecord | None:
        """The trial with the highest fitness among status ``ok``; ``stopped`` ones only if none is ok."""
        return self._best

    def _write_best(self) -> None:
        best = self._best
        assert best is not None
        m = best.metrics
        lines = [
            f"# Best hyperparameters found so far by the evolution in {self.run_dir}",
            f"# Best trial: generation {best.generation}, individual {best.individual}, "
            f"trial_id {best.trial_id}, status {m.status}",
            f"# Trials so far: {self._count} (when this file was written)",
            *(f"# {c}: {float(number_cell(getattr(m, METRIC_FIELDS[c]))):.6g}" for c in METRIC_COLUMNS),
            f"# fitness: {float(number_cell(m.fitness)):.6g}  ({describe_weights(self.weights)})",
            *([f"# means over the data sets {', '.join(self.data)}; fitness per data set: "
               + ", ".join(f"{n} {m.per_data[n]['fitness']:.6g}" for n in self.data if n in m.per_data)]
              if self.data else []),
            use_line(self.keyset.name, self.best_path),
        ]
        body = yaml.safe_dump({k: best.hyp[k] for k in self.keyset.keys}, sort_keys=False,
                              default_flow_style=False)
        atomic_write_text(self.best_path, "\n".join(lines) + "\n" + body)

    def write_population(self, generation: int, hyps: Sequence[Mapping[str, float]]) -> Path:
        """Write ``evolve_population.yaml`` (``gen{g}number{i}`` entries, full key set) atomically."""
        population = {
            f"gen{int(generation)}number{i}": self.keyset.validate(h, source=f"population individual {i}")
            for i, h in enumerate(hyps)
        }
        header = (
            f"# Population of generation {int(generation)} ({len(population)} individuals) of the evolution "
            f"in {self.run_dir}\n"
            f"# Continue with: python orchestrate.py --resume {self.population_path}\n"
        )
        body = yaml.safe_dump(population, sort_keys=False, default_flow_style=False) if population else "{}\n"
        return atomic_write_text(self.population_path, header + body)
