"""Evaluation of a run's parameters: the test metrics over every test example, the
importance-weighted likelihood of a VAE, and the test part of the loop's record. The
keys are the record's (training/metrics.py).
"""

import functools
import math
import time

import jax
import jax.numpy as jnp

from jaxtrain.training.engine.parallel import is_primary, local_copy, say
from jaxtrain.training.engine.run import Evaluator
from jaxtrain.training.engine.steps import run_keys, sample_key
from jaxtrain.training.metrics import test_key


def eval_batch_size(run: Evaluator, source) -> int:
    """Rows per evaluation batch: the family's eval_rows (models/family.py) rounded down
    to a multiple of the training batch (so each device gets equal rows), at most the
    test set rounded up; else the training batch size."""
    b, rows = run.config.train.batch_size, run.family.eval_rows
    return b * max(1, min((rows or 0) // b, -(-source.eval_examples // b)))


def evaluate(run: Evaluator, params, source) -> dict:
    """Mean test metrics over every test example (or fixed text window) exactly once.
    A family that draws noise in evaluation (the VAE's z) draws it per test example from
    the one eval key, so the figure does not depend on the batch size (but for the
    float rounding of the sums)."""
    key = run_keys(run.config.train.seed)["eval"]
    sums = None
    for batch in source.eval_batches(eval_batch_size(run, source)):
        s = run.eval_step(params, run.parallel.put_batch(batch), key)
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    sums = jax.device_get(sums)
    count = sums.pop("count")
    metrics = run.family.finalize({k: float(v / count) for k, v in sums.items()})
    return {test_key(k): v for k, v in metrics.items()}


# The most scratch memory one pass of the importance-weighted program may take (XLA's own
# count of it): a pass decodes as many samples per test image as fit, whatever the
# network. At batch 128 the MLP's 128 a pass take 0.15 GiB; the conv's would take 2.3 GiB,
# so it decodes 55 (its `eval --iw-samples 100`: peak RSS 4.30 GB at 100, 2.94 at 55).
IW_SCRATCH_BYTES = 1 << 30


def iw_chunk(iw_sums, params, batch, key, samples: int, chunk_images: int,
             scratch_bytes: int = IW_SCRATCH_BYTES) -> int:
    """Samples per test image that one pass of `iw_sums` decodes: at most `chunk_images`
    decoded images, and at most `scratch_bytes` of scratch, per XLA's memory analysis of
    the program compiled for 2 samples a pass (half of which is an upper bound on one
    sample's share)."""
    b = len(batch["label"])
    chunk = max(1, min(samples, chunk_images // b))
    probe = jax.jit(functools.partial(iw_sums, samples=2, chunk=2)).lower(params, batch, key)
    memory = probe.compile().memory_analysis()
    if memory is not None and memory.temp_size_in_bytes > 0:
        chunk = min(chunk, max(1, int(scratch_bytes // (memory.temp_size_in_bytes / 2))))
    return chunk


def evaluate_iw(run: Evaluator, params, source, samples: int, chunk_images: int = 16384,
                scratch_bytes: int = IW_SCRATCH_BYTES) -> dict:
    """The importance-weighted estimate of -log p(x | c) (models/vae.py:iw_sums) with
    `samples` samples, averaged over every test example: {"test_iw_nll" (nats/image),
    "test_iw_bits_per_dim", "iw_samples", "iw_chunk"}. A pass decodes at most `chunk_images` images
    and takes at most about `scratch_bytes` of scratch (iw_chunk)."""
    family = run.family
    if family.iw_sums is None:
        raise ValueError(f"the importance-weighted likelihood applies to VAE runs, not to a "
                         f"{run.config.model} run (whose test loss is already an exact NLL)")
    # A key of its own: the IW samples are not the ELBO's z.
    key = jax.random.fold_in(run_keys(run.config.train.seed)["eval"], 1)
    sums, step = None, None
    for batch in source.eval_batches():
        batch = run.parallel.put_batch(batch)
        if step is None:
            chunk = iw_chunk(family.iw_sums, params, batch, key, samples, chunk_images,
                             scratch_bytes)
            step = jax.jit(functools.partial(family.iw_sums, samples=samples, chunk=chunk))
        s = step(params, batch, key)
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    sums = jax.device_get(sums)
    nll = float(sums["iw_nll"] / sums["count"])
    dims = math.prod(run.config.model_config.image_shape)  # bits per pixel value
    return {"test_iw_nll": nll, "test_iw_bits_per_dim": nll / (dims * math.log(2)),
            "iw_samples": samples, "iw_chunk": chunk}


def evaluate_record(run: Evaluator, params, source, final: bool = False) -> dict:
    """The test part of an evaluation's record: the test metrics and eval_s; at the
    run's end (`final`) also the measures of --final-eval: iw=K, the importance-weighted
    test NLL (test_iw_nll, test_iw_bits_per_dim, iw_samples, iw_s); samples=N, the
    judge's scores of N samples per class (test_class_accuracy, test_frechet, ...:
    training/scoring/quality.py), drawn by the first process alone."""
    t = time.perf_counter()
    record = evaluate(run, params, source)
    record["eval_s"] = time.perf_counter() - t
    options = run.config.train.final_eval_options() if final else {}
    if "iw" in options:
        samples = options["iw"]
        t = time.perf_counter()
        iw = evaluate_iw(run, params, source, samples)
        record.update(iw, iw_s=time.perf_counter() - t)
        say(f"importance-weighted test NLL ({samples} samples): {iw['test_iw_nll']:.2f} "
            f"nats/image ({iw['test_iw_bits_per_dim']:.4f} bits/dim; the -ELBO is "
            f"{record['test_loss']:.2f})")
    if "samples" in options and is_primary():  # one process trains and asks the judge
        from jaxtrain.training.scoring.judge import judge_of
        from jaxtrain.training.scoring.quality import describe_quality, sample_quality

        judge = judge_of(run.config.data, source)
        quality = sample_quality(run, local_copy(params), source, judge, options["samples"],
                                 sample_key(run.config.train.seed))
        record.update(quality)
        say(describe_quality(quality))
    return record
