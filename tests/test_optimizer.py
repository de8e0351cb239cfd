"""The optimizer built from its section (training/engine/optimizer.py): weight decay
masked to kernels and embeddings, runs saved before the mask resuming as they were, and
a checkpoint whose optimizer state this jaxtrain does not build refused in one line."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from conftest import DIGITS, SHAPE, assert_one_line_error

from jaxtrain.models.configs import TransformerConfig
from jaxtrain.models.vae import VAEConfig
from jaxtrain.training.engine.optimizer import decay_mask, make_optimizer
from jaxtrain.training.engine.run import Run
from jaxtrain.training.engine.steps import param_path, param_shapes
from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.settings.config import DataConfig, RunConfig, RunMismatch, TrainConfig
from jaxtrain.training.settings.optimizer import OptimizerConfig


def tiny_config(model="vae", **train):
    model_config = (VAEConfig(encoder_widths=(8,), decoder_widths=(8,), latent_dim=2,
                              image_shape=SHAPE)
                    if model == "vae" else TransformerConfig(layers=2, d_model=16, heads=2,
                                                             **DIGITS))
    return RunConfig(model, model_config, DataConfig("mnist", "/nonexistent"),
                     TrainConfig(**{"epochs": 1, "batch_size": 8, "warmup_steps": 10, **train}))


def decayed(model, **config_changes) -> dict:
    """{path: decayed} of the tiny model's parameters."""
    config = tiny_config(model)
    if config_changes:
        config = RunConfig(model, config.model_config.replace(**config_changes), config.data,
                           config.train)
    family = config.family()
    mask = decay_mask(param_shapes(family), family.no_decay)
    return {param_path(p): m for p, m in jax.tree_util.tree_flatten_with_path(mask)[0]}


def test_the_mask_decays_kernels_and_embeddings_only():
    vae = decayed("vae")
    assert {p for p, d in vae.items() if d} == {
        "encoder/Dense_0/kernel", "mean/kernel", "logvar/kernel", "decoder/Dense_0/kernel",
        "out/kernel"}
    # Biases and the class prior (nn.Embed, 2-D, left out by name) are not decayed.
    assert not any(vae[p] for p in ("mean/bias", "prior_mean/embedding",
                                    "prior_logvar/embedding"))
    for scan_layers in (True, False):  # a stacked [L, ...] leaf counts per layer
        gpt = decayed("transformer", scan_layers=scan_layers)
        block = "Blocks" if scan_layers else "Block_1"
        for path in ("Embed_0/embedding", "pos_embedding", "Dense_0/kernel",
                     f"{block}/Dense_0/kernel",
                     f"{block}/MultiHeadDotProductAttention_0/query/kernel"):
            assert gpt[path], path
        for path in ("LayerNorm_0/scale", "LayerNorm_0/bias", f"{block}/LayerNorm_1/scale",
                     f"{block}/Dense_1/bias",  # [L, D] when stacked
                     f"{block}/MultiHeadDotProductAttention_0/query/bias"):  # [H, D/H]
            assert not gpt[path], path


@pytest.mark.parametrize("mask, bias", [("kernels", 3.0), ("all", 3.0 - 0.1 * 0.5 * 3.0)])
def test_a_zero_gradient_step_shrinks_the_kernel_and_the_bias_only_with_all(mask, bias):
    """With zero gradients Adam's update is 0, so the step is the decay alone:
    p - lr * weight_decay * p, with lr 0.1 and weight decay 0.5."""
    params = {"Dense_0": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 3.0)}}
    tx = make_optimizer(OptimizerConfig(weight_decay=0.5, weight_decay_mask=mask), 0.1)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["Dense_0"]["kernel"], 2.0 - 0.1 * 0.5 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(new["Dense_0"]["bias"], bias, rtol=1e-6)


def test_the_runs_optimizer_leaves_the_class_prior_alone():
    run = Run(tiny_config(weight_decay=0.5), steps_per_epoch=100)
    params = jax.tree.map(lambda s: jnp.ones(s.shape), param_shapes(run.family))
    updates, _ = jax.jit(run.tx.update)(jax.tree.map(jnp.zeros_like, params),
                                        run.tx.init(params), params)
    new = optax.apply_updates(params, updates)
    for name in ("prior_mean", "prior_logvar"):
        np.testing.assert_array_equal(new[name]["embedding"], 1.0)
    np.testing.assert_array_equal(new["out"]["bias"], 1.0)
    assert np.all(new["out"]["kernel"] < 1.0)


def test_new_runs_mask_and_runs_saved_before_the_mask_decay_everything():
    assert TrainConfig().weight_decay_mask == "kernels"
    saved = tiny_config().to_dict()
    assert RunConfig.from_dict(saved).train.weight_decay_mask == "kernels"
    del saved["train"]["weight_decay_mask"]  # a run saved before the setting existed
    assert RunConfig.from_dict(saved).train.weight_decay_mask == "all"


def save(workdir, state, config_dict):
    manager = checkpoint.open_manager(workdir)
    manager.save(0, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        position=ocp.args.JsonSave({"step": 0, "steps_per_epoch": 100}),
        config=ocp.args.JsonSave(config_dict)))
    manager.wait_until_finished()
    manager.close()


def test_a_run_saved_before_the_mask_restores_as_it_was(tmp_path):
    old = Run(tiny_config(weight_decay_mask="all"), steps_per_epoch=100)
    state = old.init_state()
    saved = old.config.to_dict()
    del saved["train"]["weight_decay_mask"]
    save(tmp_path, state, saved)
    restored = checkpoint.restore(tmp_path)
    assert restored.config == old.config
    assert jax.tree.structure(restored.state.opt_state) == jax.tree.structure(state.opt_state)


def test_an_optimizer_state_the_config_does_not_build_is_one_line(tmp_path, jaxtrain):
    # The state of an unmasked AdamW under a config whose AdamW is masked: as a
    # checkpoint of a jaxtrain whose optimizer was another chain.
    state = Run(tiny_config(weight_decay_mask="all"), steps_per_epoch=100).init_state()
    save(tmp_path, state, tiny_config().to_dict())
    with pytest.raises(RunMismatch, match=r"opt_state/1/1: the checkpoint holds an empty "
                                          r"state, this jaxtrain builds \{inner_state\}"):
        checkpoint.restore(tmp_path)
    proc = jaxtrain("resume", "--workdir", tmp_path)
    assert_one_line_error(proc, "checkpoint step 0", "optimizer state",
                          "saved by another jaxtrain version")
