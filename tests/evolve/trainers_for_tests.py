"""Tiny trainers for the Ray execution tests; imported by name (``trainers_for_tests:<fn>``) in workers.

Each takes ``(hyp, cfg, report)`` like ``detector.train``. Behaviour is steered by ``cfg.extra``:
``stamp_dir`` (write ``<trial>.start``/``<trial>.end`` wall-clock stamps), ``sleep`` (seconds per
epoch), ``marker_dir`` and ``driver_pid`` (the trainer that sends Ctrl-C to the driver, once).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from detector.results import Metrics


def expected_map50(hyp: dict) -> float:
    return round(hyp["lr0"] * 10, 6)


def expected_map50_95(hyp: dict) -> float:
    return round(hyp["momentum"] / 2, 6)


def _stamp(cfg, suffix: str) -> None:
    folder = cfg.extra.get("stamp_dir")
    if folder:
        Path(folder, f"{cfg.name}.{suffix}").write_text(repr(time.time()))


def linear(hyp, cfg, report=None):
    """Metrics that are a known function of the hyp; one report per epoch; optional sleep."""
    _stamp(cfg, "start")
    for epoch in range(1, cfg.epochs + 1):
        time.sleep(float(cfg.extra.get("sleep", 0.0)))
        m = Metrics(map50=expected_map50(hyp) * epoch / cfg.epochs,
                    map50_95=expected_map50_95(hyp) * epoch / cfg.epochs, epochs=epoch).with_fitness()
        if report is not None:
            report(epoch, m)
    _stamp(cfg, "end")
    Path(cfg.project, cfg.name, "weights.txt").write_text("trained\n")
    return Metrics(precision=0.5, recall=0.25, map50=expected_map50(hyp), map50_95=expected_map50_95(hyp),
                   epochs=cfg.epochs, seconds=1.5).with_fitness()


def as_mapping(hyp, cfg, report=None):
    return {"map50": expected_map50(hyp), "map50_95": expected_map50_95(hyp), "box_loss": 0.125}


def garbage(hyp, cfg, report=None):
    return "not metrics"


def raises(hyp, cfg, report=None):
    if report is not None:
        report(1, {"map50": 0.5, "map50_95": 0.25})
    raise ValueError("boom in the trainer")


def diverges(hyp, cfg, report=None):
    return Metrics(map50=0.3, map50_95=0.2, box_loss=float("nan"), epochs=2, status="diverged")


def _first_time(cfg, name: str) -> bool:
    marker = Path(cfg.extra["marker_dir"], name)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def always_dies(hyp, cfg, report=None):
    """The worker process dies on every attempt, as if its node were lost each time."""
    os._exit(1)


def interrupts_driver(hyp, cfg, report=None):
    """Sends Ctrl-C to the driver (once per marker folder), then trains like ``linear``."""
    if cfg.extra.get("driver_pid") and _first_time(cfg, "sigint"):
        os.kill(int(cfg.extra["driver_pid"]), signal.SIGINT)
    return linear(hyp, cfg, report)


def hangs(hyp, cfg, report=None):
    """Starts a child process that dies with its parent (as DDP ranks do), writes both pids to ``pid_dir``,
    then hangs."""
    from evolve.execution.ddp import _parent_death_preexec

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             preexec_fn=_parent_death_preexec(signal.SIGKILL))
    Path(cfg.extra["pid_dir"], f"{cfg.name}.pids").write_text(f"{os.getpid()} {child.pid}\n")
    time.sleep(600)


def nan_map(hyp, cfg, report=None):
    return Metrics(map50=float("nan"), map50_95=0.25, epochs=1)


def percent(hyp, cfg, report=None):
    """A wrapper reporting percentages: mAP 70 instead of 0.7."""
    return {"map50": 70.0, "map50_95": 45.0}


def broken_until_fixed(hyp, cfg, report=None):
    """Fails for one reason (as a missing package would) until the file ``cfg.extra["fix"]`` exists."""
    if not Path(cfg.extra["fix"]).exists():
        raise RuntimeError("module 'needed_package' is missing in the workers")
    return linear(hyp, cfg, report)


NOT_CALLABLE = 42


def by_trial_id(hyp, cfg, report=None):
    """Behaves as the trainer named by the trial id's prefix: ``raises-3`` runs ``raises``."""
    return globals()[cfg.name.split("-")[0]](hyp, cfg, report)


def starts_fast_or_slow(hyp, cfg, report=None):
    """A trial whose number (generation x 10 + individual, from its id gGGGiIII) is even starts fast and
    finishes poorly: fitness 0.8 + 0.001 x number at every epoch before the last, 0.3 - 0.001 x number at
    the end (so rung and final fitness rank the finished trials in opposite orders). An odd one starts
    slowly, 0.5 - 0.001 x number at every epoch before the last, and would finish at 0.6 if nothing
    stopped it. Each fast trial's rung fitness is above every earlier trial's, each slow one's below."""
    number = int(cfg.name[1:4]) * 10 + int(cfg.name[5:8])
    fast = number % 2 == 0
    for epoch in range(1, cfg.epochs + 1):
        last = epoch == cfg.epochs
        if fast:
            value = 0.3 - 0.001 * number if last else 0.8 + 0.001 * number
        else:
            value = 0.6 if last else 0.5 - 0.001 * number
        m = Metrics(map50=value, map50_95=value, epochs=epoch).with_fitness()
        if report is not None:
            report(epoch, m)
    return m
