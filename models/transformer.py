"""A decoder-only Transformer in Flax linen, and class-conditional digit generation with it.

Shapes: B batch, T sequence length, D model width, H heads, V input vocabulary,
K output vocabulary.

The model follows Flax's lm1b example: token and learned positional embeddings
(truncated normal, stddev 0.02), pre-LayerNorm blocks of causal self-attention and a
GELU MLP (widening 4), dropout after each, residual connections, a final LayerNorm and
an untied output projection. `config.replace(decode=True)` gives the sampling variant,
which keeps keys and values in Flax's `cache` collection, so one new token costs one
position, not the whole prefix.

Digits: an image is binarized, cut into 2x2 patches (196 tokens of 4 bits, a
16-symbol vocabulary), and modelled in raster order after a class token. A patch and
its 4 pixels are in one-to-one correspondence, so the summed token log-likelihood is
the exact log-likelihood of the 784 binary pixels.
"""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

PATCH_SYMBOLS = 16  # 2x2 binary pixels
NUM_PATCHES = 196  # (28 / 2) ** 2


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture; saved with every checkpoint. vocab_size/output_size come from the task."""

    layers: int = 4
    d_model: int = 128
    heads: int = 4
    dropout: float = 0.1
    context: int = NUM_PATCHES
    vocab_size: int = PATCH_SYMBOLS + 10  # pixel symbols, then one token per class
    output_size: int = PATCH_SYMBOLS
    num_classes: int = 10
    decode: bool = False

    def __post_init__(self):
        for name in ("layers", "d_model", "heads", "context"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, "
                                 f"got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise ValueError(f"--d-model {self.d_model} must be a multiple of --heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


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


class Block(nn.Module):
    """Pre-LayerNorm residual block: causal self-attention, then a GELU MLP."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x, deterministic: bool):
        c = self.config
        # In decode mode the attention's cache index masks the future, one query at a time.
        h = nn.MultiHeadDotProductAttention(
            num_heads=c.heads, dropout_rate=c.dropout, deterministic=deterministic,
            decode=c.decode,
            attention_fn=nn.dot_product_attention if c.decode else causal_attention,
        )(nn.LayerNorm()(x))
        x = x + nn.Dropout(c.dropout)(h, deterministic=deterministic)  # [B, T, D]
        h = nn.Dense(4 * c.d_model)(nn.LayerNorm()(x))  # [B, T, 4D]
        h = nn.Dense(c.d_model)(nn.gelu(h))  # [B, T, D]
        return x + nn.Dropout(c.dropout)(h, deterministic=deterministic)


class Transformer(nn.Module):
    """Tokens [B, T] -> logits [B, T, K]. In decode mode T is 1 and positions advance
    with each call."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens, deterministic: bool = True):
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
        x = nn.Dropout(c.dropout)(x, deterministic=deterministic)
        for _ in range(c.layers):
            x = Block(c)(x, deterministic)
        return nn.Dense(c.output_size)(nn.LayerNorm()(x))  # [B, T, K]


# --- Digits as token sequences. ---


def image_to_tokens(bits):
    """Binary images [B, 784] -> patch tokens [B, 196] in 0..15, raster order of patches;
    a patch's token is its pixels (top-left, top-right, bottom-left, bottom-right) read
    as a 4-bit number."""
    b = bits.reshape(-1, 14, 2, 14, 2).transpose(0, 1, 3, 2, 4).reshape(-1, NUM_PATCHES, 4)
    return (b.astype(jnp.int32) * jnp.array([8, 4, 2, 1])).sum(-1)  # [B, 196]


def tokens_to_image(tokens):
    """The inverse of image_to_tokens: [B, 196] -> binary images [B, 784]."""
    bits = (tokens[..., None] >> jnp.array([3, 2, 1, 0])) & 1  # [B, 196, 4]
    return bits.reshape(-1, 14, 14, 2, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 784)


def sequence_nll(logits, tokens):
    """-log p(tokens) summed over the sequence: [B, T, K], [B, T] -> [B] (nats)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).sum(-1)


def nats_to_bits_per_dim(nats, dims=784):
    return nats / (dims * math.log(2))


class DigitsFamily:
    """Class-conditional autoregressive model of binarized 28x28 images."""

    name = "transformer"
    sample_options = ("temperature", "top_k")
    train_loss_unit = "nats/token"  # the objective; test_loss is nats per image
    tokens_per_example = NUM_PATCHES

    def __init__(self, config: TransformerConfig):
        if config.context != NUM_PATCHES:
            raise ValueError(f"--context must be {NUM_PATCHES} for digits (a class token and "
                             f"195 of the 196 2x2 patches), got {config.context}")
        self.config = config
        self.model = Transformer(config)
        self.decoder = Transformer(config.replace(decode=True, dropout=0.0))

    def init(self, rng, batch_size):
        tokens = jnp.zeros((batch_size, NUM_PATCHES), jnp.int32)
        return self.model.init(rng, tokens)["params"]

    def _inputs(self, tokens, label):
        """The class token, then all patches but the last: [B, 196]."""
        return jnp.concatenate([PATCH_SYMBOLS + label[:, None], tokens[:, :-1]], axis=1)

    def _nll(self, params, bits, label, rngs=None):
        tokens = image_to_tokens(bits)
        logits = self.model.apply({"params": params}, self._inputs(tokens, label),
                                  deterministic=rngs is None, rngs=rngs)
        return sequence_nll(logits, tokens)  # [B]

    def train_loss(self, params, batch, rng):
        """Mean nats per token on a fresh binarization of the batch (dynamic binarization)."""
        binarize_rng, dropout_rng = jax.random.split(rng)
        bits = jax.random.bernoulli(binarize_rng, batch["image"] / 255.0)  # [B, 784]
        nll = self._nll(params, bits, batch["label"], {"dropout": dropout_rng})
        return nll.mean() / NUM_PATCHES, {"nll": nll.mean(),
                                          "bits_per_dim": nats_to_bits_per_dim(nll.mean())}

    def eval_sums(self, params, batch, rng):
        """Sums over real examples of the NLL of one fixed binarization of the test set:
        example i is binarized with key fold_in(PRNGKey(0), i), the same in every run
        and for every batch size. `rng` is unused: the test metric has no noise."""
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(0), i))(batch["index"])
        bits = jax.vmap(jax.random.bernoulli)(keys, batch["image"] / 255.0)  # [B, 784]
        nll = self._nll(params, bits, batch["label"])
        return {"test_loss": jnp.sum(nll * batch["mask"]), "count": jnp.sum(batch["mask"])}

    def finalize(self, metrics):
        return {**metrics, "bits_per_dim": nats_to_bits_per_dim(metrics["test_loss"])}

    def sample(self, params, labels, rng, temperature=1.0, top_k=None):
        """Images [N, 28, 28] in {0, 1} of classes `labels` [N], drawn token by token."""
        tokens = _sample_tokens(self.decoder, params, jnp.asarray(labels, jnp.int32), rng,
                                float(temperature), top_k)
        return np.asarray(tokens_to_image(tokens), np.float32).reshape(-1, 28, 28)

    def epoch_images(self, params, rng, preview):
        """One row per class, ten samples each, from a fixed key so epochs compare."""
        n = self.config.num_classes
        samples = self.sample(params, np.repeat(np.arange(n), n), rng)
        return {"samples": (samples, n)}


def _sample_tokens(decoder, params, labels, rng, temperature, top_k):
    n = labels.shape[0]
    cache = decoder.init(rng, jnp.zeros((n, NUM_PATCHES), jnp.int32))["cache"]
    return _decode(decoder, params, cache, labels, rng, temperature, top_k)


def _decode_impl(decoder, params, cache, labels, rng, temperature, top_k):
    def step(carry, i):
        cache, token = carry
        logits, variables = decoder.apply({"params": params, "cache": cache}, token[:, None],
                                          mutable=["cache"])
        next_token = pick(logits[:, 0], jax.random.fold_in(rng, i), temperature, top_k)
        return (variables["cache"], next_token), next_token

    first = PATCH_SYMBOLS + labels  # [N]
    _, tokens = jax.lax.scan(step, (cache, first), jnp.arange(NUM_PATCHES))
    return tokens.T  # [N, 196]


_decode = jax.jit(_decode_impl, static_argnums=(0, 5, 6))


def pick(logits, rng, temperature, top_k):
    """The next token from logits [N, K]: greedy at temperature 0, else sampled from the
    temperature-scaled softmax restricted to the top_k logits (all when None)."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1)
    logits = logits / temperature
    if top_k is not None:
        if top_k > logits.shape[-1]:  # shapes are static, so this holds under jit too
            raise ValueError(f"--top-k {top_k} exceeds the {logits.shape[-1]} possible tokens")
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [N, 1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(rng, logits)


# --- Characters as token sequences. ---


class TextFamily:
    """Character-level language model; `vocab` holds the characters, token i = vocab[i]."""

    name = "transformer"
    sample_options = ("temperature", "top_k")
    train_loss_unit = "nats/char"

    def __init__(self, config: TransformerConfig, vocab: str):
        if not vocab or config.vocab_size != len(vocab) or config.output_size != len(vocab):
            raise ValueError(f"a text model needs vocab_size = output_size = {len(vocab or '')} "
                             f"(its vocabulary), got {config.vocab_size}/{config.output_size}")
        self.config, self.vocab = config, vocab
        self.model = Transformer(config)
        self.decoder = Transformer(config.replace(decode=True, dropout=0.0))
        self.tokens_per_example = config.context

    def init(self, rng, batch_size):
        tokens = jnp.zeros((batch_size, self.config.context), jnp.int32)
        return self.model.init(rng, tokens)["params"]

    def _token_nll(self, params, tokens, rngs=None):
        logits = self.model.apply({"params": params}, tokens[:, :-1], deterministic=rngs is None,
                                  rngs=rngs)  # [B, T, V]
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])  # [B, T]

    def train_loss(self, params, batch, rng):
        loss = self._token_nll(params, batch["tokens"], {"dropout": rng}).mean()
        return loss, {"bits_per_char": loss / math.log(2)}

    def eval_sums(self, params, batch, rng):
        """Sums over the real windows' characters; test_loss is nats per character."""
        nll = self._token_nll(params, batch["tokens"]).sum(-1)  # [B]
        return {"test_loss": jnp.sum(nll * batch["mask"]),
                "count": jnp.sum(batch["mask"]) * self.config.context}

    def finalize(self, metrics):
        return {**metrics, "bits_per_char": metrics["test_loss"] / math.log(2)}

    def epoch_images(self, params, rng, preview):
        return {}

    def generate(self, params, prompt: np.ndarray, length: int, rng, temperature=1.0,
                 top_k=None) -> np.ndarray:
        """`length` tokens following `prompt` [P]. Within the context the key/value cache
        makes each token cost one position; past it, the last `context` tokens are run
        through the model again for each new token (the positions are learned, so a
        window cannot slide inside the cache)."""
        c = self.config
        if not 1 <= len(prompt) <= c.context:
            raise ValueError(f"the prompt has {len(prompt)} characters; it needs 1 to "
                             f"{c.context} (the model's context)")
        step = _cached_step(self.decoder)
        cache = self.decoder.init(rng, jnp.zeros((1, c.context), jnp.int32))["cache"]
        for token in prompt:
            logits, cache = step(params, cache, jnp.array([[token]], jnp.int32))
        tokens = list(prompt)
        window = _window_logits(self.model)
        for i in range(length):
            token = int(pick(logits, jax.random.fold_in(rng, i), temperature, top_k)[0])
            tokens.append(token)
            if len(tokens) < c.context:
                logits, cache = step(params, cache, jnp.array([[token]], jnp.int32))
            else:
                logits = window(params, jnp.array([tokens[-c.context:]], jnp.int32))
        return np.array(tokens[len(prompt):], np.int32)


@functools.cache
def _cached_step(decoder):
    @jax.jit
    def step(params, cache, token):
        logits, variables = decoder.apply({"params": params, "cache": cache}, token,
                                          mutable=["cache"])
        return logits[:, -1], variables["cache"]

    return step


@functools.cache
def _window_logits(model):
    return jax.jit(lambda params, tokens: model.apply({"params": params}, tokens)[:, -1])
