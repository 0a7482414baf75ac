"""One training epoch on an idle machine and beside another torch process: how much a busy machine costs.

Trials of an evolution share their nodes, and people train beside other jobs, so a training process must
stay fast when something else computes on the same cores. This script trains one epoch (plus its
validation) of our detector at its defaults, and of Ultralytics YOLOv8n at its defaults when
``ultralytics`` is installed, first with nothing else started, then beside a process that multiplies
torch matrices with torch's default thread count (one thread per core, the way most torch programs
run). The load runs in two placements: in the **same** session as the trainer (how a Ray worker, a batch
script or a notebook runs its jobs) and in a **new** session (``setsid``). With the kernel's autogroup
scheduling each session is its own scheduling group, so a load in another session competes less; the
same-session figure shows what a busy machine costs a trainer that stays in its caller's session, and
``python -m detector`` moves its work into a session of its own where autogroup is on
(``detector/session.py``), so both placements should now read alike. Idle and busy runs alternate, ``--repeats``
times, and the medians are compared as ratios (busy / idle; 1.0 = the load costs nothing).

    python benchmarks/busy_machine.py
    python benchmarks/busy_machine.py --images 64 --repeats 1 --no-peer
    python benchmarks/busy_machine.py --repo ../other-checkout --no-peer   # time another checkout's detector
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

import harness  # first of the project's imports: puts the clone on sys.path
from benchmarks.peer import resolved_yaml
from detector.synthetic import make_synthetic

ROOT = harness.ROOT

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


PLACEMENTS = ("same-session", "new-session")


def epoch_seconds_ours(data: Path, out: Path, name: str, imgsz: int, batch: int, repo: Path = ROOT) -> float:
    """Seconds of one epoch and its validation, as the trainer reports them (imports excluded)."""
    cmd = [sys.executable, "-m", "detector", "train", "--data", str(data), "--epochs", "1",
           "--imgsz", str(imgsz),
           "--batch", str(batch), "--project", str(out), "--name", name, "--exist-ok", "--quiet", "--no-save"]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"ours failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def epoch_seconds_peer(data: Path, out: Path, name: str, imgsz: int, batch: int, repo: Path = ROOT) -> float:
    args = {"data": str(data), "imgsz": imgsz, "batch": batch, "project": str(out), "name": name}
    done = subprocess.run([sys.executable, "-c", PEER_SCRIPT, json.dumps(args)], cwd=out, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"peer failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    rows = list(csv.DictReader((out / name / "results.csv").open()))
    return float(rows[-1]["time"])


def start_load(placement: str) -> subprocess.Popen:
    """The load process, in this script's session (and so the trainer's) or in a new one."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torch's default threads
    return subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT], env=env,
                            start_new_session=placement == "new-session")


def stop_load(proc: subprocess.Popen) -> None:
    # Only the load's own pid: in the same session it shares the process group with this script.
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=128, help="train and val images (embedded set)")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--placement", choices=[*PLACEMENTS, "both"], default="both",
                   help="where the load runs: the trainer's session, a new one, or each in turn")
    p.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose detector is timed")
    args = p.parse_args(argv)
    placements = list(PLACEMENTS) if args.placement == "both" else [args.placement]
    repo = args.repo.resolve()
    out = Path(tempfile.mkdtemp(prefix="busy-machine-"))
    data = resolved_yaml(make_synthetic(), out, args.images)
    sides = {"ours": epoch_seconds_ours}
    if not args.no_peer:
        try:
            import ultralytics  # noqa: F401
            sides["ultralytics"] = epoch_seconds_peer
        except ImportError:
            print("ultralytics is not installed: measuring ours only")
    print(f"machine: {harness.cpu_model()}, {os.cpu_count()} CPU cores, load average "
          f"{harness.load_average()[0]:.2f} at start; "
          f"detector of {repo}; "
          "one epoch of "
          f"{args.images} train + {args.images} val images at {args.imgsz} px, batch {args.batch}, defaults "
          f"on both sides (no thread flags); load: one torch process with default threads")
    states = ["idle", *placements]
    times: dict[str, dict[str, list[float]]] = {s: {state: [] for state in states} for s in sides}
    for r in range(args.repeats):
        for side, fn in sides.items():
            for state in states:
                load = start_load(state) if state != "idle" else None
                try:
                    seconds = fn(data, out, f"{side}-{state}-{r}", args.imgsz, args.batch, repo)
                finally:
                    if load is not None:
                        stop_load(load)
                times[side][state].append(seconds)
                print(f"  {side:<11} {state:<12}: {seconds:6.1f} s (load average {harness.load_average()[0]:.2f})",
                      flush=True)
    for side, t in times.items():
        idle = statistics.median(t["idle"])
        busy = ", ".join(f"load in {state} {statistics.median(t[state]):6.1f} s "
                         f"({statistics.median(t[state]) / idle:.2f}x)" for state in placements)
        print(f"{side:<11} idle {idle:6.1f} s; {busy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
