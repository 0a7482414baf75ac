"""Tests of evolve/output/console.py: plain console lines, the full evolve.log, Ray's start-up warning
summed up in one line of ours, and the progress line redrawn in place on a terminal only."""
from __future__ import annotations

import io
import logging

from evolve.contract import Metrics
from evolve.output.console import ERASE_LINE, ConsoleFormatter, quiet_ray_startup, run_log, setup_console
from evolve.output.progress import Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("evolve.loops.generational", level, __file__, 1, msg, (), None)


def test_console_lines_have_no_time_or_module_and_warnings_say_so():
    plain = ConsoleFormatter(erase=False)
    assert plain.format(record(logging.INFO, "generation 0 done")) == "generation 0 done"
    assert plain.format(record(logging.WARNING, "no trial finished")) == "warning: no trial finished"
    # On a terminal each line first erases the progress line drawn in place.
    assert ConsoleFormatter(erase=True).format(record(logging.INFO, "x")) == ERASE_LINE + "x"


def test_setup_console_leaves_an_existing_set_up_alone():
    root = logging.getLogger()
    if root.handlers:  # under pytest the capture handlers are there: nothing is added
        before = list(root.handlers)
        assert setup_console(stream=io.StringIO()) is None and root.handlers == before


def test_run_log_keeps_full_records_in_the_run_folder(tmp_path):
    logger = logging.getLogger("evolve.loops.generational")
    with run_log(tmp_path) as path:
        logger.info("generation %d done", 3)
    logger.info("after the run")
    text = path.read_text()
    assert path.name == "evolve.log"
    assert "INFO evolve.loops.generational: generation 3 done" in text and "after the run" not in text


def test_run_log_writes_no_file_when_nothing_is_logged(tmp_path):
    with run_log(tmp_path) as path:
        pass
    assert not path.exists()


def test_ray_startup_warnings_become_one_line_of_ours(caplog):
    caplog.set_level(logging.INFO)
    ray_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    with quiet_ray_startup():
        ray_logger.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled "
                           "to opt out. For more information, see https://docs.ray.io")
    messages = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [("evolve.output.console", logging.INFO,
                         "Ray: Token authentication is enabled for this Ray cluster")]


def test_progress_redraws_one_line_on_a_terminal_and_logs_plain_lines_elsewhere():
    tty = Tty()
    progress = Progress(2, stream=tty, log=lambda line: None)
    progress.start_generation(0, 2)
    progress.started()
    progress.finished("g000i000", Metrics(map50=0.5, map50_95=0.3).with_fitness(), 2.0)
    text = tty.getvalue()
    assert "\n" not in text and text.count("\r") >= 3 and "trials 1/0/0" in text
    lines: list[str] = []
    plain = Progress(2, stream=io.StringIO(), log=lines.append)
    plain.start_generation(0, 1)
    plain.finished("g000i000", Metrics(status="failed"), 1.0)
    assert lines == ["gen 1/2 | trials 1/0/1 | best - | ETA 1s | g000i000 failed fitness 0.00000"]


def test_the_run_log_on_a_full_disk_goes_quiet_without_tracebacks(tmp_path, capsys):
    (tmp_path / "evolve.log").symlink_to("/dev/full")  # every write: ENOSPC
    logger = logging.getLogger("evolve.test_full_log")
    with run_log(tmp_path):
        logger.warning("first")
        logger.error("second")
    assert capsys.readouterr().err.count("Logging error") == 0
