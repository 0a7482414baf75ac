"""Tests of benchmarks/harness.py: the header every benchmark prints, read from real sources, and the
bootstrap that lets a benchmark script run from a clone."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))


def test_the_cpu_model_is_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n"
                    "flags\t\t: fpu avx2\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n")
    assert harness.cpu_model(info) == "AMD EPYC 7B13 64-Core Processor"
    assert harness.cpu_model(tmp_path / "missing")  # falls back to what platform knows, never empty


def test_the_header_names_cores_bf16_and_load():
    header = harness.machine_header()
    assert header.startswith("machine: ") and "\n" not in header
    assert f"{os.cpu_count()} cores ({harness.usable_cores()} usable)" in header
    assert "bf16 units: yes" in header or "bf16 units: no" in header
    assert f"load average {harness.load_text()[:2]}" in header
    one, five, fifteen = harness.load_average()
    assert all(v >= 0 or math.isnan(v) for v in (one, five, fifteen))
    assert len(harness.load_text().split()) == 3


def test_pin_threads_sets_this_process_and_optionally_its_children(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert harness.pin_threads(1) == 1 and torch.get_num_threads() == 1
        assert "OMP_NUM_THREADS" not in os.environ
        harness.pin_threads(1, children=True)
        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_a_script_runs_from_the_clone_without_the_project_on_the_path(tmp_path):
    # gpu_packing.py imports benchmarks.orchestration at its top, which only the harness's bootstrap makes
    # importable: run from another folder, with no site packages (no editable install) and no PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-S", str(ROOT / "benchmarks" / "gpu_packing.py"), "--help"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: gpu_packing.py")
    assert harness.bootstrap() == ROOT and str(ROOT) in sys.path
