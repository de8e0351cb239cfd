"""The device's peak matmul rate, measured once and cached, for model FLOP utilisation.

`--peak-gflops auto` times a large float32 matmul (the rate `make bench` calls the
peak) and keeps the figure in <cache>/jaxtrain/peak_gflops.json, keyed by device kind
and CPU count, so later runs read it instead of measuring again.
"""

import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxtrain.training.host.paths import default_data_dir


def _measure(n: int, repeats: int = 5) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    matmul = jax.jit(jnp.dot)
    matmul(a, a).block_until_ready()  # compile and warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def peak_gflops(path=None) -> tuple[float, bool]:
    """(GFLOP/s, whether it came from the cache) for this machine's first device."""
    device = jax.devices()[0]
    key = f"{device.platform}:{device.device_kind}:{os.cpu_count()}"
    path = Path(path or Path(default_data_dir()) / "peak_gflops.json")
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return float(cached[key]), True
    value = _measure(2048 if device.platform == "cpu" else 8192)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**cached, key: value}, indent=1))
    except OSError:
        pass  # a read-only cache only costs a measurement next time
    return value, False
