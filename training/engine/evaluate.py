"""Evaluation of a run's parameters: the test metrics over every test example, and the
importance-weighted likelihood of a VAE. The keys are the record's (training/metrics.py).
"""

import functools
import math

import jax
import jax.numpy as jnp

from jaxtrain.training.engine.run import Run
from jaxtrain.training.engine.steps import run_keys
from jaxtrain.training.metrics import test_key

IMAGE_DIMS = 784  # pixels of a 28x28 image


def evaluate(run: Run, params, source) -> dict:
    """Mean test metrics over every test example (or fixed text window) exactly once.
    A family that draws noise in evaluation (the VAE's z) draws it per test example from
    the one eval key, so the figure does not depend on the batch size."""
    key = run_keys(run.config.train.seed)["eval"]
    sums = None
    for batch in source.eval_batches():
        s = run.eval_step(params, run.parallel.put_batch(batch), key)
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    sums = jax.device_get(sums)
    count = sums.pop("count")
    metrics = run.family.finalize({k: float(v / count) for k, v in sums.items()})
    return {test_key(k): v for k, v in metrics.items()}


def evaluate_iw(run: Run, params, source, samples: int, chunk_images: int = 16384) -> dict:
    """The importance-weighted estimate of -log p(x | c) (models/vae.py:iw_sums) with
    `samples` samples, averaged over every test image: {"test_iw_nll" (nats/image),
    "test_iw_bits_per_dim", "iw_samples"}. About `chunk_images` decoded images are in memory
    at a time."""
    family = run.family
    if not hasattr(family, "iw_sums"):
        raise ValueError(f"the importance-weighted likelihood applies to VAE runs, not to a "
                         f"{run.config.model} run (whose test loss is already an exact NLL)")
    chunk = max(1, min(samples, chunk_images // run.config.train.batch_size))
    step = jax.jit(functools.partial(family.iw_sums, samples=samples, chunk=chunk))
    # A key of its own: the IW samples are not the ELBO's z.
    key = jax.random.fold_in(run_keys(run.config.train.seed)["eval"], 1)
    sums = None
    for batch in source.eval_batches():
        s = step(params, run.parallel.put_batch(batch), key)
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    sums = jax.device_get(sums)
    nll = float(sums["iw_nll"] / sums["count"])
    return {"test_iw_nll": nll, "test_iw_bits_per_dim": nll / (IMAGE_DIMS * math.log(2)),
            "iw_samples": samples}

