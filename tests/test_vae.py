import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DIGITS, SHAPE, fresh_params

from jaxtrain.models.family import example_keys
from jaxtrain.models.likelihoods import bernoulli_nll, fill_values, gaussian_nll, kl_divergence
from jaxtrain.models.networks import raster_fill
from jaxtrain.models.vae import VAE, VAEConfig, VAEFamily

TINY = VAEConfig(image_shape=SHAPE, encoder_widths=(16,), decoder_widths=(16,), latent_dim=4)


def test_shapes_and_parameter_count():
    family = VAEFamily(TINY)
    # (Jitted, as a run's init and steps are: one program, not a compile per operation.)
    params = fresh_params(family, 3)
    x = jnp.zeros((3, *SHAPE))
    label = jnp.array([0, 7, 9])
    keys = example_keys(jax.random.PRNGKey(1), jnp.arange(3))  # one per example
    out, (mean, logvar), _ = jax.jit(VAE(TINY).apply)({"params": params}, x, label, keys)
    assert out.shape == (3, *SHAPE) and mean.shape == logvar.shape == (3, 4)
    count = sum(p.size for p in jax.tree.leaves(params))
    # encoder (784 + 10 one-hot) * 16 + 16; mean and logvar 16 * 4 + 4 each; decoder
    # (4 + 10) * 16 + 16; output (16 + 10) * 784 + 784; prior mean and logvar 10 * 4 each.
    assert count == 12720 + 68 + 68 + 240 + 21168 + 80


def test_legacy_architecture_keeps_its_parameters():
    """Runs saved before `condition`, `prior` and `activation` existed rebuild their old
    network, and compute with ReLU."""
    from jaxtrain.training.settings.config import RunConfig

    saved = RunConfig.from_dict({"model": "vae", "model_config": {
        "encoder_widths": [16], "decoder_widths": [16], "latent_dim": 4, "image_dim": 784},
        "data": {}, "train": {}}).model_config
    assert (saved.condition, saved.prior, saved.activation) == ("latent", "standard", "relu")
    # a flat image_dim (runs before image shapes) was a square grey image; the MLP
    assert saved.image_shape == SHAPE and saved.network == "mlp"
    params = fresh_params(VAEFamily(saved), 3)
    # class projection 10 * 4 + 4; decoder 4 * 16 + 16; output 16 * 784 + 784.
    assert "class_proj" in params and "prior_mean" not in params
    assert sum(p.size for p in jax.tree.leaves(params)) == 12720 + 68 + 68 + 44 + 80 + 13328


def test_activation_changes_the_function_not_the_parameters():
    relu = VAEFamily(dataclasses.replace(TINY, activation="relu"))
    silu = VAEFamily(TINY)  # the default
    params = fresh_params(silu, 2)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, fresh_params(relu, 2))
    z, labels = jax.random.normal(jax.random.PRNGKey(1), (2, 4)), jnp.array([1, 2])
    assert not np.allclose(jax.jit(silu.generate)(params, labels, z),
                           jax.jit(relu.generate)(params, labels, z))


CONV = VAEConfig(image_shape=(12, 10, 3), network="conv", channels=(4, 8), latent_dim=3,
                 num_classes=2)


def test_conv_vae_shapes_parameter_count_and_interface():
    """The conv network behind the MLP's interface, on an RGB shape whose sides halve to
    odd sizes (12 x 10 -> 6 x 5 -> 3 x 3; the decoder's 12 x 12 is cropped to 12 x 10)."""
    family = VAEFamily(CONV)
    params = fresh_params(family, 2)
    x = jnp.full((2, 12, 10, 3), 0.5)
    label = jnp.array([0, 1])
    keys = example_keys(jax.random.PRNGKey(1), jnp.arange(2))
    out, (mean, logvar), prior = jax.jit(VAE(CONV).apply)({"params": params}, x, label, keys)
    assert out.shape == (2, 12, 10, 3) and mean.shape == logvar.shape == (2, 3)
    count = sum(p.size for p in jax.tree.leaves(params))
    # encoder: 3x3 convs 3 -> 4 (stride 2), 4 -> 8 (stride 2); a residual block of two
    # 8 -> 8 convs with FiLM Dense(2 -> 16); mean, logvar from 3 * 3 * 8 = 72 features.
    encoder = (27 * 4 + 4) + (36 * 8 + 8) + 2 * (72 * 8 + 8) + (2 * 16 + 16) + 2 * (72 * 3 + 3)
    # decoder: Dense(3 + 2 -> 72), a residual block, 3x3 convs 8 -> 4, 4 -> 3.
    decoder = (5 * 72 + 72) + 2 * (72 * 8 + 8) + (2 * 16 + 16) + (72 * 4 + 4) + (36 * 3 + 3)
    assert count == encoder + decoder + 2 * 2 * 3  # and the class prior
    generate = jax.jit(family.generate)
    images = generate(params, label, mean)
    assert images.shape == (2, 12, 10, 3) and 0 <= float(images.min()) <= float(images.max()) <= 1
    # FiLM starts at identity, so the class reaches the decoder through its input only:
    # different classes still decode the same z differently.
    same_z = generate(params, label, jnp.repeat(mean[:1], 2, axis=0))
    assert not np.allclose(same_z[0], same_z[1], atol=1e-4)


def test_conv_vae_learns_one_batch():
    """An overfit check: 60 Adam steps on one batch (one binary image per class, twice)
    lower the -ELBO by a third."""
    import optax

    family = VAEFamily(CONV)
    rng = np.random.default_rng(0)
    two = rng.integers(0, 2, (2, 12, 10, 3), dtype=np.uint8) * 255
    batch = {"image": np.concatenate([two, two]),
             "label": np.array([0, 1, 0, 1]), "row": np.arange(4)}
    params = fresh_params(family, 4)
    tx = optax.adam(1e-2)
    opt = jax.jit(tx.init)(params)

    @jax.jit
    def step(params, opt, i):
        (loss, _), grads = jax.value_and_grad(family.train_loss, has_aux=True)(
            params, batch, jax.random.fold_in(jax.random.PRNGKey(2), i))
        updates, opt = tx.update(grads, opt)
        return optax.apply_updates(params, updates), opt, loss

    losses = []
    for i in range(60):
        params, opt, loss = step(params, opt, i)
        losses.append(float(loss))
    assert losses[-1] < 0.67 * losses[0]


def test_decoder_depends_on_the_class():
    family = VAEFamily(TINY)
    params = fresh_params(family, 2)
    z = jnp.zeros((2, 4))
    images = jax.jit(family.generate)(params, jnp.array([1, 2]), z)
    assert images.shape == (2, *SHAPE)
    assert not np.allclose(images[0], images[1])


def test_bernoulli_nll_hand_computed():
    nll = jax.jit(bernoulli_nll)  # one program a shape, not a compile per operation
    # -log sigmoid(log 3) = log(4/3) for a pixel of 1; -log(1 - sigmoid(0)) = log 2 for 0.
    logits = jnp.array([[jnp.log(3.0), 0.0]])
    x = jnp.array([[1.0, 0.0]])
    np.testing.assert_allclose(nll(logits, x), [np.log(8 / 3)], rtol=1e-6)
    # Logits 0 cost log 2 per pixel whatever the intensity.
    np.testing.assert_allclose(nll(jnp.zeros((1, *SHAPE)), jnp.full((1, *SHAPE), 0.3)),
                               [np.prod(SHAPE) * np.log(2)], rtol=1e-6)


def test_gaussian_nll_is_half_squared_error():
    np.testing.assert_allclose(gaussian_nll(jnp.array([[1.0, 2.0]]), jnp.zeros((1, 2))), [2.5])


def test_kl_hand_computed():
    kl = jax.jit(kl_divergence)  # one program a shape, not a compile per operation
    zeros = jnp.zeros((1, 3))
    np.testing.assert_allclose(kl(zeros, zeros), [0.0])  # N(0, I) vs N(0, I)
    np.testing.assert_allclose(kl(jnp.array([[1.0, 2.0]]), jnp.zeros((1, 2))), [2.5])
    # Against N(0, 4): 0.5 * (log 4 - 1 + (1 + 1) / 4) for mean 1, variance 1.
    np.testing.assert_allclose(kl(jnp.ones((1, 1)), jnp.zeros((1, 1)), 0.0,
                                  jnp.log(jnp.full((1, 1), 4.0))),
                               [0.5 * (np.log(4) - 0.5)], rtol=1e-6)
    # variance 2: 0.5 * (2 - 1 - log 2) per dimension
    np.testing.assert_allclose(kl(jnp.zeros((1, 1)), jnp.log(jnp.full((1, 1), 2.0))),
                               [0.5 * (1 - np.log(2))], rtol=1e-6)


def test_eval_sums_ignore_padding():
    family = VAEFamily(TINY)
    params = fresh_params(family, 4)
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (4, *SHAPE), dtype=np.uint8),
             "label": np.array([1, 2, 3, 4]), "index": np.array([5, 6, 0, 0]),
             "mask": np.array([1.0, 1.0, 0.0, 0.0], np.float32)}
    eval_sums = jax.jit(family.eval_sums)  # as a run calls it
    sums = eval_sums(params, batch, jax.random.PRNGKey(0))
    real = {"image": batch["image"][:2], "label": batch["label"][:2],
            "index": batch["index"][:2], "mask": np.ones(2, np.float32)}
    expected = eval_sums(params, real, jax.random.PRNGKey(0))
    assert float(sums["count"]) == 2
    np.testing.assert_allclose(float(sums["recon"]), float(expected["recon"]), rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{"latent_dim": 0}, {"likelihood": "poisson"},
                                    {"encoder_widths": ()}, {"kl_weight": -1.0}])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        VAEConfig(**kwargs)


@pytest.mark.slow
def test_binarized_vae_scores_the_digits_transformers_test_bits():
    """--binarize: the VAE's test targets are the fixed binarization the digits
    Transformer scores (one test set for both families); training draws fresh bits."""
    from jaxtrain.models.pixel_lm import PixelLMFamily
    from jaxtrain.models.transformer import TransformerConfig

    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (4, *SHAPE), dtype=np.uint8),
             "label": np.array([1, 2, 3, 4]), "index": np.array([7, 0, 3, 9]),
             "row": np.arange(4), "mask": np.ones(4, np.float32)}
    vae = VAEFamily(VAEConfig(image_shape=SHAPE, encoder_widths=(16,), decoder_widths=(16,),
                              latent_dim=4, binarize=True))
    targets = jax.jit(vae.targets)  # (Jitted, as in a run: one program, not one per operation.)
    bits = targets(batch)
    assert set(np.unique(bits)) <= {0.0, 1.0} and vae.target_pixels == "binary"
    digits = PixelLMFamily(TransformerConfig(layers=1, d_model=16, heads=2, **DIGITS))
    params = fresh_params(digits, 4)
    on_vae_bits = jax.jit(digits._nll)(params, bits, batch["label"]).sum()
    np.testing.assert_allclose(jax.jit(digits.eval_sums)(params, batch, None)["loss"],
                               on_vae_bits, rtol=1e-6)
    # Training bits: fresh for each step's key, kept apart from the latents' keys.
    a, b = targets(batch, jax.random.PRNGKey(1)), targets(batch, jax.random.PRNGKey(2))
    assert set(np.unique(a)) <= {0.0, 1.0} and not np.array_equal(a, b)
    grey = VAEFamily(TINY)
    np.testing.assert_allclose(grey.targets(batch), batch["image"] / 255.0)
    vae_params = fresh_params(vae, 4)
    iw_sums = jax.jit(vae.iw_sums, static_argnums=(3, 4))
    assert np.isfinite(float(iw_sums(vae_params, batch, jax.random.PRNGKey(0), 20, 10)
                             ["iw_nll"]))


def test_local_ar_pixels_see_only_the_pixels_before_them_and_sampling_fills_them_so():
    """--pixel-model local-ar on an RGB shape: a pixel's outputs do not move when that
    pixel or any after it (raster order) changes, so p(x | z, c) is a normalized product of
    per-pixel terms; and a generated image is the fixed point of the one-pass scoring
    (each pixel is the decoded value of its output given the pixels drawn before it)."""
    config = dataclasses.replace(CONV, network="mlp", encoder_widths=(8,), decoder_widths=(8,),
                                 pixel_model="local-ar")
    family = VAEFamily(config)
    params = fresh_params(family, 2)
    # Train the correction away from 0 (its init) so the test sees it work.
    params["local_ar"] = jax.tree.map(
        lambda p: jax.random.normal(jax.random.PRNGKey(3), p.shape), params["local_ar"])
    out = jax.random.normal(jax.random.PRNGKey(4), (2, 12, 10, 3))
    x = jax.random.uniform(jax.random.PRNGKey(5), (2, 12, 10, 3))
    score = jax.jit(lambda out, x: family.model.apply({"params": params}, out, x,
                                                      method=VAE.pixel_outputs))
    base = score(out, x)
    assert not np.allclose(base, out)  # the neighbours count
    y, col = 5, 4  # change one pixel: only the pixels after it may move
    moved = np.abs(np.asarray(score(out, x.at[:, y, col].set(1 - x[:, y, col])) - base)).max(-1)
    order = np.arange(12 * 10).reshape(12, 10)
    assert (moved[:, order <= order[y, col]] == 0).all()
    assert (moved[:, order > order[y, col]] > 0).any()
    z, labels = jax.random.normal(jax.random.PRNGKey(6), (2, 3)), jnp.array([0, 1])
    images = jax.jit(family.generate)(params, labels, z)
    decoded = family.model.apply({"params": params}, z, labels, method=VAE.decode)
    again = jax.nn.sigmoid(score(decoded, images))
    assert images.shape == (2, 12, 10, 3)
    np.testing.assert_allclose(images, again, atol=1e-5)
    # Binarized: the fill feeds bits drawn from each pixel's mean (training's neighbours
    # were bits) and shows the means given them; another key draws other bits.
    binary = VAEFamily(dataclasses.replace(config, binarize=True))
    fill = jax.jit(lambda key: raster_fill(decoded, lambda out, neighbours, k: fill_values(
        binary.config, family.model.apply({"params": params}, out, neighbours,
                                          method=VAE.pixel_output), k), key))
    bits, means = fill(jax.random.PRNGKey(7))
    assert set(np.unique(bits)) == {0.0, 1.0}
    np.testing.assert_allclose(means, jax.nn.sigmoid(score(decoded, bits)), atol=1e-5)
    assert not np.allclose(means, fill(jax.random.PRNGKey(8))[1])
    np.testing.assert_allclose(jax.jit(binary.generate)(params, labels, z,
                                                        jax.random.PRNGKey(7)), means, atol=1e-6)
