"""One training epoch on an idle machine and beside another torch process: how much a busy machine costs.

Trials of an evolution share their nodes, and people train beside other jobs, so a training process must
stay fast when something else computes on the same cores. This script trains one epoch (plus its
validation) of our detector at its defaults, and of Ultralytics YOLOv8n at its defaults when
``ultralytics`` is installed, first with nothing else started, then beside a process that multiplies
torch matrices with torch's default thread count (one thread per core, the way most torch programs
run). Idle and busy runs alternate, ``--repeats`` times, and the medians are compared as a ratio
(busy / idle; 1.0 = the load costs nothing).

    python benchmarks/busy_machine.py
    python benchmarks/busy_machine.py --images 64 --repeats 1 --no-peer
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.peer import resolved_yaml  # noqa: E402
from detector.synthetic import make_synthetic  # noqa: E402

LOAD_SCRIPT = """
import torch
a = torch.rand(768, 768)
while True:
    a = (a @ a).clamp_(-1, 1)
"""

PEER_SCRIPT = """
import json, os, sys
os.environ["YOLO_OFFLINE"] = "1"
from ultralytics import YOLO
a = json.loads(sys.argv[1])
YOLO("yolov8n.yaml").train(data=a["data"], epochs=1, imgsz=a["imgsz"], batch=a["batch"], device="cpu",
                           project=a["project"], name=a["name"], exist_ok=True, plots=False, verbose=False)
"""


def epoch_seconds_ours(data: Path, out: Path, name: str, imgsz: int, batch: int) -> float:
    """Seconds of one epoch and its validation, as the trainer reports them (imports excluded)."""
    cmd = [sys.executable, "-m", "detector", "train", "--data", str(data), "--epochs", "1",
           "--imgsz", str(imgsz),
           "--batch", str(batch), "--project", str(out), "--name", name, "--exist-ok", "--quiet", "--no-save"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ours failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def epoch_seconds_peer(data: Path, out: Path, name: str, imgsz: int, batch: int) -> float:
    args = {"data": str(data), "imgsz": imgsz, "batch": batch, "project": str(out), "name": name}
    done = subprocess.run([sys.executable, "-c", PEER_SCRIPT, json.dumps(args)], cwd=out, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"peer failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    rows = list(csv.DictReader((out / name / "results.csv").open()))
    return float(rows[-1]["time"])


def start_load() -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torch's default threads
    return subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT], env=env, start_new_session=True)


def stop_load(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=128, help="train and val images (embedded set)")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-peer", action="store_true")
    args = p.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="busy-machine-"))
    data = resolved_yaml(make_synthetic(), out, args.images)
    sides = {"ours": epoch_seconds_ours}
    if not args.no_peer:
        try:
            import ultralytics  # noqa: F401
            sides["ultralytics"] = epoch_seconds_peer
        except ImportError:
            print("ultralytics is not installed: measuring ours only")
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} at start; "
          "one epoch of "
          f"{args.images} train + {args.images} val images at {args.imgsz} px, batch {args.batch}, defaults "
          f"on both sides (no thread flags); load: one torch process with default threads")
    times: dict[str, dict[str, list[float]]] = {s: {"idle": [], "busy": []} for s in sides}
    for r in range(args.repeats):
        for side, fn in sides.items():
            for state in ("idle", "busy"):
                load = start_load() if state == "busy" else None
                try:
                    seconds = fn(data, out, f"{side}-{state}-{r}", args.imgsz, args.batch)
                finally:
                    if load is not None:
                        stop_load(load)
                times[side][state].append(seconds)
                print(f"  {side:<11} {state}: {seconds:6.1f} s (load average {os.getloadavg()[0]:.2f})",
                      flush=True)
    for side, t in times.items():
        idle, busy = statistics.median(t["idle"]), statistics.median(t["busy"])
        print(f"{side:<11} idle {idle:6.1f} s, busy {busy:6.1f} s: busy/idle {busy / idle:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
