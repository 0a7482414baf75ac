"""Tests of detector/session.py: ``python -m detector`` works in a session of its own where the kernel groups
by session, passes signals on, leaves nothing behind when killed, and stays put when it should."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from detector import session

ROOT = Path(__file__).resolve().parents[2]
AUTOGROUP_ON = session.AUTOGROUP.is_file() and session.AUTOGROUP.read_text().strip() == "1"
needs_autogroup = pytest.mark.skipif(not AUTOGROUP_ON, reason="the kernel has no autogroup scheduling, or it is off")


def _wanted_in_child(tmp_path: Path, autogroup: str, env: dict, nice: int = 0) -> bool:
    """``session.wanted`` as a process that does not lead its session sees it, with its own env and file."""
    flag = tmp_path / "autogroup"
    flag.write_text(autogroup)
    code = ("import os, sys; from pathlib import Path; from detector import session; os.nice(int(sys.argv[2])); "
            "print(session.wanted(dict(os.environ), Path(sys.argv[1])))")
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", session.ENV)}, "PYTHONPATH": str(ROOT),
           **env}
    out = subprocess.run([sys.executable, "-c", code, str(flag), str(nice)], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return out.strip() == "True"


def test_the_work_moves_only_where_autogroup_is_on_and_nothing_says_otherwise(tmp_path):
    assert _wanted_in_child(tmp_path, "1\n", {})
    assert not _wanted_in_child(tmp_path, "0\n", {})  # autogroup off: a new session gains nothing
    assert not _wanted_in_child(tmp_path, "1\n", {session.ENV: "0"})  # turned off
    assert not _wanted_in_child(tmp_path, "1\n", {"RANK": "1"})  # a DDP rank: its launcher owns it
    assert not _wanted_in_child(tmp_path, "1\n", {}, nice=5)  # asked to yield: a new group would not
    assert not session.wanted({}, tmp_path / "missing")  # no such kernel setting
    # A session leader has a session of its own already.
    code = "from detector import session; print(session.wanted({}, session.AUTOGROUP))"
    leader = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=60, start_new_session=True, check=True)
    assert leader.stdout.strip() == "False"


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@contextlib.contextmanager
def _running(tiny_data: Path, tmp_path: Path, epochs: int, under: Sequence[str] = (),
             **env: str) -> Iterator[subprocess.Popen]:
    """``python -m detector train`` of ``epochs`` on the tiny set, run by the command ``under`` if given;
    killed (and reaped) when the block ends, whatever happened in it."""
    argv = [*under, sys.executable, "-m", "detector", "train", "--data", str(tiny_data), "--imgsz", "64",
            "--batch", "8", "--epochs", str(epochs), "--workers", "0", "--project", str(tmp_path / "runs"),
            "--quiet", "--no-save", "--threads", "1"]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_a_terminal_job)
    try:
        yield proc
    finally:
        proc.kill()
        proc.communicate()


def _as_a_terminal_job() -> None:
    # As a shell with job control starts a command: its own process group, whose parent (this test) is in
    # another group of the same session, so the group is not orphaned and Ctrl-Z may stop it; SIGINT and
    # SIGTSTP at their defaults, which a test runner started in the background may have ignored.
    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_DFL)


def _state(pid: int) -> str:
    """The process's state letter (R, S, T, Z ...), or X when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def _wait_state(pid: int, states: str, timeout: float = 20.0) -> str:
    """The state of ``pid`` once it is one of ``states``, or whatever it is after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _state(pid) not in states:
        time.sleep(0.05)
    return _state(pid)


def _gone(pid: int, timeout: float = 30.0) -> bool:
    return _wait_state(pid, "ZX", timeout) in "ZX"  # gone, or ended and not yet reaped


def _worker(pid: int, timeout: float = 60.0) -> int:
    """The first child of ``pid``, once it has one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = _children(pid)
        if kids:
            return kids[0]
        assert _state(pid) not in "ZX", f"{pid} ended without a child"
        time.sleep(0.05)
    raise AssertionError("no child process")


def _finished_ok(proc: subprocess.Popen) -> None:
    """The command ends by itself with status 0, its metrics line on its stdout."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["status"] == "ok"


def _interrupted(proc: subprocess.Popen, worker: int) -> None:
    """Ctrl-C ends the command with the status a shell reports for SIGINT, and its training with it."""
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT
    assert _gone(worker)


@needs_autogroup
def test_training_runs_in_a_session_of_its_own_and_reports_through_the_command(tiny_data, tmp_path):
    with _running(tiny_data, tmp_path, epochs=1) as proc:
        worker = _worker(proc.pid)
        assert os.getsid(worker) == worker != os.getsid(proc.pid)  # it leads a new session
        _finished_ok(proc)  # the child's stdout and status are the command's


@needs_autogroup
def test_ctrl_c_reaches_the_training_and_its_status_is_the_command_s(tiny_data, tmp_path):
    with _running(tiny_data, tmp_path, epochs=200) as proc:
        worker = _worker(proc.pid)
        time.sleep(1.0)
        _interrupted(proc, worker)


@needs_autogroup
def test_a_command_killed_outright_leaves_no_training_behind(tiny_data, tmp_path):
    with _running(tiny_data, tmp_path, epochs=200) as proc:
        worker = _worker(proc.pid)
        try:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            assert _gone(worker), "the training outlived its command"
        finally:
            if not _gone(worker, 0.1):
                os.kill(worker, signal.SIGKILL)


def test_turned_off_the_command_trains_in_its_own_process(tiny_data, tmp_path):
    with _running(tiny_data, tmp_path, epochs=1, **{session.ENV: "0"}) as proc:
        time.sleep(1.0)
        assert _children(proc.pid) == []
        _finished_ok(proc)


@needs_autogroup
def test_ctrl_z_stops_the_training_too_and_fg_continues_it(tiny_data, tmp_path):
    with _running(tiny_data, tmp_path, epochs=200) as proc:
        worker = _worker(proc.pid)
        proc.send_signal(signal.SIGTSTP)  # what the terminal sends the command's process group
        assert _wait_state(proc.pid, "T") == "T" and _wait_state(worker, "T") == "T"
        proc.send_signal(signal.SIGCONT)  # fg
        assert _wait_state(proc.pid, "RS") in "RS" and _wait_state(worker, "RS") in "RS"
        _interrupted(proc, worker)


# A stand-in for a shell's background job: SIGINT ignored, then the command run under it.
IGNORING_SHELL = [sys.executable, "-c", ("import signal, subprocess, sys; signal.signal(signal.SIGINT, "
                                         "signal.SIG_IGN); sys.exit(subprocess.call(sys.argv[1:]))")]


@needs_autogroup
def test_a_signal_the_command_ignores_stays_ignored_by_the_training(tiny_data, tmp_path):
    with _running(tiny_data, tmp_path, epochs=1, under=IGNORING_SHELL) as proc:
        command = _worker(proc.pid)
        _worker(command)  # training has started
        os.kill(command, signal.SIGINT)  # ignored, as the command alone would ignore it
        _finished_ok(proc)
