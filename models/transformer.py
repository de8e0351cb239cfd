"""A decoder-only Transformer in Flax linen: the network alone.

Shapes: B batch, T sequence length, D model width, H heads, Dh = D / H head width,
V input vocabulary, K output vocabulary.

The model follows Flax's lm1b example: token and learned positional embeddings
(truncated normal, stddev 0.02), pre-LayerNorm blocks of causal self-attention and a
GELU MLP (widening 4), dropout after each, residual connections, a final LayerNorm and
an untied output projection. `config.replace(decode=True)` gives the sampling variant,
which keeps keys and values in Flax's `cache` collection, so one new token costs one
position, not the whole prefix (models/decoding.py runs it).

Precision: `dtype` bfloat16 runs the matmuls and attention in bf16; parameters, the
residual stream, LayerNorm statistics, the logits and so every loss stay float32.

The tasks built on it: models/pixel_lm.py (class-conditional binarized images) and
models/charlm.py (a character-level language model).
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtrain.models.configs import (  # noqa: F401 (re-exported)
    PATCH_SYMBOLS,
    TransformerConfig,
)
from jaxtrain.models.family import PRECISIONS, example_keys

embed_init = nn.initializers.truncated_normal(stddev=0.02)


def attention_for(precision: str, config: TransformerConfig, backend: str | None = None) -> str:
    """The attention a training run uses, chosen once: cuDNN's fused (flash) attention on
    a GPU where it applies (bf16, no attention dropout, a head width that is a multiple
    of 8 up to 128), else the blocked attention."""
    head = config.d_model // config.heads
    fits = precision == "bf16" and config.dropout == 0 and head % 8 == 0 and head <= 128
    return "cudnn" if fits and (backend or jax.default_backend()) == "gpu" else "blocked"


def networks(config: TransformerConfig, precision: str):
    """(attention, training network, sampling network) of a task's Transformer: the
    attention chosen once (attention_for), the matmuls in `precision`'s dtype."""
    attention, dtype = attention_for(precision, config), PRECISIONS[precision]
    return (attention, Transformer(config, attention, dtype),
            Transformer(config.replace(decode=True, dropout=0.0), dtype=dtype))


def causal_attention(query, key, value, dropout_rng=None, dropout_rate=0.0,
                     deterministic=True, block=64):
    """Exact causal softmax attention, heads first ([B, H, T, Dh] in and out), computed
    one block of `block` queries at a time: a block's scores stop at its last query, so
    about half of the T x T scores (and the softmax work on them) are never computed.
    The softmax is float32 whatever the inputs' dtype. Attention dropout draws one mask
    per block, broadcast over batch and heads (the same however a batch is split)."""
    t, depth = query.shape[2], query.shape[-1]
    query = query / jnp.sqrt(depth).astype(query.dtype)
    outputs = []
    for i, start in enumerate(range(0, t, block)):
        end = min(t, start + block)
        scores = jnp.einsum("bhqd,bhkd->bhqk", query[:, :, start:end], key[:, :, :end],
                            preferred_element_type=jnp.float32)  # [B, H, b, e]
        causal = jnp.arange(end) <= jnp.arange(start, end)[:, None]  # [b, e]
        weights = jax.nn.softmax(jnp.where(causal, scores, jnp.finfo(scores.dtype).min))
        if not deterministic and dropout_rate > 0.0:
            keep = jax.random.bernoulli(jax.random.fold_in(dropout_rng, i), 1.0 - dropout_rate,
                                        weights.shape[2:])
            weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
        outputs.append(jnp.einsum("bhqk,bhkd->bhqd", weights.astype(value.dtype),
                                  value[:, :, :end]))  # [B, H, b, Dh]
    return jnp.concatenate(outputs, axis=2)  # [B, H, T, Dh]


class Projection(nn.Module):
    """The kernel and bias of one of nn.MultiHeadDotProductAttention's DenseGeneral
    layers, under its names, shapes and initialisers (LeCun normal on the flat kernel),
    so the sampling variant (which keeps Flax's attention for its cache) and checkpoints
    saved before this module read the same parameters. Returns them flat: the 2-D matmul
    XLA:CPU runs without copying a transpose."""

    kernel_shape: tuple[int, ...]
    inputs: int  # the kernel's leading axes that are inputs

    @nn.compact
    def __call__(self):
        fan_in = math.prod(self.kernel_shape[:self.inputs])
        fan_out = math.prod(self.kernel_shape[self.inputs:])
        kernel = self.param("kernel", lambda rng: nn.initializers.lecun_normal()(
            rng, (fan_in, fan_out)).reshape(self.kernel_shape))
        bias = self.param("bias", nn.initializers.zeros_init(), self.kernel_shape[self.inputs:])
        return kernel.reshape(fan_in, fan_out), bias.reshape(fan_out)


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention for training and evaluation, with the parameters
    of nn.MultiHeadDotProductAttention: the three projections fused into one [D, 3D]
    matmul on [B*T, D] rows, heads moved first once per layer, then the blocked
    attention, or cuDNN's flash attention (`attention="cudnn"`, bf16 on a GPU)."""

    heads: int
    dropout_rate: float
    attention: str = "blocked"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        b, t, d = x.shape
        h, dh = self.heads, d // self.heads
        kernels, biases = zip(*(Projection((d, h, dh), 1, name=n)()
                                for n in ("query", "key", "value")))
        kernel, bias = jnp.concatenate(kernels, axis=1), jnp.concatenate(biases)  # [D, 3D], [3D]
        qkv = x.reshape(b * t, d).astype(self.dtype) @ kernel.astype(self.dtype)
        qkv = (qkv + bias.astype(self.dtype)).reshape(b, t, 3, h, dh)
        if self.attention == "cudnn":
            q, k, v = qkv.transpose(2, 0, 1, 3, 4)  # each [B, T, H, Dh], contiguous
            out = jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                               implementation="cudnn")  # [B, T, H, Dh]
        else:
            q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # each [B, H, T, Dh]
            rng = None if deterministic or self.dropout_rate == 0 else self.make_rng("dropout")
            out = causal_attention(q, k, v, rng, self.dropout_rate, deterministic)
            out = out.transpose(0, 2, 1, 3)  # [B, T, H, Dh]
        out_kernel, out_bias = Projection((h, dh, d), 2, name="out")()
        out = out.reshape(b * t, d) @ out_kernel.astype(self.dtype) + out_bias.astype(self.dtype)
        return out.reshape(b, t, d)  # [B, T, D]


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


def dense_rows(layer: nn.Dense, x):
    """`layer` on [B, T, D] activations as one [B*T, D] matmul: XLA:CPU then needs no
    copy of a transposed gradient for the weight gradient."""
    return layer(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], layer.features)


class Block(nn.Module):
    """Pre-LayerNorm residual block: causal self-attention, then a GELU MLP. As the body
    of nn.scan (`scanned`) it returns (x, None), scan's (carry, output)."""

    config: TransformerConfig
    attention: str = "blocked"
    dtype: Any = jnp.float32
    scanned: bool = False

    @nn.compact
    def __call__(self, x, deterministic: bool, ids=None):
        c = self.config
        # The attention dropout mask is one for the whole batch (broadcast over batch and
        # heads), so it too is the same however the batch is split.
        # In decode mode Flax's attention keeps the cache; its index masks the future.
        name = "MultiHeadDotProductAttention_0"
        if c.decode:
            h = nn.MultiHeadDotProductAttention(
                num_heads=c.heads, dropout_rate=c.dropout, deterministic=deterministic,
                decode=True, dtype=self.dtype, name=name)(nn.LayerNorm()(x))
        else:
            h = CausalSelfAttention(c.heads, c.dropout, self.attention, self.dtype,
                                    name=name)(nn.LayerNorm()(x), deterministic)
        x = x + ExampleDropout(c.dropout)(h, deterministic, ids)  # [B, T, D]
        h = dense_rows(nn.Dense(4 * c.d_model, dtype=self.dtype), nn.LayerNorm()(x))  # [B, T, 4D]
        h = dense_rows(nn.Dense(c.d_model, dtype=self.dtype), nn.gelu(h))  # [B, T, D]
        x = x + ExampleDropout(c.dropout)(h, deterministic, ids)
        return (x, None) if self.scanned else x


# The scanned blocks' parameters: one subtree whose leaves stack the layers on axis 0
# (layer i is Block_i of the unrolled layout).
STACKED = "Blocks"


def blocks(config: TransformerConfig, attention: str, dtype, unroll: int | None = None):
    """The `config.layers` blocks as one module: an nn.scan of one Block over stacked
    parameters (and, decoding, stacked caches), as MaxText's scan_layers does. Each layer
    draws its own initialisation and dropout keys (split_rngs). How the scan is compiled:
    `unroll` layers an iteration, by default scan_unroll's choice."""
    return nn.scan(Block, variable_axes={"params": 0, "cache": 0},
                   split_rngs={"params": True, "dropout": True},
                   in_axes=(nn.broadcast, nn.broadcast), length=config.layers,
                   unroll=unroll or scan_unroll(config))(
        config, attention, dtype, scanned=True, name=STACKED)


def scan_unroll(config: TransformerConfig, backend: str | None = None) -> int:
    """Layers per iteration of the blocks' scan. On a GPU 1: XLA compiles (and autotunes)
    one block, whatever the depth. On a CPU all of them, one program unrolled as before
    the scan: there the looped backward pass made a step 16-35% slower (baby GPT, 4
    layers: 105-129 ms against 85-94 ms) and saved no compile time below 8 layers
    (benchmarks/results/compile_time.md). The parameters are stacked either way, so
    checkpoints move between the two."""
    return config.layers if (backend or jax.default_backend()) == "cpu" else 1


def relayout(params, scan_layers: bool):
    """A Transformer's parameters (or anything shaped like them: EMA, Adam moments) in
    the scanned layout (`scan_layers`: one STACKED subtree) or the unrolled one (Block_0,
    Block_1, ...): the same numbers, moved. A tree already in that layout is returned
    as it is."""
    unrolled = sorted((k for k in params if k.startswith("Block_")),
                      key=lambda k: int(k.split("_")[1]))
    rest = {k: v for k, v in params.items() if k != STACKED and not k.startswith("Block_")}
    if scan_layers and unrolled:
        return {**rest, STACKED: jax.tree.map(lambda *layers: jnp.stack(layers),
                                              *(params[k] for k in unrolled))}
    if not scan_layers and STACKED in params:
        n = jax.tree.leaves(params[STACKED])[0].shape[0]
        return {**rest, **{f"Block_{i}": jax.tree.map(lambda x: x[i], params[STACKED])
                           for i in range(n)}}
    return params


def layer_paths(path: str, leaf) -> list[str] | None:
    """The unrolled layout's names of a stacked leaf's layers ('Blocks/Dense_0/kernel' ->
    ['Block_0/Dense_0/kernel', 'Block_1/Dense_0/kernel', ...]), so `--freeze Block_0`
    and `--list-params` read the same in both layouts; None for any other leaf."""
    head, _, rest = path.partition("/")
    if head != STACKED:
        return None
    return [f"Block_{i}/{rest}" for i in range(leaf.shape[0])]


class Transformer(nn.Module):
    """Tokens [B, T] -> logits [B, T, K] (float32). In decode mode T is 1 and positions
    advance with each call. `ids` [B]: the examples' rows in the step's whole batch,
    which key their dropout masks (see ExampleDropout)."""

    config: TransformerConfig
    attention: str = "blocked"  # see attention_for
    dtype: Any = jnp.float32  # of the matmuls; see the module docstring
    unroll: int | None = None  # layers per iteration of the blocks' scan (see blocks)

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
        if c.scan_layers:
            x, _ = blocks(c, self.attention, self.dtype, self.unroll)(x, deterministic, ids)
        else:
            for _ in range(c.layers):
                x = Block(c, self.attention, self.dtype)(x, deterministic, ids)
        return dense_rows(nn.Dense(c.output_size), nn.LayerNorm()(x))  # [B, T, K]


def init_params(model: Transformer, rng, tokens):
    """`model`'s parameters for inputs shaped like `tokens`, initialised with the blocks'
    scan compiled as a loop (unroll 1) on every backend: a scan draws each layer's keys
    the same way however it is compiled, so the bits are the unrolled compile's (tested),
    and the loop compiles faster (a baby GPT's state: 3.95 -> 2.30 s cold on 2 CPU
    cores, 2026-12-03)."""
    return model.clone(unroll=1).init(rng, tokens)["params"]


def matmul_weights(config: TransformerConfig) -> int:
    """The weights a token meets in matmuls: 12 D^2 a layer (Q, K, V, output, the MLP's
    two) and the LM head's D x K (biases, norms and the embedding lookup left out)."""
    return config.layers * 12 * config.d_model**2 + config.d_model * config.output_size


def train_flops_per_token(config: TransformerConfig) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), nanoGPT's estimate: 6
    per weight plus the attention scores and sums (12 * layers * D * T). The count
    `make bench` uses for GFLOP/s."""
    return 6 * matmul_weights(config) + 12 * config.layers * config.d_model * config.context
