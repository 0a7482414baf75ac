"""The entry point of an evolution: ``run(cfg)`` plans it, takes the run folder and runs the loop of its
mode (``generational`` or ``async``), then validates its winners, with the run's records logged to
``evolve.log`` in its folder; with ``--validate RUN_DIR`` it only validates a finished run (logged to
``validation.log``). Everything else lives in the subpackages (see ``evolve``)."""
from __future__ import annotations

import logging
from pathlib import Path

from evolve.config.run import EvolveConfig
from evolve.execution.runner import TrialRunner
from evolve.loops.base import Interrupted
from evolve.loops.generational import GenerationalEvolution
from evolve.loops.plan import prepare
from evolve.loops.steady import SteadyEvolution
from evolve.loops.validation import plan_after_run, plan_standalone, run_validation
from evolve.output.console import run_log
from evolve.output.rundir import RunLock, make_run_dir

LOGGER = logging.getLogger(__name__)

LOOPS = {"generational": GenerationalEvolution, "async": SteadyEvolution}


def run(cfg: EvolveConfig) -> Path:
    """Run (or resume) an evolution; returns its run folder. Raises ``Interrupted`` on Ctrl-C."""
    if cfg.validation.run_dir:
        return validate(cfg)
    plan = prepare(cfg)
    run_dir = plan.run_dir or make_run_dir(plan.cfg.project, plan.cfg.name, plan.cfg.exist_ok)
    with RunLock(run_dir), run_log(run_dir):
        try:
            # Ray starts once for the evolution and its validation: each has a TrialRunner of its own
            # (other epochs, no early stopping), and a runner leaves a Ray it did not start running.
            with TrialRunner(plan.cfg.ray, plan.cfg.trainer, plan.cfg.train, run_dir):
                LOOPS[plan.cfg.mode](plan, run_dir).run()
                vplan = plan_after_run(plan, run_dir)
                if vplan is not None:
                    run_validation(vplan)
        except KeyboardInterrupt as exc:
            LOGGER.warning("interrupted; resume with: python orchestrate.py --resume %s", run_dir)
            raise Interrupted(run_dir) from exc
    return run_dir


def validate(cfg: EvolveConfig) -> Path:
    """Validate the winners of the finished run ``cfg.validation.run_dir``; returns its folder."""
    vplan = plan_standalone(cfg)
    with RunLock(vplan.run_dir), run_log(vplan.run_dir, "validation.log"):
        try:
            run_validation(vplan)
        except KeyboardInterrupt as exc:
            LOGGER.warning("interrupted; continue with: python orchestrate.py --validate %s", vplan.run_dir)
            raise Interrupted(vplan.run_dir) from exc
    return vplan.run_dir
