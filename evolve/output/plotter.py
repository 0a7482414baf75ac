"""Drawing the plots of a running evolution in a background thread (``Plotter``).

Thirty panels take seconds to draw. In the driver's thread that would hold up Ray Tune's event loop (no
trial started, no result recorded meanwhile), so the loops hand the drawing to this thread. The thread
must be done before the process ends, whichever way it ends: a drawing still running while the
interpreter and Ray's core worker shut down aborts the process (SIGABRT, a C++ stack dump) and leaves its
temporary CSV behind, so the driver closes the plotter on every exit path (``close``).
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from evolve.output.plots import plot_evolve, plot_fitness

LOGGER = logging.getLogger(__name__)

# How long an ending run waits for a drawing in progress: one drawing of 30 panels takes seconds.
CLOSE_TIMEOUT_S = 120.0


class Plotter:
    """Draws ``evolve.png`` and ``fitness.png`` in a background thread from a snapshot of ``evolve.csv``.

    Thirty panels take seconds to draw. In the driver's thread that would hold up Ray Tune's event loop
    (no trial started, no result recorded meanwhile); the snapshot is taken in the driver's thread, so the
    drawing never sees a row being written. Requests made while a drawing runs merge into one more.
    """

    def __init__(self, run_dir: Path, csv_path: Path) -> None:
        self.run_dir = run_dir
        self.csv_path = csv_path
        self._lock = threading.Lock()
        self._pending: bytes | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._tmp: str | None = None  # the snapshot file of the drawing in progress

    def request(self) -> None:
        """Draw the plots of the records as they are now, soon (nothing once closed)."""
        if self._closed or not self.csv_path.is_file():
            return
        data = self.csv_path.read_bytes()
        with self._lock:
            self._pending = data
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="evolve-plots", daemon=True)
                self._thread.start()

    def close(self, finish: bool = True, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """End the drawing thread; True when it has ended.

        ``finish``: draw what was requested (a run that ended well); else drop what has not started (a run
        that stops: only the drawing in progress is waited for). Ctrl-C while waiting drops the rest too,
        but the wait goes on, bounded by ``timeout``: a process must not end under a running drawing. A
        drawing that outlasts it is abandoned with a warning and its snapshot file removed.
        """
        self._closed = True
        if not finish:
            with self._lock:
                self._pending = None
        deadline = time.monotonic() + timeout
        while True:
            thread = self._thread
            if thread is None or not thread.is_alive():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                thread.join(min(left, 0.5))
            except KeyboardInterrupt:
                with self._lock:
                    self._pending = None
                LOGGER.warning("finishing the plot being drawn (a few seconds) before stopping")
        LOGGER.warning("plots still drawing after %.0f s; abandoned (evolve.png may be out of date)", timeout)
        tmp = self._tmp
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False

    def _work(self) -> None:
        while True:
            with self._lock:
                data, self._pending = self._pending, None
                if data is None:
                    self._thread = None
                    return
            self._draw(data)

    def _draw(self, data: bytes) -> None:
        try:
            fd, tmp = tempfile.mkstemp(prefix="evolve-plot-", suffix=".csv")
        except OSError as exc:  # a full temp folder: no plots this time, the run goes on
            LOGGER.warning("could not draw the plots: %s", exc)
            return
        self._tmp = tmp
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            for plot, name in ((plot_evolve, "evolve.png"), (plot_fitness, "fitness.png")):
                try:
                    plot(tmp, self.run_dir / name)
                except Exception as exc:  # a plot is a convenience; it must never end a run of GPU-days
                    LOGGER.warning("could not draw %s: %s: %s", name, type(exc).__name__, exc)
        except OSError as exc:  # the snapshot could not be written (a full temp folder)
            LOGGER.warning("could not draw the plots: %s", exc)
        finally:
            self._tmp = None
            try:
                os.unlink(tmp)
            except OSError:
                pass
