"""A decoder-only Transformer in Flax linen: the network alone.

Shapes: B batch, T sequence length, D model width, H heads, V input vocabulary,
K output vocabulary.

The model follows Flax's lm1b example: token and learned positional embeddings
(truncated normal, stddev 0.02), pre-LayerNorm blocks of causal self-attention and a
GELU MLP (widening 4), dropout after each, residual connections, a final LayerNorm and
an untied output projection. `config.replace(decode=True)` gives the sampling variant,
which keeps keys and values in Flax's `cache` collection, so one new token costs one
position, not the whole prefix (models/decoding.py runs it).

The tasks built on it: models/digits.py (class-conditional binarized images) and
models/charlm.py (a character-level language model).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtrain.models.configs import (  # noqa: F401 (re-exported)
    NUM_PATCHES,
    PATCH_SYMBOLS,
    TransformerConfig,
)
from jaxtrain.models.family import example_keys

embed_init = nn.initializers.truncated_normal(stddev=0.02)


def causal_attention(query, key, value, dropout_rng=None, dropout_rate=0.0,
                     broadcast_dropout=True, deterministic=True, block=64):
    """Exact causal softmax attention computed one block of `block` queries at a time:
    a block's scores stop at its last query, so about half of the T x T scores (and the
    softmax work on them) are never computed. A drop-in `attention_fn` for
    nn.MultiHeadDotProductAttention ([B, T, H, Dh] in and out), with the same attention
    dropout (one mask broadcast over batch and heads when `broadcast_dropout`)."""
    t, depth = query.shape[1], query.shape[-1]
    query = query / jnp.sqrt(depth).astype(query.dtype)
    outputs = []
    for i, start in enumerate(range(0, t, block)):
        end = min(t, start + block)
        scores = jnp.einsum("bqhd,bkhd->bhqk", query[:, start:end], key[:, :end])  # [B, H, b, e]
        causal = jnp.arange(end) <= jnp.arange(start, end)[:, None]  # [b, e]
        weights = jax.nn.softmax(jnp.where(causal, scores, jnp.finfo(scores.dtype).min))
        if not deterministic and dropout_rate > 0.0:
            shape = (1, 1, *weights.shape[2:]) if broadcast_dropout else weights.shape
            keep = jax.random.bernoulli(jax.random.fold_in(dropout_rng, i),
                                        1.0 - dropout_rate, shape)
            weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
        outputs.append(jnp.einsum("bhqk,bkhd->bqhd", weights, value[:, :end]))  # [B, b, H, Dh]
    return jnp.concatenate(outputs, axis=1)  # [B, T, H, Dh]


class ExampleDropout(nn.Module):
    """nn.Dropout with one mask per example, drawn from example_keys(key, ids): a batch
    split into micro-batches (gradient accumulation) then drops exactly what the whole
    batch drops. `ids` [B] are the examples' rows in the whole batch (default 0..B-1)."""

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool, ids=None):
        if deterministic or self.rate == 0.0:
            return x
        ids = jnp.arange(x.shape[0]) if ids is None else ids
        keys = example_keys(self.make_rng("dropout"), ids)  # [B, 2]
        keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - self.rate, x.shape[1:]))(keys)
        return jnp.where(keep, x / (1.0 - self.rate), 0.0)


class Block(nn.Module):
    """Pre-LayerNorm residual block: causal self-attention, then a GELU MLP."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x, deterministic: bool, ids=None):
        c = self.config
        # The attention dropout mask is one for the whole batch (broadcast over batch and
        # heads), so it too is the same however the batch is split.
        # In decode mode the attention's cache index masks the future, one query at a time.
        h = nn.MultiHeadDotProductAttention(
            num_heads=c.heads, dropout_rate=c.dropout, deterministic=deterministic,
            decode=c.decode,
            attention_fn=nn.dot_product_attention if c.decode else causal_attention,
        )(nn.LayerNorm()(x))
        x = x + ExampleDropout(c.dropout)(h, deterministic, ids)  # [B, T, D]
        h = nn.Dense(4 * c.d_model)(nn.LayerNorm()(x))  # [B, T, 4D]
        h = nn.Dense(c.d_model)(nn.gelu(h))  # [B, T, D]
        return x + ExampleDropout(c.dropout)(h, deterministic, ids)


class Transformer(nn.Module):
    """Tokens [B, T] -> logits [B, T, K]. In decode mode T is 1 and positions advance
    with each call. `ids` [B]: the examples' rows in the step's whole batch, which key
    their dropout masks (see ExampleDropout)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens, deterministic: bool = True, ids=None):
        c = self.config
        embed = nn.Embed(c.vocab_size, c.d_model, embedding_init=embed_init)
        # A one-hot matmul, not a gather: on the CPU the gather's gradient (a scatter-add
        # into the table) costs more than this small matmul and its transpose.
        x = jax.nn.one_hot(tokens, c.vocab_size) @ embed.embedding  # [B, T, D]
        pos = self.param("pos_embedding", embed_init, (c.context, c.d_model))  # [T_max, D]
        if c.decode and self.has_variable("cache", "position"):
            position = self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
            x = x + jax.lax.dynamic_slice_in_dim(pos, position.value, 1)[None]
            position.value += 1
        else:
            if c.decode:  # first call: create the position counter with the cache
                self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
            x = x + pos[None, : tokens.shape[1]]
        x = ExampleDropout(c.dropout)(x, deterministic, ids)
        for _ in range(c.layers):
            x = Block(c)(x, deterministic, ids)
        return nn.Dense(c.output_size)(nn.LayerNorm()(x))  # [B, T, K]


def train_flops_per_token(config: TransformerConfig) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), nanoGPT's estimate: 6
    per weight plus the attention scores and sums (12 * layers * D * T). The count
    `make bench` uses for GFLOP/s."""
    weights = config.layers * 12 * config.d_model**2 + config.d_model * config.output_size
    return 6 * weights + 12 * config.layers * config.d_model * config.context
