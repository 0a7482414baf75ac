"""Tests of evolve/output/report.py: report.html after a real (surrogate) run on the session's Ray, its
--report command, and the page rendered by a real headless browser (Debian's Chromium) where one is
installed."""
from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest
from PIL import Image

import orchestrate
from evolve import config_from_argv
from evolve.driver import run
from evolve.output.report import REPORT_NAME, _change
from evolve.output.report_data import gather

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--trainer", "surrogate", "--generations", "2", "--population", "6", "--epochs", "2", "--seed", "3",
         "--surrogate-failure-rate", "0.2", "--validate-top", "1", "--validate-sentinels", "1",
         "--validate-seeds", "2"]




PROGRESS_LINES: list[str] = []  # what the run's progress logged


@pytest.fixture(scope="module")
def finished(ray_address, tmp_path_factory, collect_logs):
    """A finished run with failed trials and a validation: its folder."""
    project = tmp_path_factory.mktemp("report")
    with collect_logs("evolve.output.progress") as messages:
        try:
            return run(config_from_argv([*FLAGS, "--project", str(project), "--address", ray_address]))
        finally:
            PROGRESS_LINES[:] = messages


def test_the_run_logged_its_planned_budget_first_and_one_cost_estimate(finished):
    # validation: the base, top1 and a sentinel, 2 seeds each
    assert PROGRESS_LINES[0] == ("planned: at most 36 trial-epochs = evolution at most 12 trials x 2 epochs "
                                 "+ validation 6 runs x 2 epochs")  # validated at the target, --epochs
    estimates = [m for m in PROGRESS_LINES if m.startswith("estimated wall time of the whole run: ")]
    assert len(estimates) == 1 and re.search(r"\(\d+ trial-epochs left at [\d.]+ s each, [12] at once\)$",
                                             estimates[0]), estimates


def test_a_finished_run_leaves_a_self_contained_report(finished):
    page = (finished / REPORT_NAME).read_text(encoding="utf-8")
    data = gather(finished)
    # every plot of the run folder and the best-so-far curve are embedded; nothing is loaded from elsewhere
    assert set(data.images) == {"fitness.png", "evolve.png", "validation.png", "best_so_far.png"}
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 4
    assert not re.search(r'(src|href)="(?!data:)', page) and "://" not in page
    # the verdict is the validation's own, as it logged it and as validation_summary.csv has it
    assert data.verdict[0].startswith("validated: ") and data.verdict[1].startswith("transfer: ")
    assert f"<b>{data.verdict[0]}</b>" in page.replace("&#x27;", "'")
    summary = pd.read_csv(finished / "validation_summary.csv", dtype={"source_trial_id": str},
                          keep_default_na=False)
    assert sorted(label for label, *_ in data.standings) == sorted(summary["candidate"])
    chosen = [label for label, *rest in data.standings if rest[-1]]
    assert chosen == list(summary.loc[summary["chosen"] == 1, "candidate"])
    for label, _, _, mean, _, seeds, _, _ in data.standings:
        row = summary[summary["candidate"] == label].iloc[0]
        assert mean == pytest.approx(float(row["mean"]), rel=1e-5, abs=1e-9) and seeds == int(row["seeds"])
    assert f"{len(data.trials)} trials over 2 generation(s)" in page
    assert f"<b>{data.area:.4f}</b>" in page
    failed = data.statuses.get("failed", 0)
    assert failed >= 1 and sum(n for _, n in data.reasons) == failed
    assert "injected failure" in data.reasons[0][0]
    # the flags typed for the run are listed as such
    assert '<code class="given">--surrogate-failure-rate</code>' in page


def test_report_command_rewrites_the_page_and_bad_folders_exit_2(finished, tmp_path, capsys):
    (finished / REPORT_NAME).unlink()
    assert orchestrate.main(["--report", str(finished)]) == 0
    assert (finished / REPORT_NAME).is_file()
    for argv, message in ((["--report", str(tmp_path / "none")], "no such run folder"),
                          (["--report", str(tmp_path)], "not an evolution run folder (no evolve.csv)"),
                          (["--report", str(finished), "--resume", str(finished)], "excludes --resume")):
        with pytest.raises(SystemExit) as exc:
            orchestrate.main(argv)
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_changes_read_as_percent_absolute_or_choice():
    assert _change(0.01, 0.0125) == "+25%"
    assert _change(0.05, 0.049907) == "-0.2%"
    assert _change(0.0, 0.2) == "+0.2"
    assert _change(0.5, 0.5) == ""
    assert _change("SGD", "AdamW") == "SGD &rarr; AdamW"


def test_a_report_that_cannot_be_made_never_ends_the_run(finished, monkeypatch, caplog):
    from evolve import driver

    def broken(run_dir):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(driver, "write_report", broken)
    driver._refresh_report(finished)
    assert any("report.html not written: disk on fire" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium)")
def test_the_page_renders_in_a_headless_browser_with_every_image(finished, tmp_path):
    url = (finished / REPORT_NAME).as_uri()
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    # the page's own script counts the images the browser decoded
    assert 'data-images="4/4"' in dom, dom[:500]
    shot = tmp_path / "report.png"
    subprocess.run([*base, "--window-size=1200,900", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120, check=True)
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 900)
    low, high = image.getextrema()
    assert low < 100 and high > 200  # dark text on a light page, not a blank or an error page


def test_a_report_made_while_validation_appends_leaves_its_records_alone(finished):
    path = finished / "validation.csv"
    whole = path.read_bytes()
    try:
        path.write_bytes(whole + b"top1,g001i00")  # a row being written right now
        data = gather(finished)
        assert path.read_bytes() == whole + b"top1,g001i00"
        assert sum(s[5] for s in data.standings) == len(whole.decode().splitlines()) - 1
    finally:
        path.write_bytes(whole)
