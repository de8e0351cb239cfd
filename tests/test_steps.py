import dataclasses

import jax
import numpy as np
import pytest
from conftest import DIGITS, SHAPE

from jaxtrain.models.transformer import STACKED, TransformerConfig
from jaxtrain.models.vae import VAEConfig
from jaxtrain.training.engine.optimizer import make_schedule
from jaxtrain.training.engine.run import Run
from jaxtrain.training.engine.steps import ema_decay_at, update_ema
from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.settings.config import DataConfig, RunConfig, TrainConfig


def tiny_run(**train):
    config = RunConfig("vae", VAEConfig(image_shape=SHAPE, encoder_widths=(32,),
                                        decoder_widths=(32,), latent_dim=4),
                       DataConfig("mnist", "/nonexistent"),
                       TrainConfig(**{"epochs": 1, "batch_size": 8, "warmup_steps": 10, **train}))
    return Run(config, steps_per_epoch=100)


def a_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": (rng.random((n, *SHAPE)) > 0.7).astype(np.uint8) * 255,
            "label": (np.arange(n) % 10).astype(np.int32)}


def test_schedule_warms_up_from_nonzero_then_decays():
    schedule = make_schedule(TrainConfig(lr=1e-3, warmup_steps=10), total_steps=100)
    np.testing.assert_allclose(schedule(0), 1e-5, rtol=1e-5)  # step 0 is not 0
    np.testing.assert_allclose(schedule(5), 1e-5 + 0.5 * (1e-3 - 1e-5), rtol=1e-5)
    np.testing.assert_allclose(schedule(10), 1e-3, rtol=1e-5)
    np.testing.assert_allclose(schedule(55), 0.5 * (1e-3 + 1e-5), rtol=1e-4)  # cosine midpoint
    np.testing.assert_allclose(schedule(100), 1e-5, rtol=1e-5)


def test_default_warmup_is_a_tenth_of_the_run():
    schedule = make_schedule(TrainConfig(lr=1e-3), total_steps=4680)  # 468 steps of warmup
    np.testing.assert_allclose(schedule(234), 1e-5 + 0.5 * (1e-3 - 1e-5), rtol=1e-5)
    np.testing.assert_allclose(schedule(468), 1e-3, rtol=1e-5)
    assert schedule(467) < 1e-3


def test_schedule_rejects_warmup_longer_than_run():
    with pytest.raises(ValueError, match="--warmup-steps"):
        make_schedule(TrainConfig(warmup_steps=100), total_steps=50)


def test_ema_update_and_ramp():
    np.testing.assert_allclose(update_ema({"w": 1.0}, {"w": 3.0}, 0.75)["w"], 1.5)
    np.testing.assert_allclose(ema_decay_at(0, 0.999), 0.1)  # (1 + 0) / (10 + 0)
    np.testing.assert_allclose(ema_decay_at(10_000, 0.999), 0.999)


def test_train_step_updates_params_and_ema_and_compiles_once():
    run = tiny_run(ema_decay=0.9)
    state = run.init_state()
    init = jax.tree.map(np.asarray, state.params)
    state, metrics = run.train_step(state, a_batch(seed=0))
    assert set(metrics) == {"train_loss", "train_recon", "train_kl", "train_grad_norm", "lr"}
    np.testing.assert_allclose(metrics["lr"], run.schedule(0))
    # First step: the EMA decay is ramped to 0.1, so ema = 0.1 * init + 0.9 * params.
    expected = jax.tree.map(lambda i, p: 0.1 * i + 0.9 * np.asarray(p), init, state.params)
    for e, got in zip(jax.tree.leaves(expected), jax.tree.leaves(state.ema_params)):
        np.testing.assert_allclose(got, e, rtol=1e-5, atol=1e-7)
    for seed in (1, 2, 3):
        state, _ = run.train_step(state, a_batch(seed=seed))
    assert int(state.step) == 4
    assert run.train_step._cache_size() == 1  # no recompilation after the first step


def test_overfits_one_batch():
    run = tiny_run(lr=3e-3)
    state = run.init_state()
    batch = a_batch()
    state, first = run.train_step(state, batch)
    for _ in range(150):
        state, last = run.train_step(state, batch)
    assert float(last["train_loss"]) < 0.5 * float(first["train_loss"])


def test_checkpoint_save_restore_is_bitwise(tmp_path):
    run = tiny_run()
    state = run.init_state()
    for seed in range(3):
        state, _ = run.train_step(state, a_batch(seed=seed))
    manager = checkpoint.open_manager(tmp_path)
    position = {"step": 3, "steps_per_epoch": 100}
    checkpoint.save(manager, state, position, run.config)
    manager.wait_until_finished()
    manager.close()
    restored = checkpoint.restore(tmp_path)
    assert restored.step == 3 and restored.position == position
    assert restored.config == run.config
    assert type(restored.state) is type(state)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("scan_layers", [None, True, False])  # None: the VAE
def test_ema_only_restore_reads_the_ema_alone(tmp_path, scan_layers):
    """eval, sample and export read the EMA parameters alone, bitwise those of the whole
    state, from a checkpoint saved as ever; a Transformer's blocks in either layout;
    --step N and best pick the same checkpoint as for the whole state."""
    run = tiny_run()
    if scan_layers is not None:
        model_config = TransformerConfig(layers=2, d_model=16, heads=2, **DIGITS,
                                         scan_layers=scan_layers)
        run = Run(dataclasses.replace(run.config, model="transformer",
                                      model_config=model_config), steps_per_epoch=100)
    state = run.init_state()
    manager = checkpoint.open_manager(tmp_path)
    for step, loss in [(1, 1.0), (2, 2.0)]:
        state, _ = run.train_step(state, a_batch(seed=step))
        checkpoint.save(manager, state, {"step": step, "steps_per_epoch": 100}, run.config,
                        metrics={"test_loss": loss})
        manager.wait_until_finished()
    manager.close()
    for step, want in [(None, 2), (1, 1), ("best", 1)]:
        whole = checkpoint.restore(tmp_path, step)
        ema = checkpoint.restore(tmp_path, step, ema_only=True)
        assert ema.state is None and ema.step == whole.step == want
        assert ema.config == whole.config and ema.position == whole.position
        assert jax.tree.structure(ema.ema_params) == jax.tree.structure(whole.state.ema_params)
        for a, b in zip(jax.tree.leaves(whole.state.ema_params), jax.tree.leaves(ema.ema_params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if scan_layers is not None:
        assert (STACKED in ema.ema_params) == scan_layers
        assert ("Block_1" in ema.ema_params) == (not scan_layers)


def test_a_reader_lists_again_when_a_training_run_deletes_a_step(tmp_path, monkeypatch):
    run = tiny_run()
    manager = checkpoint.open_manager(tmp_path)
    checkpoint.save(manager, run.init_state(), {"step": 1, "steps_per_epoch": 100}, run.config)
    manager.wait_until_finished()
    manager.close()
    real, calls = checkpoint.open_manager, []

    def racing(*args, **kwargs):  # the first listing meets a step the run just deleted
        calls.append(1)
        if len(calls) == 1:
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "16"))
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "open_manager", racing)
    assert checkpoint.restore(tmp_path).position["step"] == 1 and len(calls) == 2


def test_manager_keeps_latest_n_plus_the_best(tmp_path):
    run = tiny_run()
    state = run.init_state()
    manager = checkpoint.open_manager(tmp_path, keep=2)
    for step, loss in zip(range(1, 6), [5.0, 1.0, 4.0, 3.0, 2.0]):
        state = state.replace(step=np.int32(step))
        position = {"step": step, "steps_per_epoch": 100}
        checkpoint.save(manager, state, position, run.config, metrics={"test_loss": loss})
        manager.wait_until_finished()
    # A save without metrics (an interrupted epoch) is kept as one of the latest.
    checkpoint.save(manager, state.replace(step=np.int32(6)), position, run.config)
    manager.wait_until_finished()
    assert sorted(manager.all_steps()) == [2, 5, 6]
    manager.close()
