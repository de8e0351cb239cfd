"""`jaxtrain export`: a checkpoint's EMA parameters as one safetensors file, with what
a reader needs to rebuild the model (the run's config, classes, vocabulary) in its
metadata, so another framework (benchmarks/torch_reference.py: PyTorch) can load it.

Layout: one float32 tensor per parameter, named by its path joined with "/" as `fit
--list-params` shows it ('encoder/Dense_0/kernel', 'Block_0/LayerNorm_0/scale'), in
Flax's shapes (a Dense kernel is [in, out]). A Transformer's blocks are written per
layer, Block_0, Block_1, ..., whether the run stacked them for nn.scan or not.
"""

import json
import os
from pathlib import Path

import jax
import numpy as np

from jaxtrain.models.transformer import relayout
from jaxtrain.training.engine.steps import param_path
from jaxtrain.training.rundir import checkpoint

FORMAT = "jaxtrain.export/1"


def tensors(params) -> dict[str, np.ndarray]:
    """{path: float32 contiguous array} of a parameter tree; the Transformer's stacked
    blocks as Block_0, Block_1, ... (models/transformer.py:relayout)."""
    leaves = jax.tree_util.tree_flatten_with_path(
        jax.device_get(relayout(params, scan_layers=False)))[0]  # (other trees: as they are)
    return {param_path(path): np.ascontiguousarray(leaf, np.float32) for path, leaf in leaves}


def metadata(config, step: int) -> dict[str, str]:
    """The file's metadata (safetensors keeps str -> str): format, model, task, step, the
    config as JSON, and the images' shape [H, W, C] and classes' names (images) or the
    vocabulary (text)."""
    meta = {"format": FORMAT, "model": config.model, "task": config.task, "step": str(step),
            "config": json.dumps(config.to_dict())}
    if config.data.is_text:
        if config.data.vocab is not None:
            meta["vocab"] = config.data.vocab
        if config.data.tokenizer_json is not None:  # a BPE's or a file's, as its JSON
            meta["tokenizer"] = config.data.tokenizer_json
    else:
        if config.model_config.image_shape is not None:
            meta["image_shape"] = json.dumps(list(config.model_config.image_shape))
        meta["class_names"] = json.dumps(list(config.data.labels))
    return meta


def export(workdir, step=None, out=None) -> tuple[Path, dict[str, str]]:
    """Writes the EMA parameters of checkpoint `step` (latest by default; "best") of the
    run in `workdir` to `out` [default: <workdir>/model.safetensors]; returns (the path,
    its metadata)."""
    from safetensors.numpy import save

    restored = checkpoint.restore(workdir, step, ema_only=True)
    out = Path(out) if out is not None else Path(workdir) / "model.safetensors"
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: pass a file name such as "
                         f"{out / 'model.safetensors'}")
    meta = metadata(restored.config, restored.step)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written whole then renamed, so an interrupted export leaves no half file; through
    # Python, so the file gets the umask's permissions (save_file makes it owner-only).
    partial = out.with_name(f"{out.name}.partial")
    partial.write_bytes(save(tensors(restored.ema_params), metadata=meta))
    os.replace(partial, out)
    return out, meta


def read(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of an exported file, as numpy arrays."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a jaxtrain export (format "
                             f"{meta.get('format')!r}, expected {FORMAT!r}): make one with "
                             "`jaxtrain export`")
        return {k: f.get_tensor(k) for k in f.keys()}, meta
