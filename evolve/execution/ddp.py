"""One evolution trial trained as an N-process DDP job on the trial's own resources.

``run_ddp`` is called inside a Ray Tune trial (or anywhere else) in place of calling the trainer directly.
It writes a JSON job file into ``<project>/<name>/ddp/`` and starts
``python -m torch.distributed.run --standalone --nproc-per-node N -m evolve.execution.ddp_rank
<job.json>`` in a session of its own. Each rank (``evolve.execution.ddp_rank``) joins the process
group (NCCL on CUDA, gloo on CPU), resolves the trainer and trains; rank 0 appends one JSON line per reported epoch to ``reports.jsonl`` and
writes its final Metrics to ``result.json``. The caller's process tails ``reports.jsonl`` and forwards
each epoch to its own ``report`` callback, so per-epoch ``tune.report`` still happens in the trial.

Files in the job folder: ``job.json``, ``reports.jsonl``, ``result.json``, ``rank<r>.log`` (everything a
rank prints or logs), ``rank<r>.error`` (a rank that raised) and ``launcher.log`` (torchrun itself).

Nothing outlives the job: the launcher and every rank are killed on failure, timeout, an exception in
the caller or KeyboardInterrupt, and ranks die with their launcher (Linux parent-death signal).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from evolve.config.trial import TrialConfig
from evolve.contract import Metrics
from evolve.errors import ConfigError
from evolve.execution.trainers import trainer_for

LOGGER = logging.getLogger(__name__)

Report = Callable[[int, Metrics], None]

POLL_S = 0.2  # how often the caller looks for new epoch reports and for the launcher's exit
SCAN_EVERY = 5  # polls between two walks of /proc for the job's processes
TERM_GRACE_S = 10.0  # torchrun gets this long to stop its ranks after SIGTERM before everything is killed
TAIL_LINES = 30  # lines of the failing rank's log quoted in the error
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Variables of an enclosing torchrun or DDP job that would confuse the nested launch.
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
            "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
            "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_ERROR_FILE",
            "TORCHELASTIC_USE_AGENT_STORE")


# -- the caller's side ---------------------------------------------------------------------------------
def run_ddp(trainer_spec: str, hyp: dict[str, Any], cfg: TrialConfig, nproc: int,
            report: Optional[Report] = None, timeout: Optional[float] = None, *,
            cpus: Optional[float] = None) -> Metrics:
    """Train ``hyp`` with the trainer named ``trainer_spec`` as ``nproc`` local DDP processes.

    ``report(epoch, metrics)`` is called in this process for every epoch rank 0 reports. ``cpus`` is the
    number of CPUs the job may use (default: the Ray worker's assigned CPUs, else this process's CPU
    affinity); each rank gets ``OMP_NUM_THREADS = max(1, cpus // nproc)``. Returns rank 0's final
    Metrics. Raises ConfigError for a bad spec, nproc or config, and RuntimeError (with the tail of the
    failing rank's log) when a rank fails or ``timeout`` seconds pass.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc {nproc!r}: the number of DDP processes must be a whole number >= 1")
    trainer_for(trainer_spec).function()  # a bad spec is the user's error, not a failed rank
    cfg = _claim_run_folder(TrialConfig.from_any(cfg))
    job_dir = Path(cfg.project) / cfg.name / "ddp"
    job_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*job_dir.glob("rank*.*"), *(job_dir / n for n in ("reports.jsonl", "result.json"))]:
        stale.unlink(missing_ok=True)
    try:
        job_text = json.dumps({"trainer": trainer_spec, "hyp": dict(hyp), "cfg": cfg.to_dict()}, indent=1)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{trainer_spec}: hyp and TrialConfig (extra included) must be JSON-serialisable "
                          f"to run under DDP: {exc}") from exc
    job_path = job_dir / "job.json"
    job_path.write_text(job_text)

    threads = max(1, int((cpus if cpus is not None else _available_cpus()) // nproc))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc-per-node", str(nproc), "--max-restarts", "0", "--monitor-interval", "0.5",
           "--log-dir", str(job_dir / "torchelastic"), "-m", "evolve.execution.ddp_rank",
           str(job_path.resolve())]
    LOGGER.info("DDP trial: %d processes, %d threads each, job %s", nproc, threads, job_path)
    tracker = _Processes()
    with (job_dir / "launcher.log").open("wb") as launcher_log:
        proc = subprocess.Popen(cmd, env=_child_env(threads), stdin=subprocess.DEVNULL, stdout=launcher_log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_parent_death_preexec(signal.SIGTERM))
    tail = _ReportTail(job_dir / "reports.jsonl")
    deadline = None if timeout is None else time.monotonic() + timeout
    polls = 0
    try:
        while True:
            if polls % SCAN_EVERY == 0:
                tracker.scan(proc.pid)
            polls += 1
            rc = proc.poll()
            for epoch, metrics in tail.read():
                if report is not None:
                    report(epoch, metrics)
            if rc is not None:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise RuntimeError(f"DDP trial timed out after {timeout:g} s ({nproc} processes, job "
                                   f"{job_path}){_tail_text(job_dir, nproc)}")
            time.sleep(POLL_S)
    except BaseException:
        _terminate(proc, tracker)
        raise
    _terminate(proc, tracker)  # stragglers: data-loader workers or a rank that ignored its launcher
    if rc != 0:
        raise RuntimeError(_failure_message(job_dir, nproc, rc))
    result = job_dir / "result.json"
    if not result.exists():
        raise RuntimeError(f"DDP trial ended without a result from rank 0 ({result} missing)"
                           f"{_tail_text(job_dir, nproc)}")
    return Metrics.from_any(json.loads(result.read_text()))


def _claim_run_folder(cfg: TrialConfig) -> TrialConfig:
    """Fix the run folder before the ranks start, so the job files and the trainer's outputs share it."""
    base = Path(cfg.project) / cfg.name
    name = cfg.name
    if not cfg.exist_ok and base.exists():
        n = 2
        while base.with_name(f"{base.name}{n}").exists():
            n += 1
        name = f"{cfg.name}{n}"
    return cfg.replace(name=name, exist_ok=True)


def _available_cpus() -> float:
    if "ray" in sys.modules:
        try:
            import ray

            if ray.is_initialized():
                assigned = ray.get_runtime_context().get_assigned_resources().get("CPU")
                if assigned:
                    return float(assigned)
        except Exception:  # the driver process or an old Ray: fall back to what the OS grants
            LOGGER.debug("no Ray CPU assignment visible", exc_info=True)
    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return float(os.cpu_count() or 1)


def _child_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    # A trainer importable here only through this process's sys.path (the working folder, a test folder)
    # must be importable in the ranks too; the interpreter's own folders are theirs already.
    prefixes = tuple(str(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    extra = [str(Path(p or ".").resolve()) for p in sys.path]
    extra = [p for p in extra if os.path.isdir(p) and not p.startswith(prefixes)]
    old = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(old + extra))
    return env


def prctl_function() -> Optional[Callable[..., int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _parent_death_preexec(sig: signal.Signals) -> Optional[Callable[[], None]]:
    """A preexec_fn asking the kernel to send ``sig`` to the child if this process dies (Ray kills a
    stopped trial's worker outright); resolved before the fork so the child only makes one call."""
    prctl = prctl_function()
    if prctl is None:
        return None

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return arm


class _ReportTail:
    """Reads the complete lines rank 0 has appended to the reports file since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read(self) -> list[tuple[int, Metrics]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            if line.strip():
                row = json.loads(line)
                out.append((int(row["epoch"]), Metrics.from_any(row["metrics"])))
        return out


class _Processes:
    """Every process seen below the launcher, by (pid, start time), so that none outlives the job even
    after the launcher has gone and its children were re-parented (torchrun gives each rank a session)."""

    def __init__(self) -> None:
        self.seen: dict[int, str] = {}

    def scan(self, root: int) -> None:
        children: dict[int, list[int]] = {}
        starts: dict[int, str] = {}
        try:
            entries = [int(n) for n in os.listdir("/proc") if n.isdigit()]
        except OSError:  # no /proc: the launcher's process group and the ranks' parent-death signal remain
            entries = []
        for entry in entries:
            stat = _stat(entry)
            if stat is not None:
                children.setdefault(stat[1], []).append(entry)
                starts[entry] = stat[2]
        stack = list(children.get(root, []))
        while stack:
            pid = stack.pop()
            self.seen.setdefault(pid, starts[pid])
            stack.extend(children.get(pid, []))

    def kill_all(self) -> None:
        for pid, start in self.seen.items():
            stat = _stat(pid)
            if stat is not None and stat[2] == start and stat[0] != "Z":
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def _stat(pid: int) -> Optional[tuple[str, int, str]]:
    """(state, parent pid, start time) of a live process, from /proc; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), fields[19]


def _terminate(proc: subprocess.Popen, tracker: _Processes) -> None:
    """Stop the launcher (it stops its ranks on SIGTERM), then kill whatever is left, whatever happens."""
    try:
        tracker.scan(proc.pid)
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                LOGGER.warning("DDP launcher %d ignored SIGTERM for %.0f s: killing it", proc.pid,
                               TERM_GRACE_S)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
        tracker.kill_all()
        if proc.poll() is None:
            proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _tail_text(job_dir: Path, nproc: int) -> str:
    logs = [job_dir / f"rank{r}.log" for r in range(nproc)]
    return "".join(f"\n--- last lines of {log} ---\n{_log_tail(log, 10)}" for log in logs if log.exists())


def _failure_message(job_dir: Path, nproc: int, rc: int) -> str:
    """Name the rank that failed first, its error, and the end of its log (the launcher's if no rank
    got as far as writing one)."""
    errors = [json.loads(path.read_text()) for path in job_dir.glob("rank*.error")]
    if errors:
        first = min(errors, key=lambda e: e["time"])
        rank = int(first["rank"])
        log = job_dir / f"rank{rank}.log"
        return (f"DDP trial failed on rank {rank} of {nproc}: {first['error']}\n"
                f"--- last lines of {log} ---\n{_log_tail(log)}")
    launcher = job_dir / "launcher.log"
    return (f"DDP trial failed (launcher exit code {rc}, no rank reported an error)\n"
            f"--- last lines of {launcher} ---\n{_log_tail(launcher)}{_tail_text(job_dir, nproc)}")
