"""Tests of evolve.plots: evolve.png and fitness.png from an evolve.csv, including degenerate CSVs."""
from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from detector.hyp import DEFAULT_HYP, HYP_KEYS
from evolve.contract import Metrics
from evolve.errors import ConfigError
from evolve.output.plots import DPI, PANEL_INCHES, _density, fitness_by_generation, plot_evolve, plot_fitness
from evolve.output.records import RunRecords, TrialRecord


def write_run(run_dir, rows):
    """rows: (generation, status, fitness, hyp changes)"""
    records = RunRecords(run_dir)
    for i, (gen, status, fit, changes) in enumerate(rows):
        hyp = dict(DEFAULT_HYP)
        hyp.update(changes)
        metrics = Metrics(map50=fit, map50_95=fit, fitness=fit, status=status, seconds=1.0)
        records.append(TrialRecord(gen, i, f"t{i}", hyp, metrics))
    return records.csv_path


def random_run(run_dir, n=60, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        changes = {k: DEFAULT_HYP[k] * rng.uniform(0.5, 1.5) + rng.uniform(0.0, 0.01)
                   for k in HYP_KEYS if k != "anchors"}
        changes["anchors"] = rng.choice([3, 4])
        status = "failed" if i % 10 == 9 else "ok"
        rows.append((i // 20, status, 0.0 if status == "failed" else rng.random(), changes))
    return write_run(run_dir, rows)


def png_size(path):
    assert path.stat().st_size > 5000
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_evolve_png_with_30_panels_is_6_columns_wide(tmp_path):
    csv_path = random_run(tmp_path)
    keys = [*HYP_KEYS, "seconds"]
    assert len(keys) == 30
    out = plot_evolve(csv_path, tmp_path / "evolve.png", keys=keys)
    assert out == tmp_path / "evolve.png"
    width, height = png_size(out)
    assert width == round(6 * PANEL_INCHES * DPI)
    assert 5 * PANEL_INCHES * DPI < height < (5 * PANEL_INCHES + 1) * DPI


def test_evolve_png_default_keys_are_the_varying_hyps(tmp_path):
    csv_path = write_run(tmp_path, [(0, "ok", 0.1, {"lr0": 0.001}), (0, "ok", 0.2, {"lr0": 0.01}),
                                    (1, "ok", 0.3, {"lr0": 0.02, "mosaic": 0.5})])
    width, height = png_size(plot_evolve(csv_path, tmp_path / "evolve.png"))
    assert width == round(2 * PANEL_INCHES * DPI)  # lr0 and mosaic vary: two panels in one row
    assert height < (PANEL_INCHES + 1) * DPI


@pytest.mark.parametrize("rows", [
    [(0, "ok", 0.25, {})],
    [(0, "failed", 0.0, {"lr0": 0.001}), (0, "diverged", 0.0, {"lr0": 0.05})],
    [(0, "ok", 0.25, {}), (0, "ok", 0.25, {}), (1, "stopped", 0.1, {})],
], ids=["one-row", "only-failed", "constant-columns"])
def test_degenerate_csvs_still_plot(tmp_path, rows):
    csv_path = write_run(tmp_path, rows)
    keys = ["lr0", "momentum"] if len({r[3].get("lr0") for r in rows}) == 1 else None
    png_size(plot_evolve(csv_path, tmp_path / "evolve.png", keys=keys))
    width, height = png_size(plot_fitness(csv_path, tmp_path / "fitness.png"))
    assert (width, height) == (round(6.4 * DPI), round(4.0 * DPI))


def test_one_row_csv_shows_every_hyp(tmp_path):
    csv_path = write_run(tmp_path, [(0, "ok", 0.25, {})])
    width, height = png_size(plot_evolve(csv_path, tmp_path / "evolve.png"))
    assert width == round(6 * PANEL_INCHES * DPI)
    assert height > 5 * PANEL_INCHES * DPI  # 29 hyps: 5 rows of 6


def test_fitness_png(tmp_path):
    csv_path = random_run(tmp_path)
    out = plot_fitness(csv_path, tmp_path / "sub" / "fitness.png")
    assert png_size(out) == (round(6.4 * DPI), round(4.0 * DPI))


def test_fitness_by_generation_numbers(tmp_path):
    csv_path = write_run(tmp_path, [
        (0, "ok", 0.2, {}), (0, "ok", 0.4, {}), (0, "failed", 0.0, {}), (0, "ok", 0.3, {}),
        (1, "ok", 0.1, {}), (1, "stopped", 0.9, {}),
        (2, "failed", 0.0, {}),
        (3, "ok", 0.5, {}), (3, "ok", 0.7, {}),
    ])
    table = fitness_by_generation(pd.read_csv(csv_path))
    assert table["generation"].tolist() == [0, 1, 2, 3]
    assert table["best_so_far"].tolist() == [0.4, 0.4, 0.4, 0.7]
    assert table["best"].tolist()[:2] == [0.4, 0.1] and math.isnan(table["best"][2])
    assert table["median"].tolist()[:2] == [0.3, 0.1] and table["median"][3] == pytest.approx(0.6)


def test_fitness_by_generation_uses_stopped_only_without_ok(tmp_path):
    csv_path = write_run(tmp_path, [(0, "stopped", 0.2, {}), (0, "failed", 0.0, {}), (1, "stopped", 0.1, {})])
    table = fitness_by_generation(pd.read_csv(csv_path))
    assert table["best_so_far"].tolist() == [0.2, 0.2]
    assert table["median"].tolist() == [0.2, 0.1]


def test_density_counts_neighbours_on_the_grid():
    x = np.array([0.0, 0.01, 0.02, 1.0, 1.0])
    y = np.array([0.0, 0.0, 0.01, 1.0, 1.0])
    assert _density(x, y, bins=10).tolist() == [3, 3, 3, 2, 2]
    assert _density(np.zeros(4), np.array([0.1, 0.1, 0.5, 0.9]), bins=4).tolist() == [2, 2, 1, 1]


def test_plot_errors_name_file_and_key(tmp_path):
    csv_path = write_run(tmp_path, [(0, "ok", 0.25, {})])
    with pytest.raises(ConfigError, match=r"evolve\.csv: no column 'lr9' to plot"):
        plot_evolve(csv_path, tmp_path / "x.png", keys=["lr0", "lr9"])
    with pytest.raises(ConfigError, match=r"nothing\.csv: evolve CSV not found"):
        plot_fitness(tmp_path / "nothing.csv", tmp_path / "x.png")
    other = tmp_path / "other.csv"
    other.write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(ConfigError, match=r"other\.csv: column 'generation' missing"):
        plot_evolve(other, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
