"""SIGTERM handled like Ctrl-C: how Slurm, Kubernetes and systemd stop a job is a clean, resumable stop.

``terminate_as_interrupt`` makes SIGTERM do whatever SIGINT does at that moment: raise
``KeyboardInterrupt`` (the driver logs the resume command), or, while Ray Tune runs, trigger Tune's own
graceful stop of the running trials. ``received()`` tells the command line which signal it was, for its
exit status (128 + signal: 143 for SIGTERM, 130 for Ctrl-C). ``ray.init`` installs a SIGTERM handler of
its own (exit status 15 and a stack dump), so the driver installs this one again once Ray is up.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Callable, Iterator, Optional

_received: Optional[int] = None


def received() -> Optional[int]:
    """SIGTERM's number once this process received it inside ``terminate_as_interrupt``, else None."""
    return _received


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    global _received
    _received = signum
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)  # Ray Tune's: stops the experiment gracefully
    elif handler is not signal.SIG_IGN:
        raise KeyboardInterrupt("SIGTERM")


@contextmanager
def terminate_as_interrupt() -> Iterator[Callable[[], None]]:
    """SIGTERM raises KeyboardInterrupt (or stops Tune) while inside; yields a function that installs the
    handler again (after Ray replaced it). Does nothing outside the main thread, where signals cannot be
    handled."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    global _received
    _received = None
    old_term = signal.getsignal(signal.SIGTERM)

    def install() -> None:
        signal.signal(signal.SIGTERM, _on_sigterm)

    install()
    try:
        yield install
    finally:
        signal.signal(signal.SIGTERM, old_term if old_term is not None else signal.SIG_DFL)


__all__ = ["received", "terminate_as_interrupt"]
