"""Seconds to load a `jaxtrain export` file into its PyTorch twin in a fresh process, the
imports apart: `python benchmarks/export_load.py model.safetensors` (docs/export.md)."""

import sys
import time

start = time.perf_counter()
import torch  # noqa: E402
import torch_reference  # noqa: E402 (benchmarks/, beside this script)

imported = time.perf_counter()
model, meta = torch_reference.load_exported(sys.argv[1])
loaded = time.perf_counter()
with torch.no_grad():
    if meta["model"] == "vae":
        model.images(torch.zeros(1, model.latent), torch.zeros(1, dtype=torch.long))
    else:
        model(torch.zeros(1, model.pos.shape[0], dtype=torch.long))
ran = time.perf_counter()
size = sum(p.numel() for p in model.parameters())
print(f"{meta['model']} on {meta['task']}, {size:,} parameters: import torch "
      f"{imported - start:.2f} s, load_exported {loaded - imported:.3f} s, a first forward "
      f"pass {ran - loaded:.3f} s")
