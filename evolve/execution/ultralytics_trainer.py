"""The Ultralytics trainer's adapter (``--trainer ultralytics``): trains one hyp set of Ultralytics' key set
with an Ultralytics detection model under the trial contract. Ultralytics is called as a library.

A ``TrialConfig`` becomes Ultralytics arguments (``trainer_args``): model, data (a resolved copy of the
data YAML, see ``evolve.execution.ultralytics_inputs``), epochs, imgsz, batch, device (the trial's GPU,
else the CPU), workers, seed, the trial's folder, validation every epoch only when ``val_every`` asks
(the runner decides: early stopping needs it), AMP on CUDA, no plots. A key of our key set that the
installed Ultralytics predates (``cls_pw`` before its class weights) is left out at its default value and
fails the trial at any other (``supported_hyps``), so records never claim a value that was not trained.

Per-epoch results reach ``report`` through Ultralytics' callbacks, with our fitness (0.1 * mAP50 + 0.9 *
mAP50-95 of its validation metrics, ``evolve.contract.fitness``), never Ultralytics' own. Non-finite
training losses end the trial as ``diverged``; anything raised (out of memory included) propagates, and
the trainable records the trial ``failed``. While a trial trains, everything Ultralytics logs or prints
goes to the trial's log (the root logger), never to a console.

Three of Ultralytics' start-up steps are switched off for the trial, since each would reach the network
or leave the trial: the AMP self-check (it fetches a reference model; AMP stays on, the project's policy
on CUDA), the font check of the data set (fonts only serve plots, which are off) and the integration
callbacks (among them a Ray Tune reporter that would send Ultralytics' own results into our trial).
"""
from __future__ import annotations

import io
import logging
import math
import re
import shutil
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from evolve.config.trial import TrialConfig
from evolve.contract import Metrics
from evolve.execution.ultralytics_inputs import (import_ultralytics, installed_arguments, resolve_model,
                                                supported_hyps, write_data)
from evolve.search.keyset import ULTRALYTICS

LOGGER = logging.getLogger(__name__)
CONSOLE_LOGGER = "ultralytics.console"  # what Ultralytics prints (progress bars) is logged under this name

# Ultralytics' validation results, mapped to the Metrics fields they fill. Its detectors have no
# objectness, so obj_loss stays 0 (the DFL loss is in the trial's results.csv).
METRIC_KEYS = {
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "map50": "metrics/mAP50(B)",
    "map50_95": "metrics/mAP50-95(B)",
    "box_loss": "val/box_loss",
    "cls_loss": "val/cls_loss",
}
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colours and line erasing, noise in a log file


class Diverged(RuntimeError):
    """Raised from a callback when the training losses stop being finite."""


def trainer_args(hyp: Mapping[str, Any], cfg: TrialConfig, data: Path, embedded: bool) -> dict[str, Any]:
    """The Ultralytics arguments of one trial: every hyp the installed Ultralytics knows
    (``supported_hyps``), and the trial's settings."""
    import torch

    device = cfg.device or ("0" if torch.cuda.is_available() else "cpu")
    cuda = device != "cpu" and not str(device).startswith("mps")
    values = ULTRALYTICS.validate(dict(hyp), source="trial hyp")
    if cfg.optimizer != "auto":  # --optimizer given: it wins over the hyp file's named optimizer
        values["optimizer"] = cfg.optimizer
    return {
        **supported_hyps(values, *installed_arguments()),
        "model": resolve_model(cfg.model), "data": str(data), "epochs": cfg.epochs,
        "imgsz": cfg.imgsz or (256 if embedded else 640), "batch": cfg.batch, "device": device,
        "workers": cfg.workers, "seed": cfg.seed, "project": str(Path(cfg.project).absolute()),
        "name": cfg.name, "exist_ok": True,
        "val": cfg.val_every > 0,  # Ultralytics validates every epoch or after the last one only
        "save": cfg.save_weights, "plots": False, "amp": cuda,
        "patience": cfg.epochs + 1,  # a trial trains its epochs: Ultralytics' own early stop stays out
    }


def metrics_of(results: Mapping[str, Any], epoch: int) -> Metrics:
    """Our Metrics (and fitness) from Ultralytics' validation results after ``epoch`` epochs."""
    values = {name: float(results.get(key, 0.0) or 0.0) for name, key in METRIC_KEYS.items()}
    status = "ok" if all(math.isfinite(v) for v in values.values()) else "diverged"
    return Metrics(**values, epochs=epoch, status=status).with_fitness()


def _finite(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, Mapping):
        return all(_finite(v) for v in value.values())
    try:
        import torch

        return bool(torch.isfinite(torch.as_tensor(value)).all())
    except (TypeError, ValueError, RuntimeError):
        return True


class _Epochs:
    """The callbacks of one trial: stop a diverged run, report every validated epoch, keep the last."""

    def __init__(self, report: Optional[Callable[[int, Metrics], Any]]) -> None:
        self.report = report
        self.last: Optional[Metrics] = None
        self.epochs = 0

    def on_train_epoch_end(self, trainer: Any) -> None:
        if not (_finite(trainer.tloss) and _finite(trainer.loss)):
            raise Diverged(f"non-finite training loss in epoch {trainer.epoch + 1}")

    def on_fit_epoch_end(self, trainer: Any) -> None:
        epoch = int(trainer.epoch) + 1
        if epoch > trainer.epochs:
            return  # Ultralytics' re-validation of best.pt after the last epoch (switched off) reports here
        self.epochs = epoch
        if not (trainer.args.val or epoch >= trainer.epochs):
            return  # no validation this epoch: its "metrics" are the previous ones
        self.last = metrics_of(trainer.metrics or {}, epoch)
        if self.report is not None:
            self.report(epoch, self.last)


def _trainer_class() -> Any:
    """``TrialTrainer``, imported once Ultralytics is in offline mode."""
    import_ultralytics()
    from evolve.execution.ultralytics_trial import TrialTrainer

    return TrialTrainer


@contextmanager
def _swapped(module: Any, name: str, value: Any) -> Iterator[None]:
    # Only where this version of Ultralytics has the attribute; another version simply keeps its own.
    if not hasattr(module, name):
        yield
        return
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextmanager
def _confined() -> Iterator[None]:
    """Switch off the start-up steps that reach the network or report elsewhere (module docstring)."""
    import_ultralytics()
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as engine_trainer
    from ultralytics.utils import callbacks

    with ExitStack() as stack:
        stack.enter_context(_swapped(engine_trainer, "check_amp", lambda model: True))
        stack.enter_context(_swapped(data_utils, "check_font", lambda *args, **kwargs: None))
        stack.enter_context(_swapped(callbacks, "add_integration_callbacks", lambda instance: None))
        yield


class _LogStream(io.TextIOBase):
    """A text stream that logs each finished line; a line redrawn with a carriage return (a progress bar)
    is logged once, in its final state."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger
        self.buffer_text = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer_text += text
        while "\n" in self.buffer_text:
            line, self.buffer_text = self.buffer_text.split("\n", 1)
            line = _TERMINAL_CODES.sub("", line.rsplit("\r", 1)[-1]).rstrip()
            if line:
                self.logger.info("%s", line)
        self.buffer_text = self.buffer_text.rsplit("\r", 1)[-1]
        return len(text)

    def flush(self) -> None:
        pass  # a progress bar flushes after every redraw; only finished lines are logged

    def drain(self) -> None:
        """Log what is left of an unfinished line."""
        line = self.buffer_text.strip()
        self.buffer_text = ""
        if line:
            self.logger.info("%s", line)


@contextmanager
def routed_output() -> Iterator[None]:
    """Send Ultralytics' log records to the root logger (the trial's log) instead of its own console
    handler, and what it prints to the log as well; everything is restored afterwards."""
    import_ultralytics()
    from ultralytics.utils import LOGGER as UL_LOGGER

    handlers, propagate, level = list(UL_LOGGER.handlers), UL_LOGGER.propagate, UL_LOGGER.level
    for handler in handlers:
        UL_LOGGER.removeHandler(handler)
    UL_LOGGER.propagate = True
    UL_LOGGER.setLevel(logging.INFO)
    stream = _LogStream(logging.getLogger(CONSOLE_LOGGER))
    try:
        with redirect_stdout(stream), redirect_stderr(stream):
            yield
    finally:
        stream.drain()
        for handler in handlers:
            UL_LOGGER.addHandler(handler)
        UL_LOGGER.propagate, UL_LOGGER.level = propagate, level


def train(hyp: Mapping[str, Any], cfg: TrialConfig | Mapping[str, Any], report: Optional[Callable[[int, Metrics], Any]] = None) -> Metrics:
    """Train ``hyp`` with Ultralytics for one trial; per-epoch reports and the result as evolve Metrics."""
    import torch

    trial = TrialConfig.from_any(cfg)
    trial_dir = Path(trial.project) / trial.name
    data, embedded = write_data(trial.data, trial_dir)
    args = trainer_args(hyp, trial, data, embedded)
    epochs = _Epochs(report)
    threads = torch.get_num_threads()  # the CPUs this trial was given (Ray sets OMP_NUM_THREADS)
    try:
        with _confined(), routed_output():
            trainer = _trainer_class()(overrides=args)
            torch.set_num_threads(threads)  # Ultralytics sets its own count from the machine's CPUs
            trainer.add_callback("on_train_epoch_end", epochs.on_train_epoch_end)
            trainer.add_callback("on_fit_epoch_end", epochs.on_fit_epoch_end)
            trainer.train()
    except Diverged as exc:
        LOGGER.warning("trial diverged: %s", exc)
        return Metrics(status="diverged", epochs=epochs.epochs)
    finally:
        torch.set_num_threads(threads)
        if not trial.save_weights:  # Ultralytics always saves the last epoch's weights
            shutil.rmtree(trial_dir / "weights", ignore_errors=True)
    if epochs.last is None:
        raise RuntimeError("Ultralytics finished without validating the model")
    return epochs.last
