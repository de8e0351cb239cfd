# Sourced by the device checks (gpu_check.sh, gpu_networks.sh) from the repo's root, on a
# machine whose Python already has JAX's CUDA build, flax, optax, orbax-checkpoint, torch,
# torchvision and typer (nothing is downloaded): installs jaxtrain with --no-deps, plus the
# wheels in .gpu-carry/wheels/ (`make gpu-carry` fetches them, Fashion-MNIST's four .gz
# files and the Vim manual into .gpu-carry/). Sets PY, DATA (holds FashionMNIST/raw/;
# given, it is used as it is) and TEXT (the baby GPT's text, or empty).
PY=${PYTHON:-python3}
CARRY=.gpu-carry
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
if [ -z "${DATA:-}" ]; then
DATA=$(mktemp -d)
mkdir -p "$DATA/FashionMNIST/raw"
for f in "$CARRY"/fashion-mnist/*.gz /usr/share/datasets/fashion-mnist/*.gz; do
  [ -f "$f" ] || continue
  name=$(basename "$f" .gz)
  [ -f "$DATA/FashionMNIST/raw/$name" ] || gunzip -c "$f" > "$DATA/FashionMNIST/raw/$name"
done
fi
TEXT=""
[ -f "$CARRY/vim-manual.txt" ] && TEXT="$PWD/$CARRY/vim-manual.txt"
$PY -c "import jax; print('jax', jax.__version__, jax.devices())"
export JAX_COMPILATION_CACHE_DIR="$DATA/xla"
# JAX takes 75% of the GPU's memory at start unless told not to; PyTorch shares the GPU.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
