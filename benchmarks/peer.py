"""Time-to-accuracy race: our detector at its defaults against Ultralytics YOLOv8n at its defaults.

Both train from scratch on the same data YAML with the same settings (imgsz, batch, epochs), at the
same time, each pinned to its own CPU core with one torch thread, so that whatever else loads the
machine loads both alike. Ours runs as ``python -m detector train`` with no recipe flags; the peer as
``YOLO("yolov8n.yaml").train(...)`` with nothing but the shared settings (weights built from the YAML,
nothing downloaded). Without ``ultralytics`` installed only our side runs.

Printed: per-epoch mAP50-95 and wall time of both, and the ratio of our wall time to reach the peer's
final mAP50-95 to the peer's wall time for its whole run (< 1: ours gets there sooner). Wall times count
from each trainer's start (imports excluded on both sides) and include every epoch's validation. Each
side's mAP is its own validator's (ours agrees with pycocotools; the peer's is its COCO-style AP).

    python benchmarks/peer.py                                    # embedded shapes, 256 images
    python benchmarks/peer.py --data ../shared/data/bccd/data.yaml
    python benchmarks/peer.py --epochs 5 --max-images 64         # a quick look
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import yaml

import harness  # first of the project's imports: puts the clone on sys.path

from detector.synthetic import make_synthetic  # noqa: E402

Curve = list[tuple[int, float, float]]  # (epoch, mAP50-95, wall seconds since the process started)

PEER_SCRIPT = """
import json, os, sys
os.environ["YOLO_OFFLINE"] = "1"
import torch
torch.set_num_threads(1)
from ultralytics import YOLO
a = json.loads(sys.argv[1])
YOLO("yolov8n.yaml").train(data=a["data"], epochs=a["epochs"], imgsz=a["imgsz"], batch=a["batch"],
                           device="cpu", project=a["project"], name="peer", exist_ok=True, plots=False,
                           seed=a["seed"], verbose=False)
"""


def resolved_yaml(data: Path, out: Path, max_images: Optional[int]) -> Path:
    """A copy of the data YAML with an absolute ``path`` (the peer resolves a relative one against its own
    datasets folder) and, with ``max_images``, list files of the first N images of each split."""
    spec = yaml.safe_load(data.read_text())
    root = Path(spec.get("path") or ".")
    root = root if root.is_absolute() else (data.parent / root).resolve()
    spec["path"] = str(root)
    if max_images:
        for split in ("train", "val"):
            folder = root / spec[split]
            images = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
            listing = out / f"{split}.txt"
            listing.write_text("".join(f"{p}\n" for p in images[:max_images]))
            spec[split] = str(listing)
    path = out / "data.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def pinned(core: int):
    def pin() -> None:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {core})
    return pin


def read_ours(run: Path) -> Curve:
    rows = list(csv.DictReader((run / "results.csv").open()))
    return [(int(r["epoch"]), float(r["metrics/mAP_0.5:0.95"]), float(r["seconds"]))
            for r in rows if r["metrics/mAP_0.5:0.95"] != ""]


def read_peer(run: Path) -> Curve:
    rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader((run / "results.csv").open())]
    return [(int(float(r["epoch"])), float(r["metrics/mAP50-95(B)"]), float(r["time"])) for r in rows]


def time_to_reach(curve: Curve, target: float) -> Optional[float]:
    for _epoch, value, wall in curve:
        if value >= target:
            return wall
    return None


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="data YAML (default: the embedded shapes set)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-images", type=int, help="first N images of each split (default: 256 train and "
                   "128 val for the embedded set, all for --data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-peer", action="store_true", help="train ours only")
    p.add_argument("--out", help="folder for both runs (default: a temporary folder)")
    args = p.parse_args(argv)

    out = Path(args.out or tempfile.mkdtemp(prefix="peer-race-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.data:
        data, max_images = Path(args.data).resolve(), args.max_images
    else:
        data, max_images = make_synthetic(), args.max_images or 256
    data_yaml = resolved_yaml(data, out, max_images)
    try:
        import ultralytics  # noqa: F401
        have_peer = not args.no_peer
    except ImportError:
        have_peer = False
        print("ultralytics is not installed: training ours only (pip install ultralytics to race)")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    harness.pin_threads(1, children=True)  # both trainers: one torch thread each
    print(harness.machine_header())
    print(f"data "
          f"{data} ({'first ' + str(max_images) + ' images of each split' if max_images else 'all images'}), "
          f"imgsz {args.imgsz}, batch {args.batch}, {args.epochs} epochs, 1 core and 1 thread each")

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ours_cmd = [sys.executable, "-m", "detector", "train", "--data", str(data_yaml),
                "--epochs", str(args.epochs),
                "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--seed", str(args.seed),
                "--project", str(out), "--name", "ours", "--exist-ok", "--quiet"]
    # Each in a session of its own, so the kernel's autogroup treats both alike (``python -m detector``
    # would otherwise move its work into one and the peer stay in this script's).
    procs = {"ours": subprocess.Popen(ours_cmd, cwd=harness.ROOT, env=env, preexec_fn=pinned(cores[0]),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True)}
    if have_peer:
        peer_args = {"data": str(data_yaml), "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
                     "project": str(out), "seed": args.seed}
        procs["peer"] = subprocess.Popen([sys.executable, "-c", PEER_SCRIPT, json.dumps(peer_args)], cwd=out,
                                         env=env, preexec_fn=pinned(cores[-1]), stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    logs = {name: proc.communicate()[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        (out / f"{name}.log").write_text(logs[name])
        if proc.returncode != 0:
            print(f"{name} failed with exit code {proc.returncode}; last lines:\n" +
                  "\n".join(logs[name].splitlines()[-15:]))
            return 1
    ours = read_ours(out / "ours")
    peer = read_peer(out / "peer") if have_peer else []

    print(f"{'epoch':>5} | {'ours mAP50-95':>13} {'wall s':>7} | {'peer mAP50-95':>13} {'wall s':>7}")
    for i in range(max(len(ours), len(peer))):
        left = f"{ours[i][1]:>13.4f} {ours[i][2]:>7.1f}" if i < len(ours) else " " * 21
        right = f"{peer[i][1]:>13.4f} {peer[i][2]:>7.1f}" if i < len(peer) else ""
        print(f"{i + 1:>5} | {left} | {right}")
    print(f"ours: final mAP50-95 {ours[-1][1]:.4f} after {ours[-1][2]:.1f} s")
    if not peer:
        return 0
    target, peer_wall = peer[-1][1], peer[-1][2]
    reach = time_to_reach(ours, target)
    print(f"peer: final mAP50-95 {target:.4f} after {peer_wall:.1f} s")
    if reach is None:
        print(f"ours never reached the peer's final mAP50-95 {target:.4f} in {args.epochs} epochs")
    else:
        print(f"time to the peer's final mAP50-95 {target:.4f}: ours {reach:.1f} s, peer {peer_wall:.1f} s, "
              f"ratio {reach / peer_wall:.2f}x")
    print(f"load average at the end {harness.load_text()}; runs and logs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
