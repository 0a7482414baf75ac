"""What every benchmark script shares: the path bootstrap, the machine header, the load average and thread
pinning, written once instead of once a script.

    import harness                        # first: a script then runs from a clone, installed or not
    harness.pin_threads(1)                # this process (and, with children=True, its subprocesses)
    print(harness.machine_header())       # CPU model, cores, bf16 units, load average, Python and torch

Importing it puts the clone's root on ``sys.path`` (``python benchmarks/x.py`` puts only ``benchmarks/``
there), so ``evolve``, ``detector`` and ``benchmarks.*`` import without ``pip install -e``. A figure is
worth as much as the machine it was measured on and how busy that machine was: every script prints the
header before its figures and the load average after them.
"""
from __future__ import annotations

import math
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bootstrap() -> Path:
    """Put the clone's root first on ``sys.path`` (once); returns it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return ROOT


# On import, on purpose: a script's own imports of evolve and detector follow this module's.
bootstrap()


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (NaN where the system does not keep them)."""
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return (math.nan, math.nan, math.nan)
    return (one, five, fifteen)


def load_text(digits: int = 2) -> str:
    """The three load averages as ``"1.02 0.88 0.70"``."""
    return " ".join(f"{v:.{digits}f}" for v in load_average())


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """The cores this process may run on (its affinity; the CPU count where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def bf16_units() -> bool | None:
    """Whether training here runs in bf16 (the CPU multiplies bf16 in hardware), as the detector decides
    it (``detector.precision``); None when torch cannot be imported."""
    try:
        from detector.precision import cpu_has_native_bf16
    except ImportError:
        return None
    return cpu_has_native_bf16()


def machine_header() -> str:
    """One line naming the machine and how busy it is, printed before a benchmark's figures."""
    bf16 = {True: "yes (CPU training in bf16)", False: "no (CPU training in fp32)", None: "unknown"}[bf16_units()]
    versions = f"Python {platform.python_version()}"
    if "torch" in sys.modules or bf16_units() is not None:
        import torch

        versions += f", torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)"
        if torch.cuda.is_available():
            versions += f", CUDA: {torch.cuda.get_device_name(0)}"
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores ({usable_cores()} usable), bf16 units: {bf16}; "
            f"load average {load_text()}; {versions}")


def pin_threads(threads: int, children: bool = False) -> int:
    """Run torch's CPU kernels in this process on ``threads`` threads; with ``children`` also every
    subprocess started afterwards (``OMP_NUM_THREADS``). Returns ``threads``."""
    if children:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    return threads


def split_passthrough(argv: list[str] | None = None) -> tuple[list[str], list[str]]:
    """A benchmark's own flags and those after ``--``, which it hands to orchestrate.py unchanged."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]
