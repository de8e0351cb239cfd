#!/usr/bin/env bash
# The GPU device check: jaxtrain against PyTorch CUDA eager on one GPU, float32 and bf16,
# plus resume equality there (benchmarks/gpu_bench.py). Under 8 minutes on one H100.
#
#   benchmarks/gpu_check.sh [OUT]      # results: OUT/gpu_bench.{md,json}, OUT/log.txt
#
# What the machine must have and what is installed there: benchmarks/gpu_setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-benchmarks/results/gpu}}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
source benchmarks/gpu_setup.sh
$PY benchmarks/gpu_bench.py --out "$OUT" --data-dir "$DATA" ${TEXT:+--text "$TEXT"} "${@:2}"
