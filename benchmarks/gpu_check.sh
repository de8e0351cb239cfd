#!/usr/bin/env bash
# The GPU device check: jaxtrain against PyTorch CUDA eager on one GPU, float32 and bf16,
# plus resume equality there (benchmarks/gpu_bench.py). Under 8 minutes on one H100.
#
#   benchmarks/gpu_check.sh [OUT]      # results: OUT/gpu_bench.{md,json}, OUT/log.txt
#
# For a machine whose Python already has JAX's CUDA build, flax, optax, orbax-checkpoint,
# torch, torchvision and typer (nothing is downloaded): jaxtrain is installed with
# --no-deps, plus the wheels in .gpu-carry/wheels/ (tensorboardX, tomli-w: `make
# gpu-carry` fetches them and Fashion-MNIST's four .gz files into .gpu-carry/).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-benchmarks/results/gpu}}
PY=${PYTHON:-python3}
CARRY=.gpu-carry
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
if ! $PY -m pip install --quiet --no-deps --no-build-isolation -e . ; then
  # Without a usable setuptools: the package layout by links (see pyproject.toml).
  SHIM=$(mktemp -d); mkdir -p "$SHIM/jaxtrain"
  for p in cli models training; do ln -s "$PWD/$p" "$SHIM/jaxtrain/$p"; done
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi
if compgen -G "$CARRY/wheels/*.whl" > /dev/null; then
  $PY -m pip install --quiet --no-deps "$CARRY"/wheels/*.whl
fi
DATA=$(mktemp -d)
mkdir -p "$DATA/FashionMNIST/raw"
for f in "$CARRY"/fashion-mnist/*.gz /usr/share/datasets/fashion-mnist/*.gz; do
  [ -f "$f" ] || continue
  name=$(basename "$f" .gz)
  [ -f "$DATA/FashionMNIST/raw/$name" ] || gunzip -c "$f" > "$DATA/FashionMNIST/raw/$name"
done
$PY -c "import jax; print('jax', jax.__version__, jax.devices())"
export JAX_COMPILATION_CACHE_DIR="$DATA/xla"
# JAX takes 75% of the GPU's memory at start unless told not to; PyTorch shares the GPU.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
$PY benchmarks/gpu_bench.py --out "$OUT" --data-dir "$DATA" "${@:2}"
