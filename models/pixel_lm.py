"""Class-conditional digit generation with the Transformer of models/transformer.py.

An image is binarized, cut into 2x2 patches (196 tokens of 4 bits, a 16-symbol
vocabulary), and modelled in raster order after a class token. A patch and its 4
pixels are in one-to-one correspondence, so the summed token log-likelihood is the
exact log-likelihood of the 784 binary pixels.

Shapes: B batch, N samples, T = 196 patches, K = 16 patch symbols.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.models.binarize import dynamic_bits, test_bits
from jaxtrain.models.decoding import decode_fixed_length
from jaxtrain.models.family import Family, example_keys
from jaxtrain.models.transformer import (
    NUM_PATCHES,
    PATCH_SYMBOLS,
    TransformerConfig,
    networks,
    train_flops_per_token,
)


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


class PixelLMFamily(Family):
    """Class-conditional autoregressive model of binarized 28x28 images: a Transformer
    over 2x2 binary patches (the digits task, also Fashion-MNIST and image folders)."""

    sample_options = ("temperature", "top_k", "top_p")
    # The objective is per token; "nll" is the same per image, comparable with test_loss.
    units = {"train_loss": "nats/token", "train_nll": "nats/image", "test_loss": "nats/image"}
    tokens_per_example = NUM_PATCHES
    sample_pixels = "binary"  # what sample() returns (training/scoring/quality.py compares alike)
    target_pixels = "binary"  # the fixed test binarization (models/binarize.py)

    def __init__(self, config: TransformerConfig, precision: str = "float32"):
        if config.context != NUM_PATCHES:
            raise ValueError(f"--context must be {NUM_PATCHES} for digits (a class token and "
                             f"195 of the 196 2x2 patches), got {config.context}")
        self.config = config
        self.attention, self.model, self.decoder = networks(config, precision)
        self.flops_per_example = NUM_PATCHES * train_flops_per_token(config)

    def init(self, rng, batch_size):
        tokens = jnp.zeros((batch_size, NUM_PATCHES), jnp.int32)
        return self.model.init(rng, tokens)["params"]

    def _inputs(self, tokens, label):
        """The class token, then all patches but the last: [B, 196]."""
        return jnp.concatenate([PATCH_SYMBOLS + label[:, None], tokens[:, :-1]], axis=1)

    def _nll(self, params, bits, label, rngs=None, ids=None):
        tokens = image_to_tokens(bits)
        logits = self.model.apply({"params": params}, self._inputs(tokens, label),
                                  deterministic=rngs is None, rngs=rngs, ids=ids)
        return sequence_nll(logits, tokens)  # [B]

    def train_loss(self, params, batch, rng):
        """Mean nats per token on a fresh binarization of the batch (dynamic binarization,
        one key per example)."""
        binarize_rng, dropout_rng = jax.random.split(rng)
        bits = dynamic_bits(example_keys(binarize_rng, batch["row"]), batch["image"])  # [B, 784]
        nll = self._nll(params, bits, batch["label"], {"dropout": dropout_rng},
                        batch["row"])
        return nll.mean() / NUM_PATCHES, {"nll": nll.mean(),
                                          "bits_per_dim": nats_to_bits_per_dim(nll.mean())}

    def eval_sums(self, params, batch, rng):
        """Sums over real examples of the NLL of one fixed binarization of the test set:
        example i is binarized with key fold_in(PRNGKey(0), i), the same in every run
        and for every batch size. `rng` is unused: the test metric has no noise."""
        bits = test_bits(batch["image"], batch["index"])  # [B, 784]
        nll = self._nll(params, bits, batch["label"])
        return {"loss": jnp.sum(nll * batch["mask"]), "count": jnp.sum(batch["mask"])}

    def finalize(self, metrics):
        return {**metrics, "bits_per_dim": nats_to_bits_per_dim(metrics["loss"])}

    def sample(self, params, labels, rng, temperature=1.0, top_k=None, top_p=None):
        """Images [N, 28, 28] in {0, 1} of classes `labels` [N], drawn token by token."""
        first = PATCH_SYMBOLS + jnp.asarray(labels, jnp.int32)  # the class tokens [N]
        tokens = decode_fixed_length(self.decoder, params, first, NUM_PATCHES, rng,
                                     temperature, top_k, top_p)
        return np.asarray(tokens_to_image(tokens), np.float32).reshape(-1, 28, 28)

    def epoch_images(self, params, rng, preview):
        """One row per class, ten samples each, from a fixed key so epochs compare."""
        n = self.config.num_classes
        samples = self.sample(params, np.repeat(np.arange(n), n), rng)
        return {"samples": (samples, n)}
