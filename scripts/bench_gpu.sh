#!/usr/bin/env bash
# fcos_d2 against detectron2's built-in FCOS on a CUDA GPU, in one run (the GPU section of
# docs/benchmarks.md): the GPU and software, then CUDA latency at batch 1 and 8 (eager float32,
# bfloat16, torch.compile), the float32 and bfloat16 (autocast) training iteration, matching and
# post-processing. Run from a clone, with a CUDA PyTorch installed:
#
#   scripts/bench_gpu.sh [OUTPUT_DIR] [WHEELS_DIR]
#
# WHEELS_DIR: on a machine without PyPI, the wheels of scripts/offline_wheels.sh, installed first.
# Extra benchmark options go in BENCH_ARGS (e.g. BENCH_ARGS="--device cpu --size 96 128" to try
# the script on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-output/bench_gpu}"
py="${PYTHON:-python3}"
mkdir -p "$out"
if [ -n "${2:-}" ]; then
    bash "$2/install.sh" "$py"
fi
{
    date -u +%Y-%m-%dT%H:%MZ
    git rev-parse --short HEAD 2>/dev/null || true
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
        || echo "no nvidia-smi"
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} | tee "$out/machine.txt"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
"$py" -m fcos_d2 benchmark --device cuda --batches 1 8 --iters 5 --compile --no-deploy \
    --output "$out" ${BENCH_ARGS:-} 2>&1 | tee "$out/log.txt"
