"""The VAE's losses: per-example, in nats, free functions of arrays (models/vae.py).

Shapes: B batch, then an image's axes (summed over), Z latent size.
"""

import jax
import jax.numpy as jnp
import optax


def per_example_sum(values):
    """[B, ...] -> [B]: the sum over everything but the batch axis."""
    return values.reshape(len(values), -1).sum(axis=-1)


def bernoulli_nll(logits, x):
    """-log p(x | logits) summed over pixels, x in [0, 1] (binary cross-entropy)."""
    return per_example_sum(optax.sigmoid_binary_cross_entropy(logits, x))  # [B]


def gaussian_nll(out, x):
    """The tutorial's squared error, 0.5 * ||out - x||^2 per image (not a normalized density)."""
    return per_example_sum(optax.l2_loss(out, x))  # [B]


def kl_divergence(mean, logvar, prior_mean=0.0, prior_logvar=0.0):
    """KL(N(mean, exp(logvar)) || N(prior_mean, exp(prior_logvar))) per example; the
    prior defaults to N(0, I)."""
    return 0.5 * jnp.sum(prior_logvar - logvar - 1.0
                         + (jnp.exp(logvar) + (mean - prior_mean) ** 2) / jnp.exp(prior_logvar),
                         axis=-1)  # [B]


def log_normal(x, mean, logvar):
    """log N(x; mean, exp(logvar)) summed over the last axis."""
    return -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + logvar + (x - mean) ** 2 / jnp.exp(logvar),
                          axis=-1)


def reconstruction_nll(config, out, x):
    return bernoulli_nll(out, x) if config.likelihood == "bernoulli" else gaussian_nll(out, x)


def decoded_image(config, out):
    """The image a decoder output stands for: the Bernoulli mean, or the clipped output."""
    return jax.nn.sigmoid(out) if config.likelihood == "bernoulli" else jnp.clip(out, 0.0, 1.0)


def fill_values(config, logits, key):
    """What a raster fill (models/networks.py:raster_fill) feeds forward and shows of a
    pixel with these logits: its decoded value, both; with binarize a bit drawn from its
    Bernoulli mean (the neighbours were bits in training) and the mean, shown as the
    independent model shows its means."""
    mean = decoded_image(config, logits)
    if not config.binarize:
        return mean, mean
    return jax.random.bernoulli(key, mean).astype(mean.dtype), mean
