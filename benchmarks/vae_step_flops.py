"""Why the conv VAE costs what it does on this machine: each network's training FLOPs per
example (XLA's cost analysis of the compiled step, as `jaxtrain fit` counts them) and
its train step's time at batch 128 on fixed batches, so the rate each reaches.

    python benchmarks/vae_step_flops.py [--steps 20] [--repeats 3]

Writes benchmarks/results/vae_step_flops.md and .json. The networks are those of
benchmarks/vae_conv.py's variants: the MLP default, the conv default (--channels 32,64)
and its widest (--channels 64,128,256).
"""

import argparse
import dataclasses
import datetime
import json
import os

import bench  # benchmarks/, beside this script
import jax
import numpy as np
from timing import timed

from jaxtrain.models.vae import VAEFamily

NETWORKS = {"mlp": {}, "conv": {"network": "conv"},
            "conv-big": {"network": "conv", "channels": (64, 128, 256)}}
BATCH = 128


def measure(name: str, steps: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (BATCH, *bench.SHAPE), dtype=np.uint8),
             "label": rng.integers(0, 10, BATCH).astype(np.int32)}
    family = VAEFamily(dataclasses.replace(bench.VAE, **NETWORKS[name]))
    flops = bench.step_flops(family, batch, BATCH)
    run = bench.jax_steps(family, batch, steps, BATCH)
    run()  # compiles
    median, low, high = (s / steps for s in timed(run, repeats))
    return {"mflop_per_example": flops / 1e6, "step_ms": 1e3 * median,
            "step_ms_range": [1e3 * low, 1e3 * high], "gflops": flops * BATCH / median / 1e9}


def table(out: dict) -> str:
    base = out["networks"]["mlp"]
    rows = [f"Measured {out['date']} on {out['cores']} CPU cores (jax {out['jax']}), "
            f"by `python benchmarks/vae_step_flops.py`: the train step at batch {BATCH} on "
            "fixed batches, median of the repeats (min-max); FLOPs from XLA's cost analysis "
            "of the compiled step.", "",
            "| network | MFLOP per example | x MLP | step (ms) | x MLP | GFLOP/s |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, r in out["networks"].items():
        low, high = r["step_ms_range"]
        rows.append(f"| {name} | {r['mflop_per_example']:.1f} | "
                    f"{r['mflop_per_example'] / base['mflop_per_example']:.1f}x | "
                    f"{r['step_ms']:.1f} ({low:.1f}-{high:.1f}) | "
                    f"{r['step_ms'] / base['step_ms']:.1f}x | {r['gflops']:.0f} |")
    return "\n".join(rows) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out = {"date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
           "jax": jax.__version__,
           "networks": {name: measure(name, args.steps, args.repeats) for name in NETWORKS}}
    results = bench.ROOT / "benchmarks" / "results"
    (results / "vae_step_flops.json").write_text(json.dumps(out, indent=1) + "\n")
    (results / "vae_step_flops.md").write_text(table(out))
    print(table(out))


if __name__ == "__main__":
    main()
