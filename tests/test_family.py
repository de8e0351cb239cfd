"""The family contract (models/family.py): every family satisfies it, the optional
members default to "no such feature", and the FLOPs a family reports for throughput
are 6 per weight of its matmuls (plus attention)."""

import math

import jax
import numpy as np

from jaxtrain.models.charlm import CharLMFamily
from jaxtrain.models.family import Family
from jaxtrain.models.pixel_lm import PixelLMFamily
from jaxtrain.models.transformer import TransformerConfig
from jaxtrain.models.vae import VAEConfig, VAEFamily
from jaxtrain.training.sources.tokenizer import CharTokenizer


def kernel_weights(params, exclude=("embedding", "pos_embedding")) -> int:
    """Weights of the matmuls: every "kernel" leaf (biases, norms, embeddings left out)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return sum(int(np.prod(leaf.shape)) for path, leaf in leaves
               if getattr(path[-1], "key", None) == "kernel")


def test_families_satisfy_the_protocol_and_count_their_flops():
    vae = VAEFamily(VAEConfig(encoder_widths=(8,), decoder_widths=(8,), latent_dim=2))
    config = TransformerConfig(layers=2, d_model=16, heads=2)
    digits = PixelLMFamily(config)
    text = CharLMFamily(config.replace(context=12, vocab_size=5, output_size=5),
                        CharTokenizer("abcde"))
    for family in (vae, digits, text):
        assert isinstance(family, Family)
        assert {"train_loss", "test_loss"} <= family.units.keys()
    # What each has of the optional members, and the defaults where it has none.
    assert (vae.attention, digits.attention, text.attention) == (None, "blocked", "blocked")
    assert vae.iw_sums is not None and digits.iw_sums is None and text.iw_sums is None
    assert (vae.sample_pixels, digits.sample_pixels, text.sample_pixels) == ("grey", "binary",
                                                                             None)
    assert vae.epoch_text(None, None) is None and text.epoch_images(None, None, None) == {}
    assert vae.tokens_per_example is None and vae.sample_options == ()
    assert vae.no_decay == ("prior_mean", "prior_logvar") and digits.no_decay == ()
    key = jax.random.PRNGKey(0)

    def shapes(family):  # the parameters' shapes, without computing them
        return jax.eval_shape(lambda: family.init(key, 2))

    assert vae.flops_per_example == 6 * kernel_weights(shapes(vae))
    for family, tokens in ((digits, 196), (text, 12)):
        attention = 12 * 2 * 16 * tokens  # scores and weighted sums, per token
        per_token = 6 * kernel_weights(shapes(family)) + attention
        assert math.isclose(family.flops_per_example, tokens * per_token)
    for family in (vae, digits, text):  # each no_decay name is a parameter's
        paths = {getattr(k, "key", None) for path, _ in
                 jax.tree_util.tree_flatten_with_path(shapes(family))[0] for k in path}
        assert set(family.no_decay) <= paths
