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
SIGHUP) are passed on, Ctrl-Z (SIGTSTP) stops both and ``fg``/``bg`` continues both, the child is ended when the parent dies (``PR_SET_PDEATHSIG``), the child's exit
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Optional

ENV = "YOLO_EVOLVE_OWN_SESSION"
AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")
# Passed on to the child; SIGHUP exists only on POSIX, where alone the work ever moves.
FORWARDED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
PR_SET_PDEATHSIG = 1  # linux/prctl.h


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


def _end_with_parent() -> Callable[[], None]:
    """The child's preexec_fn (between fork and exec): a parent killed outright (SIGKILL) leaves no training
    behind. ``prctl`` and the parent's pid are looked up before the fork."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # it died before the call above (reparented to init or a subreaper)
            os._exit(128 + int(signal.SIGTERM))

    return arm


def run_in_own_session(argv: Sequence[str]) -> int:
    """Run ``python -m detector ARGV`` in a new session, passing signals on; its exit status (128 + N for
    a child ended by signal N, as a shell reports it)."""
    env = {**os.environ, ENV: "0"}  # the child is the one that works; it must not move again
    # The interpreter's own flags (-u, -X, -W, -O) go along, as a re-run with the same command would keep them.
    command = [sys.executable, *subprocess._args_from_interpreter_flags(), "-m", "detector", *argv]
    proc = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_end_with_parent())

    def forward(signum: int, _frame: object) -> None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    def suspend(_signum: int, _frame: object) -> None:
        # Ctrl-Z reaches this process only (the child is in another session): stop the child, then stop
        # as the shell expects; on SIGCONT (fg, bg) this returns and the child goes on too.
        forward(signal.SIGSTOP, None)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        signal.signal(signal.SIGTSTP, suspend)
        forward(signal.SIGCONT, None)

    # A signal this process ignores (SIGINT in a shell's background job, SIGHUP under nohup) stays ignored:
    # the child inherits the same disposition, as the command would have had it running alone.
    handlers = {**{sig: forward for sig in FORWARDED}, signal.SIGTSTP: suspend}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
