#!/usr/bin/env bash
# The GPU benchmarks of issue 5 in one call, for a session lent a device machine (it has python3 with torch,
# torchvision and matplotlib, no internet): from the repository root there,
#   bash bench/gpu_suite.sh            # about 5 minutes on an H100
# Output goes to $OUT/gpu_suite.txt when $OUT is set (the device tool brings it back), else to stdout.
# Record the numbers in BENCHMARKS.md with the machine line this script prints first.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out=${OUT:+$OUT/gpu_suite.txt}
{
  echo "# $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  echo "## augmentation: batched on the GPU vs the per-image PIL pipeline on this machine's CPU"
  timeout 120 python3 bench/bench_augment.py --device cuda
  echo "## loop overhead: TorchEngine vs a hand-written loop, C5L3 width 1, batch 64"
  timeout 180 python3 bench/bench_loop.py --device cuda --width 1 --steps 200
  echo "## throughput and projected epoch time per seed experiment (batch 64 and 512)"
  timeout 300 python3 bench/bench_throughput.py --device cuda
  echo "## one experiment on every GPU (training.devices = \"all\") against one GPU (a single GPU: the same path twice)"
  timeout 300 python3 bench/bench_devices.py --device cuda
} 2>&1 | if [ -n "$out" ]; then tee "$out"; else cat; fi
