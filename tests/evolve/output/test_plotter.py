"""Tests of evolve/output/plotter.py: drawings run in the background and end before the run does."""
from __future__ import annotations

import os
import tempfile
import threading
import time

import pytest

from evolve.output import plotter as plotter_module
from evolve.output.plotter import Plotter


@pytest.fixture
def slow_plots(tmp_path, monkeypatch):
    """Plots that take 0.6 s each and count themselves; snapshots go to tmp_path/tmp."""
    snapshots = tmp_path / "tmp"
    snapshots.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(snapshots))
    drawn: list[str] = []

    def slow(csv_path, out_path):
        time.sleep(0.6)
        drawn.append(os.path.basename(out_path))

    monkeypatch.setattr(plotter_module, "plot_evolve", slow)
    monkeypatch.setattr(plotter_module, "plot_fitness", slow)
    csv_path = tmp_path / "evolve.csv"
    csv_path.write_text("generation,status,fitness\n0,ok,0.5\n")
    return Plotter(tmp_path, csv_path), drawn, snapshots


def plot_threads() -> int:
    return sum(t.name == "evolve-plots" for t in threading.enumerate())


def test_close_after_a_good_run_draws_every_request(slow_plots):
    plotter, drawn, snapshots = slow_plots
    plotter.request()
    time.sleep(0.1)
    plotter.request()
    plotter.request()  # merges with the one before into one more drawing after the running one
    assert plotter.close() is True
    assert drawn == ["evolve.png", "fitness.png"] * 2 and plot_threads() == 0 and os.listdir(snapshots) == []
    plotter.request()  # closed: nothing more is drawn
    assert plot_threads() == 0 and len(drawn) == 4


def test_close_of_a_stopping_run_waits_only_for_the_drawing_in_progress(slow_plots):
    plotter, drawn, snapshots = slow_plots
    plotter.request()
    time.sleep(0.1)
    plotter.request()  # not started yet: dropped
    assert plotter.close(finish=False) is True
    assert drawn == ["evolve.png", "fitness.png"] and plot_threads() == 0 and os.listdir(snapshots) == []


def test_a_drawing_that_outlasts_the_wait_is_abandoned_and_its_snapshot_removed(slow_plots, caplog):
    plotter, drawn, snapshots = slow_plots
    plotter.request()
    time.sleep(0.1)
    assert plotter.close(finish=False, timeout=0.2) is False
    assert os.listdir(snapshots) == [] and "abandoned" in caplog.text
    time.sleep(1.5)  # the abandoned drawing ends by itself without a file to remove
    assert plot_threads() == 0 and drawn == ["evolve.png", "fitness.png"]


def test_a_full_temp_folder_costs_the_plots_only(slow_plots, monkeypatch, caplog):
    plotter, drawn, _ = slow_plots

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plotter_module.tempfile, "mkstemp", full)
    plotter.request()
    assert plotter.close() is True
    assert drawn == [] and "could not draw the plots: [Errno 28] No space left on device" in caplog.text
