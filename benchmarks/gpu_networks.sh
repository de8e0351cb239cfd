#!/usr/bin/env bash
# The VAE's networks (issue 30) and nanoGPT's baby GPT at equal work (issue 31) on one GPU,
# in one pass of about 9 minutes on an H200:
#
#   benchmarks/gpu_networks.sh OUT
#
# 1. the judge of Fashion-MNIST, trained once before the runs that use it;
# 2. 10 epochs of mlp, conv and conv-s10 one after the other, each alone on the machine
#    (benchmarks/vae_conv.py, IW-NLL with K = 1000): the times compare;
# 3. the baby GPT's whole commands against the PyTorch script on CUDA (gpu_bench.py
#    --section baby-gpt);
# 4. conv-wide, conv-deep and conv-local-ar-kl0.1, and with --binarize mlp, conv and
#    conv-wide, all six at once (only their figures compare, not their times).
# Each stage has its own time limit; whatever ended is packed into OUT/runs.tgz as it
# ends (the runs' .err files and records: unpacked into W, `python benchmarks/vae_conv.py
# --from W/vae --variants ...` writes their tables). What the machine must have:
# benchmarks/gpu_setup.sh. EPOCHS and DATA (a folder holding FashionMNIST/raw/) may be
# set, for a try at small sizes. The results of 2026-12-04 (benchmarks/results/gpu/vae_
# networks*.md) add a second pass of stage 4's commands with --variants
# conv-big,conv-deep-z64,conv-deep-s10 and, binarized, conv-deep,conv-big.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: benchmarks/gpu_networks.sh OUT}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
source benchmarks/gpu_setup.sh
DEADLINE=${DEADLINE:-570}  # seconds from the start: the device's limit for one command is 600
RUNS=$(mktemp -d)  # the runs' workdirs: their checkpoints stay on the machine

collect() {  # the runs' stderr, records and settings, and the last sample grids, as one
  # archive: a device machine may send back only a few files (OUT/runs.tgz, log.txt, ...)
  (cd "$RUNS" && find . \( -name '*.err' -o -name metrics.jsonl -o -name config.toml \
     -o -name bench-settings.json -o -name 'samples_epoch010.png' \) -print0 |
     tar czf "$OUT/runs.tgz" --null -T -)
}
stage() {  # stage NAME SECONDS COMMAND...: the command under a time limit, then collect
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - SECONDS))  # a whole pass must end (and collect) by DEADLINE
  [ "$left" -lt "$limit" ] && limit=$left
  [ "$limit" -lt 20 ] && { echo "== $name: skipped, $left s left of the pass"; return; }
  echo "== $name (limit $limit s) $(date +%T)"
  local t0=$SECONDS
  timeout --kill-after 10 "$limit" "$@"
  echo "== $name: exit $?, $((SECONDS - t0)) s"
  collect
}
VC=($PY benchmarks/vae_conv.py --data-dir "$DATA" --iw 1000 --epochs "${EPOCHS:-10}" --no-table)

stage judge 120 $PY -m jaxtrain.cli.main judge --dataset fashion-mnist --data-dir "$DATA" \
  --no-download
stage "mlp, conv, conv-s10 alone" 240 "${VC[@]}" --workdir "$RUNS/vae" \
  --variants mlp,conv,conv-s10
stage "baby GPT" 200 $PY benchmarks/gpu_bench.py --section baby-gpt --out "$OUT" \
  --data-dir "$DATA" ${TEXT:+--text "$TEXT"}
sweep() {
  "${VC[@]}" --workdir "$RUNS/vae" --variants conv-wide,conv-deep,conv-local-ar-kl0.1 \
    --parallel 3 &
  "${VC[@]}" --workdir "$RUNS/vae-binarized" --binarize --variants mlp,conv,conv-wide \
    --parallel 3 &
  wait
}
stage "six variants at once" 300 bash -c "$(declare -p VC RUNS); $(declare -f sweep); sweep"
echo "== done $(date +%T)"
