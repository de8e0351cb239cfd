"""What was tried to make the baby GPT's CPU train step faster, each against jaxtrain's own
step in one process: `python benchmarks/step_variants.py` writes
benchmarks/results/step_variants.{md,json}.

Each variant is compiled beside the current step and the two alternate, ROUNDS rounds of
STEPS steps each on one fixed batch (nanoGPT's baby GPT: batch 12, context 64, 4 x 128,
dropout 0); the speed-up is the current step's time over the variant's, pair by pair,
then the median, so a burst of load on the shared machine hits both sides of a pair. A
"current" row (the step against a second copy of itself) shows the noise. The variants
change only how the step is computed, not what: each one's gradients match the current
step's to float32 rounding (checked before it is timed).

- unrolled blocks: Block_0..3 as separate modules (`scan_layers` false): no per-layer
  slices of the stacked parameters, no stacking of their gradients;
- attention, additive mask: the causal mask added as 0 / -1e30 and the softmax written
  out with its row maximum outside the gradient (fewer operations than jax.nn.softmax
  over jnp.where);
- attention, custom VJP: the backward pass written by hand with FlashAttention's
  formulas (dS = P * (dP - rowsum(dO * O))), every product a plain batched matmul;
- 10 steps a call: `--steps-per-call 10`, the steps as one lax.scan, so Python and the
  runtime are entered once per 10 steps.
"""

import argparse
import contextlib
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import bench  # benchmarks/bench.py
import jax
import jax.numpy as jnp
import numpy as np
import torch_char_script as tcs  # benchmarks/torch_char_script.py

from jaxtrain.models import transformer
from jaxtrain.models.charlm import CharLMFamily
from jaxtrain.models.transformer import TransformerConfig
from jaxtrain.training.host.workarounds import tune_host
from jaxtrain.training.sources.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 117  # the Vim manual's characters; the step's speed does not depend on which


def _softmax_attention(query, key, value):
    """Causal attention over the whole context, additive mask, written-out softmax."""
    t = query.shape[2]
    scores = jnp.einsum("bhqd,bhkd->bhqk", query * (1 / np.sqrt(query.shape[-1])), key)
    scores = scores + jnp.where(jnp.arange(t) <= jnp.arange(t)[:, None], 0.0, -1e30)
    exp = jnp.exp(scores - jax.lax.stop_gradient(scores.max(-1, keepdims=True)))
    return jnp.einsum("bhqk,bhkd->bhqd", exp / exp.sum(-1, keepdims=True), value), exp


def additive_mask(query, key, value, *_, **__):
    return _softmax_attention(query, key, value)[0]


@jax.custom_vjp
def flash_backward(query, key, value):
    return _softmax_attention(query, key, value)[0]


def _forward(query, key, value):
    out, exp = _softmax_attention(query, key, value)
    return out, (query, key, value, exp / exp.sum(-1, keepdims=True), out)


def _backward(res, d_out):
    query, key, value, weights, out = res
    scale = 1 / np.sqrt(query.shape[-1])
    d_value = jnp.einsum("bhqk,bhqd->bhkd", weights, d_out)
    d_weights = jnp.einsum("bhqd,bhkd->bhqk", d_out, value)
    d_scores = weights * (d_weights - (d_out * out).sum(-1, keepdims=True)) * scale
    return (jnp.einsum("bhqk,bhkd->bhqd", d_scores, key),
            jnp.einsum("bhqk,bhqd->bhkd", d_scores, query), d_value)


flash_backward.defvjp(_forward, _backward)

# name -> (config change, attention function or None, steps per call)
VARIANTS = {
    "current (against itself: the noise)": ({}, None, 1),
    "unrolled blocks (scan_layers false)": ({"scan_layers": False}, None, 1),
    "attention: additive mask, written-out softmax": ({}, additive_mask, 1),
    "attention: custom VJP, FlashAttention's backward": (
        {}, lambda q, k, v, *_, **__: flash_backward(q, k, v), 1),
    "10 steps a call (lax.scan)": ({}, None, 10),
}


@contextlib.contextmanager
def attention(fn):
    """transformer.causal_attention replaced by `fn` while a step is traced."""
    saved = transformer.causal_attention
    transformer.causal_attention = fn or saved
    try:
        yield
    finally:
        transformer.causal_attention = saved


def step_runner(config, attend, per_call, tokens, steps):
    """A closure running `steps` of jaxtrain's step (bench.jax_steps), compiled with
    `attend` as the attention."""
    family = CharLMFamily(config, CharTokenizer("".join(map(chr, range(VOCAB)))))
    with attention(attend):
        run = bench.jax_steps(family, {"tokens": tokens}, steps, tcs.BATCH, per_call)
        run()
    return run


def same_gradients(config, variant_config, attend, tokens) -> float:
    """The largest difference between the current step's parameter gradients and the
    variant's (same parameters, moved to its layout), relative to the largest gradient."""
    tokenizer = CharTokenizer("".join(map(chr, range(VOCAB))))
    ours_family = CharLMFamily(config, tokenizer)
    theirs_family = CharLMFamily(variant_config, tokenizer)
    params = ours_family.init(jax.random.key(0), tokens.shape[0])

    def grads(family, p):
        return jax.grad(lambda p: family._token_nll(p, tokens).mean())(p)

    ours = grads(ours_family, params)
    with attention(attend):
        theirs = grads(theirs_family, transformer.relayout(params, variant_config.scan_layers))
    theirs = transformer.relayout(theirs, config.scan_layers)
    top = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(ours))
    return max(float(jnp.abs(a - b).max()) for a, b in
               zip(jax.tree.leaves(ours), jax.tree.leaves(theirs))) / top


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20, help="steps a timed call")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the tests")
    args = parser.parse_args()
    tune_host()  # as `jaxtrain fit` runs
    tiny = dict(layers=1, d_model=16, heads=2) if args.quick else dict(
        layers=tcs.LAYERS, d_model=tcs.D_MODEL, heads=tcs.HEADS)
    config = TransformerConfig(context=8 if args.quick else tcs.CONTEXT, vocab_size=VOCAB,
                               output_size=VOCAB, dropout=0.0, **tiny)
    rounds, steps = (2, 10) if args.quick else (args.rounds, args.steps)
    tokens = np.random.default_rng(0).integers(0, VOCAB, (tcs.BATCH, config.context + 1),
                                               dtype=np.int32)
    current = step_runner(config, None, 1, tokens, steps)
    results = {"date": datetime.date.today().isoformat(), "jax": jax.__version__,
               "cores": os.cpu_count(), "rounds": rounds, "steps": steps,
               "load_before": os.getloadavg()[0], "variants": {}}
    for name, (change, attend, per_call) in VARIANTS.items():
        print(f"{name} ...", file=sys.stderr, flush=True)
        variant_config = config.replace(**change)
        error = same_gradients(config, variant_config, attend, jnp.asarray(tokens))
        if error > 1e-4:
            raise SystemExit(f"{name}: its gradients differ from the step's by {error:.2g}")
        run = step_runner(variant_config, attend, per_call, tokens, steps)
        ours, theirs = [], []
        for _ in range(rounds):
            for fn, times in ((current, ours), (run, theirs)):
                t0 = time.perf_counter()
                fn()
                times.append(1e3 * (time.perf_counter() - t0) / steps)
        ratios = [a / b for a, b in zip(ours, theirs)]
        results["variants"][name] = {
            "current_ms": statistics.median(ours), "variant_ms": statistics.median(theirs),
            "speedup": statistics.median(ratios), "speedup_min": min(ratios),
            "speedup_max": max(ratios), "speedup_of_best": min(ours) / min(theirs),
            "gradient_difference": error}
    results["load_after"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_variants.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "step_variants.md").write_text(markdown(results))
    print(markdown(results))


def markdown(r) -> str:
    lines = [f"Measured {r['date']} on {r['cores']} CPU cores, jax {r['jax']}; load average "
             f"{r['load_before']:.2f} before, {r['load_after']:.2f} after. Written by "
             "`python benchmarks/step_variants.py`: nanoGPT's baby GPT train step (batch 12, "
             "context 64, 4 x 128), the current step and a variant alternating, "
             f"{r['rounds']} rounds of {r['steps']} steps; speed-up = the current step's time "
             "/ the variant's, the median of the pairs (min-max), and the same for the best "
             "round of each. Gradient difference: the largest, relative to the largest "
             "gradient.", "",
             "| variant | current ms/step | variant ms/step | speed-up (min-max) | "
             "best / best | gradient difference |", "|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        lines.append(f"| {name} | {v['current_ms']:.1f} | {v['variant_ms']:.1f} | "
                     f"{v['speedup']:.3f} ({v['speedup_min']:.2f}-{v['speedup_max']:.2f}) | "
                     f"{v['speedup_of_best']:.3f} | {v['gradient_difference']:.1e} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
