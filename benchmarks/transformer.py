"""Transformer speed: training tokens/s, and sampling 16 digits with and without the
key/value cache.

    python benchmarks/transformer.py [--repeats 3]

Configs: the default digits model (4 layers, width 128, 4 heads, 196 tokens, batch 32)
and the text config of the Transformer issue (same model, vocabulary 65, context 256,
batch 32). Steps are timed after compilation, on a fixed batch.
"""

import argparse
import string

import jax
import jax.numpy as jnp
import numpy as np
from timing import timed  # benchmarks/timing.py, beside this script

from jaxtrain.models.transformer import (
    NUM_PATCHES,
    PATCH_SYMBOLS,
    DigitsFamily,
    TextFamily,
    TransformerConfig,
    pick,
)
from jaxtrain.training.config import TrainConfig
from jaxtrain.training.steps import create_state, make_optimizer, make_schedule, make_train_step


def train_tokens_per_s(family, batch, tokens_per_step, steps, repeats):
    train = TrainConfig(batch_size=len(next(iter(batch.values()))), warmup_steps=10)
    schedule = make_schedule(train, 10_000)
    state = create_state(family, train, make_optimizer(train, schedule))
    step = make_train_step(family, schedule, 0.998)
    state, _ = step(state, batch)
    jax.block_until_ready(state)

    def run():
        nonlocal state
        for _ in range(steps):
            state, _ = step(state, batch)
        jax.block_until_ready(state)

    med, lo, hi = timed(run, repeats)
    return tuple(steps * tokens_per_step / t for t in (med, hi, lo))


def sample_without_cache(model, params, labels, rng):
    """Each new token runs the whole (padded) sequence through the model: no cache."""
    forward = jax.jit(lambda tokens: model.apply({"params": params}, tokens))
    tokens = jnp.zeros((len(labels), NUM_PATCHES), jnp.int32).at[:, 0].set(PATCH_SYMBOLS + labels)
    out = []
    for i in range(NUM_PATCHES):
        logits = forward(tokens)[:, i]
        token = pick(logits, jax.random.fold_in(rng, i), 1.0, None)
        out.append(token)
        if i + 1 < NUM_PATCHES:
            tokens = tokens.at[:, i + 1].set(token)
    return jnp.stack(out, 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    digits = DigitsFamily(TransformerConfig())
    batch = {"image": rng.random((32, 784), dtype=np.float32),
             "label": rng.integers(0, 10, 32).astype(np.int32)}
    med, lo, hi = train_tokens_per_s(digits, batch, 32 * NUM_PATCHES, args.steps, args.repeats)
    print(f"digits (4 layers, d 128, 4 heads, 196 tokens, batch 32): "
          f"{med:,.0f} tokens/s ({lo:,.0f}-{hi:,.0f})", flush=True)

    vocab = string.printable[:65]  # a Shakespeare-sized vocabulary
    text = TextFamily(TransformerConfig(context=256, vocab_size=65, output_size=65), vocab)
    batch = {"tokens": rng.integers(0, 65, (32, 257)).astype(np.int32)}
    med, lo, hi = train_tokens_per_s(text, batch, 32 * 256, args.steps, args.repeats)
    print(f"text (4 layers, d 128, 4 heads, context 256, batch 32): "
          f"{med:,.0f} tokens/s ({lo:,.0f}-{hi:,.0f})", flush=True)

    params = digits.init(jax.random.PRNGKey(0), 1)
    labels = np.arange(16) % 10
    key = jax.random.PRNGKey(0)
    digits.sample(params, labels, key)  # compile
    cached = timed(lambda: digits.sample(params, labels, key), args.repeats)
    sample_without_cache(digits.model, params, jnp.asarray(labels), key)  # compile
    uncached = timed(
        lambda: jax.block_until_ready(sample_without_cache(digits.model, params,
                                                           jnp.asarray(labels), key)),
        args.repeats)
    print(f"sample 16 digits: with cache {cached[0]:.2f} s, without {uncached[0]:.2f} s "
          f"({uncached[0] / cached[0]:.1f}x)")


if __name__ == "__main__":
    main()
