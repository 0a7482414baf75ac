"""The entry point of an evolution: ``run(cfg)`` plans it (every input checked), starts or joins Ray (the
resources checked), only then takes the run folder, and runs the loop of its mode (``generational`` or
``async``), with the run's records logged to ``evolve.log`` in its folder.
Everything else lives in the subpackages (see ``evolve``)."""
from __future__ import annotations

import logging
from pathlib import Path

from evolve.config.run import EvolveConfig
from evolve.execution.cluster import ray_session
from evolve.loops.base import Interrupted
from evolve.loops.generational import GenerationalEvolution
from evolve.loops.plan import prepare
from evolve.loops.steady import SteadyEvolution
from evolve.output.console import run_log
from evolve.output.rundir import RunLock, make_run_dir

LOGGER = logging.getLogger(__name__)

LOOPS = {"generational": GenerationalEvolution, "async": SteadyEvolution}


def run(cfg: EvolveConfig) -> Path:
    """Run (or resume) an evolution; returns its run folder. Raises ``Interrupted`` on Ctrl-C."""
    plan = prepare(cfg)
    # Ray is started (or joined) and the resource flags checked before anything is written: a refused
    # command leaves no new folder and changes no byte of a resumed run.
    with ray_session(plan.cfg.ray):
        run_dir = plan.run_dir or make_run_dir(plan.cfg.project, plan.cfg.name, plan.cfg.exist_ok)
        with RunLock(run_dir), run_log(run_dir):
            try:
                LOOPS[plan.cfg.mode](plan, run_dir).run()
            except KeyboardInterrupt as exc:
                LOGGER.warning("interrupted; resume with: python orchestrate.py --resume %s", run_dir)
                raise Interrupted(run_dir) from exc
    return run_dir
