"""The Ray Tune function trainable that runs one evolution trial inside a Ray worker.

``run_trial(config, spec)`` trains one hyp (``config``, one ``TrialJob``) as the run's ``TrialSpec`` says,
forwards every per-epoch report to ``ray.tune.report`` and ends with one report flagged ``final: True``.
Whatever the trainer does (returns Metrics, a mapping, garbage, or raises) the trial ends with such a
final report, so the driver records it once and Tune never retries it; only a trial lost with its worker
reaches Tune's retries.

The trial's files go to ``<run_dir>/trials/<trial_id>/``, including ``trial.log`` with every log record
emitted in the worker while the trial runs. Every report also says where the trial ran (``node_id``,
``node_ip``, ``gpu_ids``, ``cuda_visible_devices``, ``pid``) and when (``start_time``, ``end_time``), so Ray
Tune's own records show placement and timing. A trial asked to run ``nproc`` > 1 ranks trains through
``evolve.execution.ddp.run_ddp`` on the trial's CPUs and GPUs.

A trial on several data sets (``--data a.yaml,b.yaml``) trains on each in turn, in the order given, into
``trials/<trial_id>/<data name>/``, and stops at the first that fails. Its epochs are counted on across
the data sets (data set k's epoch e is report (k-1) x epochs + e) and each per-epoch report is the mean of
the finished data sets' results and the current one's epoch, so early stopping compares trials that are
at the same point of the same sequence. Its result is ``mean_metrics`` of the data sets' results.

Metrics cross two process boundaries, each converted once: what a trainer returns or reports becomes
``Metrics`` as the evolution believes them in ``trial_metrics`` (in the worker), and a reported row becomes
``Metrics`` again in ``metrics_from_result`` (in the driver).
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from evolve.config.trial import TrialConfig, TrialSpec, data_names, data_sets
from evolve.contract import FAILED_STATUSES, PART_FIELDS, STATUSES, Metrics, mean_metrics, one_line, sanitised
from evolve.execution.trainers import trainer_for

LOGGER = logging.getLogger(__name__)

# Result keys reported to Tune on top of the Metrics fields.
FINAL_KEY = "final"
EPOCH_KEY = "epoch"
ERROR_KEY = "error"
END_TIME_KEY = "end_time"
PER_DATA_KEY = "per_data"  # result keys per_data/<name>/<field>: one data set's part of a trial
NOSET_CUDA_ENV = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"  # Ray's switch to leave the variable alone
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def trial_metrics(value: Any, weights: tuple[float, ...]) -> Metrics:
    """A trainer's result or per-epoch report as the evolution believes it: ``Metrics`` (``TypeError`` or
    ``ValueError`` for anything else), the fitness of the run's ``--fitness-weights`` (selection and early
    stopping use exactly those), judged by ``sanitised``. The one conversion on the trainer's side."""
    return sanitised(Metrics.from_any(value).reweighted(weights))


def result_row(metrics: Metrics, epoch: int, final: bool, error: str = "",
               placement: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The flat dict reported to Tune for one epoch (or the end) of a trial, from ``metrics`` already judged
    (``trial_metrics``).

    ``placement`` (where and since when the trial runs) is copied in, and ``end_time`` set to now, so that
    Ray Tune's own records tell which node and GPU ran each report, and when.
    """
    row: dict[str, Any] = dict(placement or {})
    if placement is not None:
        row[END_TIME_KEY] = time.time()
    row.update(metrics.to_dict())
    # Tune's results are flat: each data set's part becomes per_data/<name>/<field>.
    for name, part in row.pop(PER_DATA_KEY).items():
        row.update({f"{PER_DATA_KEY}/{name}/{k}": float(v) for k, v in part.items()})
    for key, value in row.items():
        # Tune's loggers and schedulers choke on NaN/inf; a diverged run reports 0 like a failed one.
        if isinstance(value, float) and not math.isfinite(value):
            row[key] = 0.0
    row[EPOCH_KEY] = int(epoch)
    row[FINAL_KEY] = bool(final)
    row[ERROR_KEY] = error
    return row


def metrics_from_result(result: Mapping[str, Any] | None, status: str | None = None) -> Metrics:
    """Rebuild Metrics from a reported result (the driver side of ``result_row``): the one conversion on
    the driver's side; the job source judges them (``JobSource.on_result``)."""
    result = result or {}
    fields = Metrics.__dataclass_fields__
    kwargs = {k: result[k] for k in fields if k in result and k != "status"}
    reported = str(result.get("status", "ok"))
    # A stopped trial keeps the metrics it reached, unless its last report was already judged failed.
    st = reported if reported in FAILED_STATUSES else (status or reported)
    kwargs["reason"] = one_line(result.get("reason") or result.get(ERROR_KEY) or "")
    kwargs[PER_DATA_KEY] = {}
    for key, value in result.items():
        parts = key.split("/") if key.startswith(PER_DATA_KEY + "/") else []
        if len(parts) == 3 and parts[2] in PART_FIELDS:
            kwargs[PER_DATA_KEY].setdefault(parts[1], {})[parts[2]] = float(value)
    m = Metrics(**kwargs, status=st if st in STATUSES else "failed")
    # A per-epoch report (all a stopped trial leaves) may lack these; Tune's own bookkeeping has them.
    if not m.epochs:
        m.epochs = int(result.get(EPOCH_KEY, 0) or 0)
    if not m.seconds:
        m.seconds = float(result.get("time_total_s", 0.0) or 0.0)
    return m


@contextmanager
def trial_log(path: Path) -> Iterator[None]:
    """Send every log record of this worker to ``path`` for the duration of the trial.

    The root logger is opened to INFO so the trainer's progress lands in the file, while the handlers
    already on it (Ray's stderr, which may be forwarded to the driver's console) are held at WARNING so
    that per-trial chatter never floods the driver's terminal. Everything is restored afterwards, as the
    worker process may be reused for the next trial.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    old_level = root.level
    old_handler_levels = [(h, h.level) for h in root.handlers]
    for h, level in old_handler_levels:
        h.setLevel(max(level, logging.WARNING))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
        for h, level in old_handler_levels:
            h.setLevel(level)


def _finish(metrics: Metrics, seconds: float) -> Metrics:
    if not metrics.seconds or not math.isfinite(metrics.seconds) or metrics.seconds <= 0:
        metrics.seconds = seconds
    return metrics


def _release_gpu_memory() -> None:
    # The worker is reused for the next trial; memory cached by this one (or left by an OOM) must go.
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def execute(trainer_spec: str, hyp: Mapping[str, float], cfg: TrialConfig,
            report: Callable[[int, Any], None], nproc: int = 1,
            cpus: float | None = None) -> tuple[Metrics, str]:
    """Run the trainer on the trial's data set, or on each of its data sets in turn (see the module
    docstring), and turn whatever happens into (Metrics, error message)."""
    names = data_names(cfg.data)
    if not names:
        return _execute_once(trainer_spec, hyp, cfg, report, nproc, cpus)
    parts: dict[str, Metrics] = {}
    error = ""
    for k, (name, data) in enumerate(zip(names, data_sets(cfg.data))):
        def running(epoch: int, metrics: Any, k: int = k, name: str = name) -> None:
            report(k * cfg.epochs + int(epoch), mean_metrics({**parts, name: metrics}))

        LOGGER.info("data set %d of %d: %s (%s)", k + 1, len(names), name, data)
        parts[name], error = _execute_once(trainer_spec, hyp, cfg.replace(data=data, name=f"{cfg.name}/{name}"),
                                           running, nproc, cpus)
        if parts[name].status in FAILED_STATUSES:
            break  # the trial is failed whatever the others give; they need not cost their time
    metrics = mean_metrics(parts)
    return metrics, (f"data {list(parts)[-1]}: {error}" if error else "")


def _execute_once(trainer_spec: str, hyp: Mapping[str, float], cfg: TrialConfig,
                  report: Callable[[int, Any], None], nproc: int = 1,
                  cpus: float | None = None) -> tuple[Metrics, str]:
    """Run the trainer once and turn whatever happens into (Metrics, error message).

    ``report(epoch, metrics)`` is handed to the trainer. With ``nproc`` > 1 the trainer runs as an
    ``nproc``-rank DDP job on ``cpus`` CPUs (``evolve.execution.ddp.run_ddp``), rank 0's reports reaching
    ``report``. An exception from the trainer (or a failed rank), or a result that is neither Metrics
    nor a mapping with the mAPs, gives a ``failed`` Metrics and the reason.
    """
    start = time.perf_counter()
    epochs_seen = [0]

    def _report(epoch: int, metrics: Any) -> None:
        epochs_seen[0] = int(epoch)
        report(int(epoch), trial_metrics(metrics, cfg.fitness_weights))

    error = ""
    try:
        if nproc > 1:
            from evolve.execution.ddp import run_ddp  # only DDP trials pay for its imports

            out: Any = run_ddp(trainer_spec, dict(hyp), cfg, nproc, _report, cpus=cpus)
        else:
            out = trainer_for(trainer_spec).function()(dict(hyp), cfg, _report)
        try:
            metrics = trial_metrics(out, cfg.fitness_weights)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"trainer '{trainer_spec}' returned an unusable result: {exc}") from exc
        metrics.epochs = metrics.epochs or epochs_seen[0]
    except Exception as exc:  # failure is data: the trial is recorded as failed, the run goes on
        error = one_line(f"{type(exc).__name__}: {exc}")
        LOGGER.error("trial failed: %s", error, exc_info=True)
        metrics = Metrics(status="failed", epochs=epochs_seen[0], reason=error)
    finally:
        _release_gpu_memory()
    metrics = _finish(metrics, time.perf_counter() - start)
    if metrics.status == "failed" and not error:
        error = metrics.reason or "failed (the trainer gave no reason)"
        metrics.reason = error
        LOGGER.error("trial failed: %s", error)
    return metrics, error


def placement() -> dict[str, Any]:
    """Where this trial runs, for Ray Tune's records: node (id and address), GPUs, pid, start time (Unix
    seconds).

    Ray makes a trial's GPUs, fractional ones included, the only ones CUDA sees by setting
    ``CUDA_VISIBLE_DEVICES`` in the worker; it is set here from ``ray.get_gpu_ids()`` should it differ,
    unless the user told Ray to leave it alone. A trial that reserved no GPU is left as Ray leaves it.
    """
    import ray

    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    visible = ",".join(gpu_ids)
    if gpu_ids and os.environ.get("CUDA_VISIBLE_DEVICES") != visible \
            and os.environ.get(NOSET_CUDA_ENV, "0").lower() not in ("1", "true"):
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "gpu_ids": gpu_ids,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "pid": os.getpid(),
            "start_time": time.time()}


def run_trial(config: dict[str, Any], spec: TrialSpec) -> None:
    """Ray Tune function trainable: ``config`` is one TrialJob (as ``JobSearcher`` suggests it), ``spec``
    what all trials of the run share."""
    from ray import tune

    where = placement()
    trial_id = str(config["trial_id"])
    cfg = spec.for_trial(trial_id, config.get("seed"))
    trial_dir = Path(cfg.project) / cfg.name

    def report(epoch: int, metrics: Metrics) -> None:
        tune.report(result_row(metrics, epoch, final=False, placement=where))

    with trial_log(trial_dir / "trial.log"):
        LOGGER.info("trial %s (generation %s, individual %s) starts with trainer '%s'", trial_id,
                    config.get("generation"), config.get("individual"), spec.trainer)
        LOGGER.info("on node %s (%s), pid %d, GPUs [%s], %d process(es), %d loader workers each",
                    where["node_id"], where["node_ip"], where["pid"], where["cuda_visible_devices"], spec.nproc,
                    cfg.workers)
        metrics, error = execute(spec.trainer, config["hyp"], cfg, report, nproc=spec.nproc,
                                 cpus=spec.cpus_per_trial)
        LOGGER.info("trial %s ends: status %s, fitness %.5f, %.1f s", trial_id, metrics.status,
                    metrics.fitness, metrics.seconds)
    tune.report(result_row(metrics, metrics.epochs, final=True, error=error, placement=where))
