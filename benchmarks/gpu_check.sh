#!/usr/bin/env bash
# The CUDA checks of the detector and of packed evolution trials, in one call on a GPU machine:
#   1. CUDA training with AMP: step speed alone, a 10-epoch run (images/s, mAP per epoch), peak memory;
#   2. four evolution trials packed on one GPU at --gpus-per-trial 0.25: all running at once? per-trial
#      images/s against one trial alone;
#   3. the data pipeline: per-image (CPU) against batched augmentation on the GPU.
# On a machine without CUDA it says so and runs only the CPU part of 3, so the script itself is tested
# anywhere. Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (a log of everything lands in OUT_DIR)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_check}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
date -u +"gpu_check: %Y-%m-%d %H:%M UTC"
status=0
if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
  echo "== 1. CUDA training with AMP (model n, 256 px, batch 64, embedded set)"
  python benchmarks/train_speed.py --device 0 --batch 64 --workers 4 --epochs 10 --minutes 10 || status=1
  echo "== 2. four detector trials packed on one GPU"
  python benchmarks/gpu_packing.py --population 4 --gpus-per-trial 0.25 --cpus-per-trial 2 || status=1
else
  echo "gpu_check: torch sees no CUDA device here: parts 1 and 2 (training with AMP, packed trials) are" \
       "skipped, and part 3 measures the CPU paths only"
fi
echo "== 3. data pipeline"
python benchmarks/data_pipeline.py --repeats 3 || status=1
exit $status
