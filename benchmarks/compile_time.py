"""How the Transformer's blocks compile: the train step's compile time by depth, and a
step's time, with the blocks' scan unrolled (what a CPU runs, models/transformer.py:
scan_unroll) and as a loop over the layers (what a GPU runs).

    .venv/bin/python benchmarks/compile_time.py [--layers 1,4,8] [--out FILE]

Compile: AOT `lower(...).compile()` of the digits Transformer's train step (width 128,
4 heads, dropout 0.1, batch 8), from abstract shapes, the persistent cache off. Step:
the baby GPT (4 layers, width 128, context 64, batch 12, dropout 0), best of 3 x 30
steps. One process per measurement, so no compile is shared.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_compilation_cache", False)
import jaxtrain.models.transformer as transformer
from jaxtrain.models.pixel_lm import num_patches
from jaxtrain.training.sources.mnist import SHAPE
from jaxtrain.training.engine.run import Run
from jaxtrain.training.settings.config import MODELS, DataConfig, RunConfig, TrainConfig

what, layers, form = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if form == "loop":
    transformer.scan_unroll = lambda config, backend=None: 1
vocab = "".join(chr(32 + i) for i in range(65))
if what == "compile":
    config = RunConfig("transformer", MODELS["transformer"](
        layers=layers, image_shape=SHAPE, context=num_patches(SHAPE)), DataConfig(),
                       TrainConfig(epochs=None, steps=100, batch_size=8))
    run = Run(config, None)
    state = jax.eval_shape(run.init_state)
    batch = {"image": jax.ShapeDtypeStruct((8, *SHAPE), jnp.uint8),
             "label": jax.ShapeDtypeStruct((8,), jnp.int32),
             "index": jax.ShapeDtypeStruct((8,), jnp.int32)}
    t0 = time.perf_counter()
    lowered = run.train_step.lower(state, batch)
    t1 = time.perf_counter()
    lowered.compile()
    print(json.dumps({"trace_s": t1 - t0, "compile_s": time.perf_counter() - t1}))
else:
    model = MODELS["transformer"](layers=layers, d_model=128, heads=4, context=64, dropout=0.0)
    model = model.replace(vocab_size=len(vocab), output_size=len(vocab))
    config = RunConfig("transformer", model, DataConfig("text", data_file="unused", vocab=vocab),
                       TrainConfig(epochs=None, steps=1000, batch_size=12))
    run = Run(config, None)
    state = run.init_state()
    batch = {"tokens": np.random.default_rng(0).integers(0, len(vocab), (12, 65)).astype(np.int32)}
    step = run.train_step.lower(state, batch).compile()
    for _ in range(3):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(30):
            state, _ = step(state, batch)
        jax.block_until_ready(state)
        times.append((time.perf_counter() - t0) / 30 * 1000)
    print(json.dumps({"step_ms": min(times)}))
"""


def measure(what: str, layers: int, form: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, what, str(layers), form],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"error: {what} of {layers} layers ({form}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="1,4,8", help="depths to compile (comma-separated)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    import jax

    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {jax.default_backend()} "
             f"({jax.devices()[0].device_kind}), jax {jax.__version__}: "
             "`benchmarks/compile_time.py`.", "",
             "| case | scan unrolled (CPU default) | scan as a loop (GPU default) |",
             "|---|---|---|"]
    for layers in map(int, args.layers.split(",")):
        cells = []
        for form in ("unrolled", "loop"):
            r = measure("compile", layers, form)
            cells.append(f"{r['compile_s']:.1f} s (+{r['trace_s']:.1f} s tracing)")
            print(f"digits, {layers} layers, {form}: {cells[-1]}", file=sys.stderr)
        lines.append(f"| digits train step, {layers} layers: compile | {cells[0]} | {cells[1]} |")
    cells = []
    for form in ("unrolled", "loop"):
        cells.append(f"{measure('step', 4, form)['step_ms']:.1f} ms")
        print(f"baby GPT step, {form}: {cells[-1]}", file=sys.stderr)
    lines.append(f"| baby GPT train step (4 layers, batch 12) | {cells[0]} | {cells[1]} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
