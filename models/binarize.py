"""Binarized images, shared by the families that model binary pixels: a fresh draw each
time a training image is seen (dynamic binarization), and one fixed draw of the test set
(example i from fold_in(PRNGKey(0), i), the same in every run, for any batch size and
for every family), so test likelihoods of the VAE and the digits Transformer are numbers
on one test set.
"""

import jax
import jax.numpy as jnp

from jaxtrain.models.family import example_keys


def dynamic_bits(keys, image):
    """Pixels [B, D] uint8 -> bits [B, D] in {0, 1}, pixel on with probability value/255,
    drawn from one key per example `keys` [B, 2]."""
    return jax.vmap(jax.random.bernoulli)(keys, image / 255.0).astype(jnp.float32)


def test_bits(image, index):
    """The fixed binarization of test examples `index` [B] (their positions in the test
    set): [B, D] in {0, 1}."""
    return dynamic_bits(example_keys(jax.random.PRNGKey(0), index), image)
