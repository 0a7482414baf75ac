"""The console and the log file of a run.

On the console: log records at INFO as plain lines (``warning: ...`` for warnings), no timestamps or
module names; on a terminal each line first erases the progress line that ``Progress`` redraws in place,
or, while the live display (``LiveDisplay``, drawn with ``rich``) holds the terminal, is printed above it.
In the run folder: ``evolve.log`` with every record in full (time, level, module). Ray's start-up
warnings (token authentication, ...) are held back and summed up in one line of ours.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

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


def _console_handler() -> logging.StreamHandler | None:
    """The handler ``setup_console`` installed, if it is there."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and isinstance(handler.formatter, ConsoleFormatter):
            return handler
    return None


class _Lines:
    """A stream for a logging handler that prints each record through a rich console: while a live display
    runs, what that console prints appears above the display instead of through it."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def write(self, text: str) -> None:
        text = text.rstrip("\n")
        if text:
            self.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def flush(self) -> None:
        pass


class LiveDisplay:
    """The live progress on a terminal: a status line and one line per running trial, redrawn in place by
    ``rich`` on each ``update``; the console's log lines are printed above it while it runs."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, force_terminal=True, highlight=False)
        # No refresh thread: Progress redraws on every change and tick, and a thread would keep drawing
        # a stale ETA between them.
        self.live = Live(console=self.console, auto_refresh=False, redirect_stdout=False,
                         redirect_stderr=False)
        self._handler: logging.StreamHandler | None = None
        self._stream: Any = None
        self._prefix = ""

    def start(self) -> None:
        self.live.start()
        handler = _console_handler()
        if handler is not None:
            self._handler, self._prefix = handler, handler.formatter.prefix  # type: ignore[union-attr]
            handler.formatter.prefix = ""  # type: ignore[union-attr]
            self._stream = handler.setStream(_Lines(self.console))  # type: ignore[arg-type]

    def update(self, status: str, trials: Sequence[str]) -> None:
        from rich.console import Group
        from rich.text import Text

        lines = [Text(status, style="bold")] + [Text("  " + t) for t in trials]
        self.live.update(Group(*lines), refresh=True)

    def stop(self) -> None:
        self.live.stop()
        if self._handler is not None:
            self._handler.setStream(self._stream)
            self._handler.formatter.prefix = self._prefix  # type: ignore[union-attr]
            self._handler = None
