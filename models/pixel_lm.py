"""Class-conditional image generation with the Transformer of models/transformer.py.

An image [H, W, C] is binarized and cut into 2x2 patches of each channel (T = H/2 * W/2
* C tokens of 4 bits, a 16-symbol vocabulary), modelled in raster order after a class
token; at each patch position the channels follow one another (R, G, B), so a colour's
channels are predicted from the ones before. A patch and its 4 pixels are in one-to-one
correspondence, so the summed token log-likelihood is the exact log-likelihood of the
H * W * C binary pixels.

Shapes: B batch, N samples, T patches, K = 16 patch symbols.
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
    PATCH_SYMBOLS,
    TransformerConfig,
    init_params,
    networks,
)


def num_patches(shape) -> int:
    """Tokens of an image of `shape` (H, W, C): its 2x2 patches, per channel."""
    h, w, c = shape
    return (h // 2) * (w // 2) * c


def image_to_tokens(bits):
    """Binary images [B, H, W, C] -> patch tokens [B, T] in 0..15, raster order of
    patches, channels innermost; a patch's token is its pixels (top-left, top-right,
    bottom-left, bottom-right) read as a 4-bit number."""
    b, h, w, c = bits.shape
    p = bits.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    return (p.reshape(b, -1, 4).astype(jnp.int32) * jnp.array([8, 4, 2, 1])).sum(-1)  # [B, T]


def tokens_to_image(tokens, shape):
    """The inverse of image_to_tokens: [B, T] -> binary images [B, H, W, C]."""
    h, w, c = shape
    bits = (tokens[..., None] >> jnp.array([3, 2, 1, 0])) & 1  # [B, T, 4]
    bits = bits.reshape(-1, h // 2, w // 2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return bits.reshape(-1, h, w, c)


# One program where the samplers call it (not a compile per operation).
_tokens_to_image = jax.jit(tokens_to_image, static_argnums=1)


def sequence_nll(logits, tokens):
    """-log p(tokens) summed over the sequence: [B, T, K], [B, T] -> [B] (nats)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).sum(-1)


def nats_to_bits_per_dim(nats, dims):
    return nats / (dims * math.log(2))


class PixelLMFamily(Family):
    """Class-conditional autoregressive model of binarized images: a Transformer over
    2x2 binary patches (the digits task, also Fashion-MNIST and image folders)."""

    sample_options = ("temperature", "top_k", "top_p")
    # The objective is per token; "nll" is the same per image, comparable with test_loss.
    units = {"train_loss": "nats/token", "train_nll": "nats/image", "test_loss": "nats/image"}
    sample_pixels = "binary"  # what sample() returns (training/scoring/quality.py compares alike)
    target_pixels = "binary"  # the fixed test binarization (models/binarize.py)

    def __init__(self, config: TransformerConfig, precision: str = "float32"):
        h, w, _ = self.shape = tuple(config.image_shape)
        if h % 2 or w % 2:
            raise ValueError(f"the Transformer models images in 2x2 patches: their size must "
                             f"be even, got {h}x{w} (pass an even --image-size)")
        self.tokens_per_example = n = num_patches(self.shape)
        if config.context != n:
            raise ValueError(f"--context must be {n} for these images (a class token and "
                             f"{n - 1} of their {n} 2x2 patches), got {config.context}: "
                             "leave --context out")
        self.config = config
        self.pixels = math.prod(self.shape)
        self.attention, self.model, self.decoder = networks(config, precision)

    def init(self, rng, batch_size):
        tokens = jnp.zeros((batch_size, self.tokens_per_example), jnp.int32)
        return init_params(self.model, rng, tokens)

    def _inputs(self, tokens, label):
        """The class token, then all patches but the last: [B, T]."""
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
        bits = dynamic_bits(example_keys(binarize_rng, batch["row"]), batch["image"])
        nll = self._nll(params, bits, batch["label"], {"dropout": dropout_rng},
                        batch["row"])  # [B]
        return nll.mean() / self.tokens_per_example, {
            "nll": nll.mean(), "bits_per_dim": nats_to_bits_per_dim(nll.mean(), self.pixels)}

    def eval_sums(self, params, batch, rng):
        """Sums over real examples of the NLL of one fixed binarization of the test set:
        example i is binarized with key fold_in(PRNGKey(0), i), the same in every run
        and for every batch size. `rng` is unused: the test metric has no noise."""
        bits = test_bits(batch["image"], batch["index"])  # [B, H, W, C]
        nll = self._nll(params, bits, batch["label"])
        return {"loss": jnp.sum(nll * batch["mask"]), "count": jnp.sum(batch["mask"])}

    def finalize(self, metrics):
        return {**metrics, "bits_per_dim": nats_to_bits_per_dim(metrics["loss"], self.pixels)}

    def sample(self, params, labels, rng, temperature=1.0, top_k=None, top_p=None):
        """Images [N, H, W, C] in {0, 1} of classes `labels` [N], drawn token by token."""
        first = jnp.asarray(PATCH_SYMBOLS + np.asarray(labels, np.int32))  # class tokens [N]
        tokens = decode_fixed_length(self.decoder, params, first, self.tokens_per_example,
                                     rng, temperature, top_k, top_p)
        return np.asarray(_tokens_to_image(tokens, self.shape), np.float32)

    def epoch_images(self, params, rng, preview):
        """One row per class, ten samples each, from a fixed key so epochs compare."""
        n = self.config.num_classes
        samples = self.sample(params, np.repeat(np.arange(n), n), rng)
        return {"samples": (samples, n)}
