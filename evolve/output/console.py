"""The console and the log file of a run.

On the console: log records at INFO as plain lines (``warning: ...`` for warnings), no timestamps or
module names; on a terminal each line first erases the progress line that ``Progress`` redraws in place.
In the run folder: ``evolve.log`` with every record in full (time, level, module). Ray's start-up
warnings (token authentication, ...) are held back and summed up in one line of ours.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

LOGGER = logging.getLogger(__name__)

LOG_NAME = "evolve.log"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ERASE_LINE = "\r\x1b[K"  # carriage return + erase to the end of the line
# Loggers whose start-up warnings Ray prints on every ray.init (a filter acts on its own logger only).
RAY_STARTUP_LOGGERS = ("ray._private.authentication.authentication_token_setup",)


class ConsoleFormatter(logging.Formatter):
    """``message`` for INFO and below, ``warning: message`` / ``error: message`` above."""

    def __init__(self, erase: bool) -> None:
        super().__init__()
        self.prefix = ERASE_LINE if erase else ""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return self.prefix + text


def setup_console(verbose: bool = False, stream: TextIO | None = None) -> logging.Handler | None:
    """Send log records to ``stream`` (stderr) as plain lines; DEBUG with ``verbose``, else INFO.

    Like ``logging.basicConfig``, nothing is added when the root logger already has a handler: whoever
    set that up (an application embedding the CLI, a test harness) keeps the say.
    """
    root = logging.getLogger()
    if root.handlers:
        return None
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter(erase=bool(getattr(stream, "isatty", lambda: False)())))
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


class RunLogHandler(logging.FileHandler):
    """The log file of a run, which stops writing once its disk refuses (full, read-only, gone): the run
    then stops with one line on the console, not a traceback per record."""

    def handleError(self, record: logging.LogRecord) -> None:
        self.emit = lambda record: None  # type: ignore[method-assign]
        stream, self.stream = self.stream, None  # type: ignore[assignment]
        try:
            if stream is not None:
                stream.close()
        except OSError:  # its buffered lines cannot be written either
            pass

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the last buffered lines could not be written
            self.stream = None  # type: ignore[assignment]


@contextmanager
def run_log(run_dir: Path, name: str = LOG_NAME) -> Iterator[Path]:
    """Write every record of this process at INFO and above to ``run_dir/name`` while the run lasts."""
    path = Path(run_dir) / name
    handler = RunLogHandler(path, encoding="utf-8", delay=True)  # no file for a run that fails at once
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    old_level = root.level
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)


class _Held(logging.Filter):
    """Keeps the records it stops, so that they can be summed up afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            self.messages.append(record.getMessage())
            return False
        return True


@contextmanager
def quiet_ray_startup() -> Iterator[None]:
    """Hold back Ray's start-up warnings; log one line of ours saying what they were about."""
    held = _Held()
    loggers = [logging.getLogger(name) for name in RAY_STARTUP_LOGGERS]
    for lg in loggers:
        lg.addFilter(held)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(held)
    for message in held.messages:
        # Ray's lines run to several sentences and a URL; the first sentence is the news.
        LOGGER.info("Ray: %s", message.split(". ")[0].rstrip("."))
