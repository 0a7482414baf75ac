"""Why ``python -m detector`` does its work in a session of its own, and how it stays one command.

Linux's autogroup scheduler (``/proc/sys/kernel/sched_autogroup_enabled``, on in most distributions'
kernels) shares the CPUs fairly between sessions first and between the threads within a session second.
A training process in the same session as another CPU-bound job (a batch script starting both, a Ray
worker, a notebook's subprocesses) therefore competes thread against thread: on 2 cores beside a process
computing with 2 threads it gets about 2/3 of a core, and one epoch took 1.54-1.66x its idle time even at
one thread (``detector/threads.py`` decides the count). In a session of its own the kernel gives it its
group's share, half the machine against that whole session (docs/benchmarks.md, "busy machine").

So the command re-runs itself as a child in a new session and stays as its parent only to keep what a
session boundary would cut: the signals a terminal or a supervisor sends it (SIGINT from Ctrl-C, SIGTERM,
SIGHUP) are passed on, the child is ended when the parent dies (``PR_SET_PDEATHSIG``), the child's exit
status is the command's, and stdin, stdout and stderr are the same files.

It is not done where it cannot help or would undo a choice: without autogroup (or with it off); in a DDP
rank (``RANK`` set: the launcher owns its ranks); at a lowered priority (nice > 0: a new group would
restore the share that was given away); when the process already leads its session; with
``YOLO_EVOLVE_OWN_SESSION=0``. Code that calls ``detector.train.train`` in its own process is not moved.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

ENV = "YOLO_EVOLVE_OWN_SESSION"
AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


def wanted(env: Optional[Mapping[str, str]] = None, autogroup: Path = AUTOGROUP) -> bool:
    """Whether this process should move its work into a session of its own (see the module's docstring)."""
    env = os.environ if env is None else env
    if env.get(ENV, "1") == "0" or "RANK" in env or not hasattr(os, "setsid"):
        return False
    try:
        if autogroup.read_text().strip() != "1" or os.getpriority(os.PRIO_PROCESS, 0) > 0:
            return False
    except OSError:
        return False
    return os.getsid(0) != os.getpid()


def _end_with_parent() -> None:
    # Runs in the child between fork and exec: a parent killed outright (SIGKILL) leaves no training behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the line above
        os._exit(128 + signal.SIGTERM)


def run_in_own_session(argv: Sequence[str]) -> int:
    """Run ``python -m detector ARGV`` in a new session, passing signals on; its exit status (128 + N for
    a child ended by signal N, as a shell reports it)."""
    env = {**os.environ, ENV: "0"}  # the child is the one that works; it must not move again
    proc = subprocess.Popen([sys.executable, "-m", "detector", *argv], env=env, start_new_session=True,
                            preexec_fn=_end_with_parent)

    def forward(signum: int, _frame: object) -> None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
