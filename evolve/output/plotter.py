"""Drawing the plots of a running evolution in a background thread (``Plotter``).

Thirty panels take seconds to draw. In the driver's thread that would hold up Ray Tune's event loop (no
trial started, no result recorded meanwhile), so the loops hand the drawing to this thread.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

from evolve.output.plots import plot_evolve, plot_fitness

LOGGER = logging.getLogger(__name__)


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

    def request(self) -> None:
        """Draw the plots of the records as they are now, soon."""
        if not self.csv_path.is_file():
            return
        data = self.csv_path.read_bytes()
        with self._lock:
            self._pending = data
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="evolve-plots", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Wait until every requested drawing is done."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def _work(self) -> None:
        while True:
            with self._lock:
                data, self._pending = self._pending, None
                if data is None:
                    self._thread = None
                    return
            self._draw(data)

    def _draw(self, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix="evolve-plot-", suffix=".csv")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            for plot, name in ((plot_evolve, "evolve.png"), (plot_fitness, "fitness.png")):
                try:
                    plot(tmp, self.run_dir / name)
                except Exception as exc:  # a plot is a convenience; it must never end a run of GPU-days
                    LOGGER.warning("could not draw %s: %s: %s", name, type(exc).__name__, exc)
        finally:
            os.unlink(tmp)
