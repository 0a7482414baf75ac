"""Tests of evolve/driver.py's error paths: a disk that fills up in the middle of a run (a real, small
file system), and the plot thread ended on every exit path."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from evolve.config import config_from_argv
from evolve.driver import run
from evolve.errors import RunStopped

FLAGS = ["--trainer", "surrogate", "--generations", "3", "--population", "6", "--epochs", "2",
         "--elite", "1,1", "--seed", "1", "--surrogate-seconds", "0.3", "--max-concurrent", "1",
         "--validate-top", "0"]
TOTAL_ROWS = 6 + 5 + 5  # one elite carried per generation


def config(argv: list[str]):
    return config_from_argv(argv)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs of its own (root only), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until its disk is full; the file."""
    ballast = folder / f"ballast-{uuid.uuid4().hex}"
    with ballast.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    return ballast


def rows_in(csv_path: Path) -> int:
    try:
        return max(len(csv_path.read_text().splitlines()) - 1, 0)
    except OSError:
        return 0


def test_a_full_disk_stops_the_run_resumably_and_no_trial_is_recorded_failed(small_disk, ray_address,
                                                                                monkeypatch):
    plot_tmp = small_disk.parent / "plot-tmp"
    plot_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(plot_tmp))
    run_dir = small_disk / "exp"
    cfg = config([*FLAGS, "--project", str(small_disk), "--address", ray_address])
    box: dict[str, BaseException] = {}

    def target() -> None:
        try:
            run(cfg)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            box["error"] = exc

    driver = threading.Thread(target=target)
    driver.start()
    deadline = time.monotonic() + 120
    while rows_in(run_dir / "evolve.csv") < 3 and driver.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    ballast = fill(small_disk)  # the disk fills up in generation 0
    driver.join(180)
    assert not driver.is_alive()
    error = box.get("error")
    assert isinstance(error, RunStopped), repr(error)
    assert str(error) == f"{error}".splitlines()[0] and "No space left on device" in str(error)
    assert not any(t.name == "evolve-plots" for t in threading.enumerate())  # the plot thread ended
    assert os.listdir(plot_tmp) == []  # and left no snapshot behind
    stopped = pd.read_csv(run_dir / "evolve.csv")
    assert 3 <= len(stopped) < TOTAL_ROWS and (stopped["status"] == "ok").all()

    ballast.unlink()  # space freed: the trials not recorded run now, none is a failure
    run(config(["--resume", str(run_dir), "--address", ray_address]))
    done = pd.read_csv(run_dir / "evolve.csv")
    assert len(done) == TOTAL_ROWS and (done["status"] == "ok").all()
    assert list(done["trial_id"][:len(stopped)]) == list(stopped["trial_id"])
    assert sorted(done["trial_id"]) == sorted(set(done["trial_id"]))  # each trial recorded once
    shutil.rmtree(run_dir / "ray", ignore_errors=True)


def test_a_resume_command_is_given_only_when_there_is_a_checkpoint(ray_address, tmp_path, monkeypatch,
                                                                    caplog):
    from evolve.loops.base import Interrupted
    from evolve.loops.generational import GenerationalEvolution
    from evolve.loops.plan import prepare

    def interrupted_at_once(self):
        raise KeyboardInterrupt

    def interrupted_in_generation_0(self):
        self._first = self._start()
        self._advance()  # generation 0 bred and checkpointed
        raise KeyboardInterrupt

    caplog.set_level("INFO")
    monkeypatch.setattr(GenerationalEvolution, "run", interrupted_at_once)
    with pytest.raises(Interrupted) as err:
        run(config([*FLAGS, "--project", str(tmp_path), "--name", "early", "--address", ray_address]))
    assert "interrupted; nothing to resume yet (stopped before the first checkpoint); run the same command " \
           "again" in caplog.text
    assert "--resume" not in caplog.text and not (err.value.run_dir / "checkpoint.pkl").exists()

    caplog.clear()
    monkeypatch.setattr(GenerationalEvolution, "run", interrupted_in_generation_0)
    with pytest.raises(Interrupted) as err:
        run(config([*FLAGS, "--project", str(tmp_path), "--name", "later", "--address", ray_address]))
    run_dir = err.value.run_dir
    assert "breeding generation 0: 6 individuals from 1 seed(s)" in caplog.text
    assert f"interrupted; resume with: python orchestrate.py --resume {run_dir}" in caplog.text
    assert prepare(config(["--resume", str(run_dir)])).checkpoint["generation"] == 0  # and it does resume
