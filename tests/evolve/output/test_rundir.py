"""Tests of evolve.rundir: run-folder naming, the run lock, atomic writes and checkpoints."""
from __future__ import annotations

import errno
import logging
import os
import pickle
import socket
import subprocess
import sys

import pytest

from evolve.errors import ConfigError
from evolve.output.rundir import (
    RunLock,
    atomic_write_text,
    checkpoint_path,
    load_checkpoint,
    make_run_dir,
    save_checkpoint,
)


def test_run_dirs_increment_exp_exp2_exp3(tmp_path):
    project = tmp_path / "runs" / "evolve"
    assert make_run_dir(project) == project / "exp"
    assert make_run_dir(project) == project / "exp2"
    assert make_run_dir(project, "exp") == project / "exp3"
    assert sorted(p.name for p in project.iterdir()) == ["exp", "exp2", "exp3"]
    assert make_run_dir(project, "exp", exist_ok=True) == project / "exp"
    assert make_run_dir(project, "new", exist_ok=True) == project / "new"
    assert (project / "new").is_dir()
    assert make_run_dir(project, "mine") == project / "mine"


def test_run_dir_name_taken_by_a_file(tmp_path):
    (tmp_path / "exp").write_text("x")
    with pytest.raises(ConfigError, match=r"exp: exists and is not a folder"):
        make_run_dir(tmp_path, "exp")


def test_lock_holds_pid_and_host_and_is_released(tmp_path):
    lock_file = tmp_path / ".lock"
    with RunLock(tmp_path) as lock:
        assert lock.held
        assert lock_file.read_text() == f"pid={os.getpid()}\nhost={socket.gethostname()}\n"
    assert not lock_file.exists()
    with pytest.raises(RuntimeError):
        with RunLock(tmp_path):
            raise RuntimeError("trial crashed")
    assert not lock_file.exists()


def test_lock_refuses_a_live_holder_and_leaves_its_lock(tmp_path):
    lock_file = tmp_path / ".lock"
    with RunLock(tmp_path):
        before = lock_file.read_bytes()
        with pytest.raises(ConfigError, match=rf"is in use by a running orchestration \(pid {os.getpid()}\)"):
            RunLock(tmp_path).acquire()
        assert lock_file.read_bytes() == before
    assert not lock_file.exists()


def test_lock_of_another_host_is_refused(tmp_path):
    lock_file = tmp_path / ".lock"
    lock_file.write_text("pid=1\nhost=some-other-node\n")
    with pytest.raises(ConfigError, match=r"in use by an orchestration on host some-other-node \(pid 1\)"):
        RunLock(tmp_path).acquire()
    assert lock_file.read_text() == "pid=1\nhost=some-other-node\n"


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(done.stdout)
    lock_file = tmp_path / ".lock"
    lock_file.write_text(f"pid={dead_pid}\nhost={socket.gethostname()}\n")
    with caplog.at_level(logging.WARNING, logger="evolve.output.rundir"):
        with RunLock(tmp_path):
            assert lock_file.read_text().startswith(f"pid={os.getpid()}\n")
    assert f"stale lock of pid {dead_pid}" in caplog.text
    assert not lock_file.exists()


def test_garbled_lock_is_treated_as_stale(tmp_path):
    (tmp_path / ".lock").write_text("")
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text().startswith(f"pid={os.getpid()}")


def test_lock_needs_an_existing_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"gone: run folder does not exist"):
        RunLock(tmp_path / "gone").acquire()


def test_checkpoint_round_trip(tmp_path):
    state = {"generation": 4, "population": [[0.1, 0.5], [0.9, 0.0]], "rng": (3, (1, 2, 3), None)}
    save_checkpoint(tmp_path, state)
    assert checkpoint_path(tmp_path) == tmp_path / "checkpoint.pkl"
    assert load_checkpoint(tmp_path) == state
    state["generation"] = 5
    save_checkpoint(tmp_path, state)
    assert load_checkpoint(tmp_path)["generation"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pkl"]


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint\.pkl: checkpoint not found"):
        load_checkpoint(tmp_path)
    good = pickle.dumps({"generation": 1})
    (tmp_path / "checkpoint.pkl").write_bytes(good[: len(good) // 2])
    with pytest.raises(ConfigError, match=r"checkpoint\.pkl: checkpoint is corrupt or unreadable"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(ConfigError, match=r"checkpoint\.pkl: checkpoint is corrupt or unreadable"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ConfigError, match=r"checkpoint\.pkl: checkpoint holds list, expected a dict"):
        load_checkpoint(tmp_path)


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "hyp.yaml"
    target.write_text("old content that is longer than the new one\n")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["hyp.yaml"]


def test_a_lock_that_cannot_be_written_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(ConfigError, match=r"cannot write in the run folder \(Read-only file system\)"):
        RunLock(tmp_path).acquire()
