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


def evaluate_iw(run: Evaluator, params, source, samples: int, chunk_images: int = 16384) -> dict:
    """The importance-weighted estimate of -log p(x | c) (models/vae.py:iw_sums) with
    `samples` samples, averaged over every test image: {"test_iw_nll" (nats/image),
    "test_iw_bits_per_dim", "iw_samples"}. About `chunk_images` decoded images are in memory
    at a time."""
    family = run.family
    if family.iw_sums is None:
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
    dims = math.prod(run.config.model_config.image_shape)  # bits per pixel value
    return {"test_iw_nll": nll, "test_iw_bits_per_dim": nll / (dims * math.log(2)),
            "iw_samples": samples}



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
