import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DIGITS, SHAPE, fresh_params

from jaxtrain.models.decoding import empty_cache, filtered_logits, pick
from jaxtrain.models.pixel_lm import (
    PixelLMFamily,
    image_to_tokens,
    nats_to_bits_per_dim,
    sequence_nll,
    tokens_to_image,
)
from jaxtrain.models.transformer import (
    STACKED,
    Transformer,
    TransformerConfig,
    causal_attention,
    relayout,
    scan_unroll,
)

TINY = TransformerConfig(layers=1, d_model=32, heads=2, dropout=0.1, **DIGITS)


def test_tokenization_round_trip_and_layout():
    bits = (np.random.default_rng(0).random((3, *SHAPE)) > 0.5).astype(np.int32)
    to_tokens = jax.jit(image_to_tokens)  # one program, not a compile per operation
    tokens = to_tokens(jnp.asarray(bits))
    assert tokens.shape == (3, 196) and 0 <= int(tokens.min()) and int(tokens.max()) <= 15
    np.testing.assert_array_equal(jax.jit(tokens_to_image, static_argnums=1)(tokens, SHAPE),
                                  bits)
    # Pixels (0,0)=1, (0,1)=0, (1,0)=1, (1,1)=1 make the first token 0b1011 = 11;
    # pixel (0, 2) is the top-left of the second patch: 0b1000 = 8.
    image = np.zeros(SHAPE, np.int32)
    image[0, 0] = image[1, 0] = image[1, 1] = image[0, 2] = 1
    first = to_tokens(jnp.asarray(image[None]))[0]
    assert first[:2].tolist() == [11, 8] and int(first[2:].sum()) == 0


def test_likelihood_arithmetic_hand_checked():
    # Uniform logits over 16 symbols: each of 196 tokens costs log 16 = 4 log 2 nats,
    # i.e. exactly 1 bit per binary pixel.
    sequence_nll_ = jax.jit(sequence_nll)  # one program a shape, not a compile per operation
    nll = sequence_nll_(jnp.zeros((1, 196, 16)), jnp.zeros((1, 196), jnp.int32))
    np.testing.assert_allclose(nll, [196 * math.log(16)], rtol=1e-6)
    np.testing.assert_allclose(nats_to_bits_per_dim(nll, 784), [1.0], rtol=1e-6)
    # A token given probability 1/2 costs log 2.
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25]]]))
    np.testing.assert_allclose(sequence_nll_(logits, jnp.array([[0]])), [math.log(2)],
                               rtol=1e-6)


@pytest.mark.slow
def test_shapes_and_parameter_count():
    family = PixelLMFamily(TINY)
    # Shapes alone (jax.eval_shape): nothing is computed or compiled.
    params = jax.eval_shape(lambda key: family.init(key, 2), jax.random.PRNGKey(0))
    d = 32
    attention = 4 * (d * d + d)  # query, key, value, output projections with biases
    block = attention + 2 * 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    expected = 26 * d + 196 * d + block + 2 * d + (d * 16 + 16)
    assert sum(p.size for p in jax.tree.leaves(params)) == expected
    logits = jax.eval_shape(Transformer(TINY).apply, {"params": params},
                            jnp.zeros((2, 196), jnp.int32))
    assert logits.shape == (2, 196, 16)


def test_parameters_initialise_the_same_with_the_scan_looped():
    """A task's init compiles the blocks' scan as a loop (faster to compile); the bits
    are those of the CPU's unrolled scan, under jit as a run's init_state runs it."""
    from jaxtrain.models.transformer import init_params

    config = TransformerConfig(layers=3, d_model=16, heads=2, context=12, vocab_size=20,
                               output_size=20)
    tokens = jnp.zeros((2, 12), jnp.int32)
    model = Transformer(config)
    unrolled = jax.jit(lambda k: model.init(k, tokens)["params"])(jax.random.PRNGKey(0))
    looped = jax.jit(lambda k: init_params(model, k, tokens))(jax.random.PRNGKey(0))
    for a, b in zip(jax.tree.leaves(unrolled), jax.tree.leaves(looped), strict=True):
        np.testing.assert_array_equal(a, b)


def test_scanned_blocks_compute_what_the_unrolled_blocks_compute():
    """New runs scan one block over stacked parameters; runs saved before keep the
    unrolled Block_0, Block_1, ... (their config lacks scan_layers). relayout moves
    the same numbers between the two, both ways, and both networks agree on them."""
    config = TransformerConfig(layers=3, d_model=16, heads=2, context=12, vocab_size=20,
                               output_size=20)
    from jaxtrain.models.configs import saved_fields

    assert saved_fields(TransformerConfig, {})["scan_layers"] is False  # a saved old run
    assert config.scan_layers  # a new one
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, 20)
    # (Jitted, as a run's steps are: one program each, not a compile per operation.)
    stacked = jax.jit(Transformer(config).init)(jax.random.PRNGKey(0), tokens)["params"]
    assert jax.tree.leaves(stacked[STACKED])[0].shape[0] == 3 and "Block_0" not in stacked
    jitted_relayout = jax.jit(relayout, static_argnames="scan_layers")
    unrolled = jitted_relayout(stacked, scan_layers=False)
    assert {"Block_0", "Block_1", "Block_2"} <= set(unrolled) and STACKED not in unrolled
    np.testing.assert_array_equal(unrolled["Block_1"]["Dense_0"]["kernel"],
                                  stacked[STACKED]["Dense_0"]["kernel"][1])
    back = jitted_relayout(unrolled, scan_layers=True)
    assert jax.tree.structure(back) == jax.tree.structure(stacked)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(stacked), strict=True):
        np.testing.assert_array_equal(a, b)
    assert relayout(stacked, scan_layers=True) is stacked
    # Both ways of compiling the scan (a GPU loops over the layers, a CPU unrolls them:
    # scan_unroll) compute what the unrolled blocks do, gradients included.
    assert scan_unroll(config, "gpu") == 1 and scan_unroll(config, "cpu") == 3
    old = Transformer(config.replace(scan_layers=False))

    def loss(model, params):
        return jnp.sum(model.apply({"params": params}, tokens) ** 2)

    loss_and_grads = jax.jit(jax.value_and_grad(loss, 1), static_argnums=0)
    expected, expected_grads = loss_and_grads(old, unrolled)
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(expected_grads))
    for unroll in (1, 3):
        value, grads = loss_and_grads(Transformer(config, unroll=unroll), stacked)
        np.testing.assert_allclose(value, expected, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(jitted_relayout(grads, scan_layers=False)),
                        jax.tree.leaves(expected_grads), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
    # The sampler's key/value cache is stacked like the parameters.
    cache = empty_cache(Transformer(config.replace(decode=True, dropout=0.0)), 2)
    assert cache[STACKED]["MultiHeadDotProductAttention_0"]["cached_key"].shape[0] == 3


@pytest.mark.slow
@pytest.mark.parametrize("length", [196, 64, 5])
def test_blocked_causal_attention_equals_masked_attention(length):
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, length, 3, 8)) for i in range(3))
    mask = jax.jit(nn.make_causal_mask)(jnp.zeros((2, length)))
    expected = jax.jit(nn.dot_product_attention)(q, k, v, mask=mask)  # [B, T, H, Dh]
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # heads first
    for block in (64, 16):
        out = jax.jit(causal_attention, static_argnames="block")(q, k, v, block=block)
        out = out.transpose(0, 2, 1, 3)
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_attention_dropout_zeroes_weights_and_keeps_the_mean():
    q = k = jnp.zeros((1, 1, 128, 4))  # uniform weights over the visible prefix
    v = jnp.ones((1, 1, 128, 4))
    attention = jax.jit(causal_attention, static_argnums=(4, 5))  # one program, not one per op
    out = attention(q, k, v, jax.random.PRNGKey(0), 0.5, False)
    # Each output is the mean of the kept, rescaled weights times 1: near 1 on average,
    # and not everywhere 1 (some weights were dropped).
    assert abs(float(out.mean()) - 1.0) < 0.1 and float(jnp.abs(out - 1.0).max()) > 0.1
    np.testing.assert_allclose(attention(q, k, v, jax.random.PRNGKey(0), 0.5, True), v, rtol=1e-5)


@pytest.mark.slow
def test_is_causal():
    config = TINY.replace(dropout=0.0)
    # (Jitted, as a run's init and steps are: one program, not a compile per operation.)
    params = fresh_params(PixelLMFamily(config), 1)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (1, 196), 0, 26)
    changed = tokens.at[0, 100].set((tokens[0, 100] + 1) % 26)
    apply = jax.jit(Transformer(config).apply)
    a = apply({"params": params}, tokens)
    b = apply({"params": params}, changed)
    np.testing.assert_allclose(a[0, :100], b[0, :100], atol=1e-6)
    assert not np.allclose(a[0, 100:], b[0, 100:])


@pytest.mark.slow
def test_cached_decoding_equals_the_full_forward_pass():
    config = TINY.replace(dropout=0.0)
    params = fresh_params(PixelLMFamily(config), 2)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 196), 0, 26)
    full = jax.jit(Transformer(config).apply)({"params": params}, tokens)  # [2, 196, 16]
    decoder = Transformer(config.replace(decode=True))
    cache = jax.jit(decoder.init)(jax.random.PRNGKey(0), jnp.zeros((2, 196), jnp.int32))["cache"]
    # The samplers' cache, made from shapes, is the one Flax's init makes.
    for made, inited in zip(jax.tree.leaves(empty_cache(decoder, 2)), jax.tree.leaves(cache),
                            strict=True):
        np.testing.assert_array_equal(made, inited)
    step = jax.jit(lambda cache, token: decoder.apply({"params": params, "cache": cache},
                                                      token, mutable=["cache"]))
    for t in range(196):
        logits, variables = step(cache, tokens[:, t:t + 1])
        cache = variables["cache"]
        np.testing.assert_allclose(logits[:, 0], full[:, t], atol=2e-5, rtol=1e-5)


def test_pick_greedy_and_top_k():
    logits = jnp.log(jnp.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))
    # (Jitted, as the samplers run it; a lambda, not pick: jax.jit(pick)'s compile count
    # is tested below.)
    greedy = jax.jit(lambda logits, k: pick(logits, k, 0.0, None))(logits, jax.random.PRNGKey(0))
    assert greedy.tolist() == [1, 0]
    draws = jax.jit(jax.vmap(lambda k: pick(logits, k, 1.0, 1)))(
        jax.random.split(jax.random.PRNGKey(0), 50))
    assert (draws == jnp.array([1, 0])).all()  # top-1 sampling is greedy


P = [0.5, 0.3, 0.15, 0.05]


@pytest.mark.parametrize("probs, temperature, top_k, top_p, expected", [
    (P, 1.0, None, 1.0, P),  # top_p 1 keeps every token
    (P, 1.0, None, 0.7, [0.625, 0.375, 0, 0]),  # 0.5 < 0.7 <= 0.5 + 0.3
    (P, 1.0, None, 0.8, [0.625, 0.375, 0, 0]),  # exactly 0.8: the smallest set reaching it
    (P, 1.0, None, 0.9, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0]),
    (P, 1.0, None, 1e-6, [1, 0, 0, 0]),  # a tiny p keeps the likeliest token
    (P[::-1], 1.0, None, 0.8, [0, 0, 0.375, 0.625]),  # the rank counts, not the position
    # top-k first: its three renormalized (0.526, 0.316, 0.158) reach 0.82 with two, where
    # the full distribution would need three (0.5 + 0.3 < 0.82).
    (P, 1.0, 3, 0.82, [0.625, 0.375, 0, 0]),
    (P, 1.0, 2, 0.9, [0.625, 0.375, 0, 0]),
    # temperature first: at 0.5 the probabilities go as p^2 (0.685, 0.247, 0.062, 0.007),
    # so 0.9 takes two tokens where at temperature 1 it takes three.
    (P, 0.5, None, 0.9, [0.25 / 0.34, 0.09 / 0.34, 0, 0]),
    # Ties with the last token kept stay: the result does not depend on the tokens' order.
    ([0.4, 0.3, 0.3], 1.0, None, 0.5, [0.4, 0.3, 0.3]),
    ([0.3, 0.4, 0.3], 1.0, None, 0.5, [0.3, 0.4, 0.3]),
    ([0.3, 0.3, 0.2, 0.2], 1.0, None, 1e-6, [0.5, 0.5, 0, 0]),
])
def test_filtered_logits_give_the_hand_computed_distribution(probs, temperature, top_k, top_p,
                                                            expected):
    logits = jnp.log(jnp.array([probs, probs[::-1]]))  # [2, K]: each row on its own
    kept = jax.jit(lambda x: jax.nn.softmax(filtered_logits(x, temperature, top_k, top_p),
                                            axis=-1))(logits)
    np.testing.assert_allclose(kept, [expected, expected[::-1]], atol=1e-6)


def test_jitted_top_p_draws_only_from_the_nucleus_and_compiles_once():
    sample = jax.jit(pick, static_argnums=(2, 3, 4))
    logits = jnp.log(jnp.tile(jnp.array(P), (4000, 1)))  # [4000, 4]: 4000 draws in one call
    draws = np.asarray(sample(logits, jax.random.PRNGKey(0), 1.0, None, 0.8))
    assert set(draws.tolist()) == {0, 1}
    assert abs(np.mean(draws == 0) - 0.625) < 0.03  # 4 standard deviations
    sample(logits, jax.random.PRNGKey(1), 1.0, None, 0.8)
    assert sample._cache_size() == 1  # a new key, the same options: no recompilation


@pytest.mark.slow
def test_test_binarization_is_fixed_per_example():
    family = PixelLMFamily(TINY)
    params = fresh_params(family, 4)
    images = np.random.default_rng(0).integers(0, 256, (4, *SHAPE), dtype=np.uint8)
    batch = {"image": images, "label": np.arange(4, dtype=np.int32),
             "index": np.arange(4, dtype=np.int32), "mask": np.ones(4, np.float32)}
    eval_sums = jax.jit(family.eval_sums)  # as a run calls it
    a = eval_sums(params, batch, jax.random.PRNGKey(0))
    b = eval_sums(params, batch, jax.random.PRNGKey(1))
    assert float(a["loss"]) == float(b["loss"])
    # The same examples split into two batches give the same total.
    halves = [{k: v[s] for k, v in batch.items()} for s in (slice(0, 2), slice(2, 4))]
    total = sum(float(eval_sums(params, h, None)["loss"]) for h in halves)
    np.testing.assert_allclose(total, float(a["loss"]), rtol=1e-5)


@pytest.mark.slow
def test_sample_gives_binary_images_of_the_right_shape():
    family = PixelLMFamily(TINY)
    params = fresh_params(family, 3)
    images = family.sample(params, np.array([0, 7, 7]), jax.random.PRNGKey(0), temperature=1.0,
                           top_k=4, top_p=0.9)
    assert images.shape == (3, *SHAPE) and set(np.unique(images)) <= {0.0, 1.0}


@pytest.mark.parametrize("kwargs", [{"heads": 3}, {"layers": 0}, {"dropout": 1.0}])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        TransformerConfig(**kwargs)


def test_images_need_a_context_of_their_patches():
    with pytest.raises(ValueError, match="--context must be 196"):
        PixelLMFamily(TransformerConfig(context=64, image_shape=SHAPE))
    with pytest.raises(ValueError, match="must be even"):
        PixelLMFamily(TransformerConfig(context=64, image_shape=(7, 8, 1)))


def test_patch_tokens_of_rgb_images_round_trip_channels_innermost():
    bits = (np.random.default_rng(0).random((2, 6, 4, 3)) > 0.5).astype(np.int32)
    tokens = jax.jit(image_to_tokens)(jnp.asarray(bits))
    assert tokens.shape == (2, 3 * 2 * 3)
    np.testing.assert_array_equal(jax.jit(tokens_to_image, static_argnums=1)(tokens, (6, 4, 3)),
                                  bits)
    # token 1 is the first patch's green channel: pixels (0,0), (0,1), (1,0), (1,1) of G
    g = bits[0, :2, :2, 1]
    assert int(tokens[0, 1]) == 8 * g[0, 0] + 4 * g[0, 1] + 2 * g[1, 0] + g[1, 1]
