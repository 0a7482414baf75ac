"""The entry point of an evolution: ``run(cfg)`` plans it (every input checked), starts or joins Ray (the
resources checked), only then takes the run folder, runs the loop of its mode (``generational`` or
``async``) and then validates its winners, with the run's records logged to ``evolve.log`` in its folder,
and last writes ``report.html``; with ``--validate RUN_DIR`` it only validates a finished run (logged to
``validation.log``), with ``--report RUN_DIR`` it only writes that run's report. Everything
else lives in the subpackages (see ``evolve``)."""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from evolve.config.run import EvolveConfig
from evolve.errors import RunStopped
from evolve.execution.cluster import data_paths, head_watch, ray_session
from evolve.loops.base import Interrupted
from evolve.loops.generational import GenerationalEvolution
from evolve.loops.plan import Plan, prepare
from evolve.loops.steady import SteadyEvolution
from evolve.loops.winners import ValidationPlan, plan_after_run, plan_standalone, run_validation
from evolve.output.console import run_log
from evolve.output.report import REPORT_NAME, write_report
from evolve.output.rundir import RunLock, checkpoint_path, make_run_dir
from evolve.signals import terminate_as_interrupt

LOGGER = logging.getLogger(__name__)

LOOPS = {"generational": GenerationalEvolution, "async": SteadyEvolution}
# A run folder that cannot be written (permissions, a full or read-only disk) stops the run resumably.
WRITE_ERRORS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT}
HEAD_LOST_EXIT = 3  # the command line's status for a run that stopped itself resumably (RunStopped)


def run(cfg: EvolveConfig) -> Path:
    """Run (or resume) an evolution, or with ``cfg.validation.run_dir`` validate a finished one; returns
    its run folder.

    Raises ``Interrupted`` on Ctrl-C or SIGTERM, ``RunStopped`` when the run stopped itself (trials all
    failing for one reason, a run folder that cannot be written), after logging the resume command.
    """
    if cfg.report:  # only reads the run's files: no Ray, no lock, so it works while the run goes on
        cfg.validate()
        return write_report(cfg.report).parent
    with terminate_as_interrupt() as catch_sigterm:
        if cfg.validation.run_dir:
            vplan = plan_standalone(cfg)
            with ray_session(vplan.plan.cfg.ray):
                catch_sigterm()
                return _validate(vplan)
        plan = prepare(cfg)
        # Ray is started (or joined) and the resource flags checked before anything is written: a refused
        # command leaves no new folder and changes no byte of a resumed run. It serves the evolution and
        # its validation alike.
        with ray_session(plan.cfg.ray, data_paths(plan.cfg.train.data)):
            catch_sigterm()  # ray.init put its own SIGTERM handler in place
            run_dir = plan.run_dir or make_run_dir(plan.cfg.project, plan.cfg.name, plan.cfg.exist_ok)
            with RunLock(run_dir) as lock, run_log(run_dir), \
                    head_watch(plan.cfg.ray, _head_lost(run_dir, lock)):
                _run_loop(plan, run_dir)
    return run_dir


def _head_lost(run_dir: Path, lock: RunLock):
    """What happens when the cluster's head is gone: one line with the resume command, and the process
    ends. It cannot end any other way: the main thread is blocked in Ray's client, which would end the
    process itself a minute later, with status 1 and no word on how to continue. The records are whole
    (appends are fsync'd, files replaced atomically); trials in flight have no row and run again on
    resume."""
    def stop(address: str) -> None:
        LOGGER.error("the Ray head at %s is gone; start the cluster again, then resume with: python "
                     "orchestrate.py --resume %s --address NEW_HEAD_IP:PORT", address, run_dir)
        lock.release()  # the new driver may get this pid in another PID namespace or machine
        logging.shutdown()
        os._exit(HEAD_LOST_EXIT)

    return stop


def resume_hint(run_dir: Path) -> str:
    """What to do after a stop: resume when the run saved its first checkpoint, else start again."""
    if checkpoint_path(run_dir).is_file():
        return f"resume with: python orchestrate.py --resume {run_dir}"
    return "nothing to resume yet (stopped before the first checkpoint); run the same command again"


def _run_loop(plan: Plan, run_dir: Path) -> None:
    try:
        evolution = LOOPS[plan.cfg.mode](plan, run_dir)
        try:
            evolution.run()
        finally:
            # Whichever way the loop ended, no drawing may outlive it: the process ends soon after.
            evolution.plotter.close(finish=False)
        vplan = plan_after_run(plan, run_dir)
        if vplan is not None:
            run_validation(vplan)
        _refresh_report(run_dir)
    except KeyboardInterrupt as exc:
        LOGGER.warning("interrupted; %s", resume_hint(run_dir))
        raise Interrupted(run_dir) from exc
    except RunStopped as exc:
        LOGGER.error("%s", exc)
        raise
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        # The records written so far are whole (appends are fsync'd, files replaced atomically).
        where = exc.filename or run_dir
        LOGGER.error("%s: cannot write (%s); free or fix it, then %s", where, exc.strerror, resume_hint(run_dir))
        raise RunStopped(f"{where}: cannot write ({exc.strerror})") from None


def _validate(vplan: ValidationPlan) -> Path:
    """Validate the winners of a finished run on its own; returns its folder."""
    with RunLock(vplan.run_dir), run_log(vplan.run_dir, "validation.log"):
        try:
            run_validation(vplan)
            _refresh_report(vplan.run_dir)
        except KeyboardInterrupt as exc:
            LOGGER.warning("interrupted; continue with: python orchestrate.py --validate %s", vplan.run_dir)
            raise Interrupted(vplan.run_dir) from exc
    return vplan.run_dir


def _refresh_report(run_dir: Path) -> None:
    """Write report.html; a report that cannot be made is a warning, never the end of a finished run."""
    try:
        write_report(run_dir)
    except Exception as exc:
        LOGGER.warning("%s not written: %s (retry with: python orchestrate.py --report %s)",
                       Path(run_dir) / REPORT_NAME, exc, run_dir)
