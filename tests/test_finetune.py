"""Fine-tuning: a run started from another run's parameters, with parts frozen."""

import dataclasses
import json
import re
import subprocess

import jax
import numpy as np
import pytest
from conftest import assert_one_line_error, records
from flax.traverse_util import flatten_dict
from test_folder import write_folder

from jaxtrain.models.transformer import STACKED, Transformer, TransformerConfig, relayout
from jaxtrain.training.engine.steps import _matches, partly_frozen, trainable_mask
from jaxtrain.training.rundir import checkpoint

FROZEN = ("encoder", "mean", "logvar")


def flat(tree):
    return {k: np.asarray(v) for k, v in flatten_dict(jax.device_get(tree), sep="/").items()}


def latest(workdir):
    return checkpoint.restore(workdir)


@pytest.fixture(scope="module")
def source(tmp_path_factory, data_dir):
    """A tiny VAE trained for one epoch: the run to fine-tune."""
    from jaxtrain.training.commands.fit import fit
    from jaxtrain.training.settings.files import Layer, given, resolve

    workdir = tmp_path_factory.mktemp("source")
    layers = [Layer("flag", {"data": {"data_dir": str(data_dir), "download": False},
                             "train": {"epochs": 1, "batch_size": 8, "warmup_steps": 2},
                             "model_config": {"encoder_widths": (32,), "decoder_widths": (32,),
                                              "latent_dim": 4}})]
    config, _ = resolve(layers)
    fit(config, workdir, given=given(layers))
    return workdir


def finetune_args(data_dir, source, workdir, *extra):
    # No architecture flags: the run takes its source's. Other data: another seed's order.
    return ["fit", "--init-from", source, "--workdir", workdir, "--data-dir", data_dir,
            "--no-download", "--seed", 1, "--batch-size", 8, "--warmup-steps", 2,
            "--epochs", 2, *extra]


@pytest.mark.slow
def test_frozen_parameters_stay_bitwise_and_the_rest_trains(tmp_path, data_dir, source,
                                                            jaxtrain):
    workdir = tmp_path / "tuned"
    proc = jaxtrain(*finetune_args(data_dir, source, workdir, "--freeze", ",".join(FROZEN)),
                    check=True)
    assert f"fine-tuning from {source} at step 8, frozen: encoder,mean,logvar" in proc.stderr
    before, after = latest(source), latest(workdir)
    assert after.step == 16  # the step count starts afresh
    assert after.config.train.init_from == str(source)
    assert after.config.train.init_step == "8"
    assert after.config.model_config == before.config.model_config
    for tree in ("params", "ema_params"):
        old, new = flat(getattr(before.state, tree)), flat(getattr(after.state, tree))
        assert old.keys() == new.keys()
        for path in old:
            if path.split("/")[0] in FROZEN:  # no update, no weight decay, no EMA drift
                np.testing.assert_array_equal(new[path], old[path], err_msg=path)
            else:
                assert not np.array_equal(new[path], old[path]), path
    # A fresh optimizer: its step counts are the new run's 16, not the source's 8 + 16.
    counts = [int(x) for x in jax.tree.leaves(after.state.opt_state)
              if np.issubdtype(np.asarray(x).dtype, np.integer)]
    assert counts and set(counts) == {16}
    assert f'init_from = "{source}"' in (workdir / "config.toml").read_text()


@pytest.mark.slow
def test_resume_of_a_fine_tuned_run_is_exact(tmp_path, data_dir, source, jaxtrain):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    jaxtrain(*finetune_args(data_dir, source, straight, "--freeze", "decoder"), check=True)
    jaxtrain(*finetune_args(data_dir, source, stopped, "--freeze", "decoder",
                            "--stop-at-epoch", 1), check=True)
    jaxtrain("resume", "--workdir", stopped, check=True)
    a, b = latest(straight), latest(stopped)
    assert a.step == b.step == 16
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_list_params_shows_paths_sizes_and_frozen(source, jaxtrain):
    out = jaxtrain("fit", "--init-from", source, "--freeze", "encoder", "--list-params",
                   check=True).stdout
    assert "encoder/Dense_0/kernel  (794, 32)" in out and "frozen" in out
    assert "decoder/Dense_0/kernel  (14, 32)" in out  # z and the one-hot class
    assert out.strip().splitlines()[-1].endswith("25,440 frozen")  # 794 * 32 + 32


@pytest.mark.slow
def test_fine_tune_errors(tmp_path, data_dir, source, jaxtrain):
    args = finetune_args(data_dir, source, tmp_path / "x")
    assert_one_line_error(jaxtrain(*args, "--latent-dim", 8),
                          "--latent-dim 8: the run in", "has 4", "leave --latent-dim out")
    assert_one_line_error(jaxtrain(*args, "--model", "transformer"), "--model transformer",
                          "is a vae")
    assert_one_line_error(jaxtrain(*args, "--freeze", "encoder,nothing"),
                          "--freeze 'nothing' matches no parameter", "--list-params")
    assert_one_line_error(jaxtrain(*args, "--freeze", "encoder,decoder,mean,logvar,out,prior_.*"),
                          "freezes every parameter")
    assert_one_line_error(jaxtrain(*args, "--init-step", 3), "no checkpoint for step 3")
    assert_one_line_error(jaxtrain(*finetune_args(data_dir, tmp_path, tmp_path / "x")),
                          "holds no jaxtrain run")
    assert_one_line_error(jaxtrain(*finetune_args(data_dir, source, source)),
                          "is the new run's own workdir")
    shapes = write_folder(tmp_path / "shapes", {"a": 4, "b": 4, "c": 4})
    proc = jaxtrain(*args, "--dataset", "folder", "--data-dir", shapes)
    # The folder is read (one line says so, and caches it) before its classes are known.
    assert proc.returncode == 2 and proc.stderr.startswith("read 12 images of 3 classes")
    assert_one_line_error(subprocess.CompletedProcess(
        proc.args, proc.returncode, "", proc.stderr.split("\n", 1)[1]),
        "the data has 3 classes, but the run in", "has 10 classes")
    assert not (tmp_path / "x").exists()


def test_freeze_patterns_match_whole_path_components():
    assert _matches("encoder", "encoder/Dense_0/kernel")
    assert not _matches("encoder", "encoders/Dense_0/kernel")
    assert _matches("embed", "Embed_0/embedding")  # case-insensitive, _N optional
    assert _matches("Block_[0-1]", "Block_1/Dense_0/bias")
    assert not _matches("Block_[0-1]", "Block_2/Dense_0/bias")
    assert not _matches("Block_1", "Block_10/Dense_0/bias")
    assert _matches("decoder/Dense_1", "decoder/Dense_1/kernel")
    assert not _matches("decoder/Dense_1", "decoder/Dense_0/kernel")
    assert _matches("Block", "Block_3/LayerNorm_0/scale")


def test_scanned_blocks_are_frozen_by_their_layer_names():
    """Stacked blocks answer to Block_0/..., Block_1/...: freezing every layer freezes the
    stacked leaves whole; freezing some (partly_frozen) makes `fit` unroll the run
    (prepare.with_layout), and a mask of the stacked leaves refuses it."""
    config = TransformerConfig(layers=2, d_model=16, heads=2, context=8, vocab_size=10,
                               output_size=10)
    shapes = jax.eval_shape(lambda: Transformer(config).init(
        jax.random.PRNGKey(0), jax.numpy.zeros((1, 8), jax.numpy.int32))["params"])
    mask = trainable_mask(shapes, ["Block"])
    assert not any(jax.tree.leaves(mask[STACKED])) and mask["Embed_0"]["embedding"] is True
    assert not partly_frozen(shapes, ["Block", "embed"]) and partly_frozen(shapes, ["Block_0"])
    with pytest.raises(ValueError, match="some of the scanned blocks"):
        trainable_mask(shapes, ["Block_0"])
    with pytest.raises(ValueError, match="matches no parameter"):
        trainable_mask(shapes, ["Blocks"])  # layers are named as unrolled


def legacy_text_run(workdir, data_file):
    """A 2-layer text Transformer saved with unrolled blocks (Block_0, Block_1), as every
    run before scan_layers was: fit in this process with scan_layers False."""
    from jaxtrain.training.commands.fit import fit
    from jaxtrain.training.settings.files import Layer, resolve

    config, _ = resolve([Layer("flag", {
        "model": "transformer", "data": {"dataset": "text", "data_file": str(data_file)},
        "train": {"batch_size": 4, "steps": 6, "warmup_steps": 2, "eval_every": 3},
        "model_config": {"layers": 2, "d_model": 16, "heads": 2, "context": 16}})])
    fit(dataclasses.replace(config, model_config=config.model_config.replace(
        scan_layers=False)), workdir)


@pytest.mark.slow
def test_text_fine_tune_keeps_the_vocabulary(tmp_path, jaxtrain, capsys):
    """A run with unrolled blocks (saved before scan_layers) still evaluates, and a run
    fine-tuned from it stacks its blocks; --freeze Block_0 of stacked blocks unrolls
    them again and freezes exactly layer 0."""
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("the quick brown fox jumps over the lazy dog.\n" * 30)
    second.write_text("a lazy dog jumps over the brown fox.\n" * 30)
    common = ["--model", "transformer", "--dataset", "text", "--context", 16,
              "--batch-size", 4, "--steps", 6, "--warmup-steps", 2, "--eval-every", 3]
    legacy_text_run(tmp_path / "a", first)
    capsys.readouterr()  # its progress
    a = latest(tmp_path / "a")
    assert not a.config.model_config.scan_layers and "Block_1" in a.state.params
    evaluated = json.loads(jaxtrain("eval", "--workdir", tmp_path / "a", "--json",
                                    check=True).stdout)
    assert evaluated["test_loss"] == records(tmp_path / "a")[-1]["test_loss"]

    jaxtrain("fit", *common, "--data-file", second, "--init-from", tmp_path / "a",
             "--freeze", "embed", "--workdir", tmp_path / "b", check=True)
    b = latest(tmp_path / "b")
    assert b.config.data.vocab == a.config.data.vocab  # the first text's characters
    assert b.config.model_config.scan_layers and STACKED in b.state.params
    old, new = flat(relayout(a.state.params, scan_layers=True)), flat(b.state.params)
    assert old.keys() == new.keys()
    for path in old:
        assert np.array_equal(new[path], old[path]) == path.startswith("Embed_0"), path

    tune = ["fit", *common, "--data-file", second, "--init-from", tmp_path / "b",
            "--freeze", "embed,Block_0"]
    listed = jaxtrain(*tune, "--list-params", check=True).stdout
    assert re.search(r"Block_0/Dense_0/kernel +\(16, 64\) +1,024 +frozen", listed), listed
    assert re.search(r"Block_1/Dense_0/kernel +\(16, 64\) +1,024 +trained", listed), listed
    jaxtrain(*tune, "--workdir", tmp_path / "c", check=True)
    c = latest(tmp_path / "c")
    assert not c.config.model_config.scan_layers  # whole frozen leaves: no weight gradients
    for tree in ("params", "ema_params"):
        old = flat(relayout(getattr(b.state, tree), scan_layers=False))
        new = flat(getattr(c.state, tree))
        assert old.keys() == new.keys()
        for path in old:
            frozen = path.startswith(("Embed_0", "Block_0/"))
            assert np.array_equal(new[path], old[path]) == frozen, path
    third = tmp_path / "third.txt"
    third.write_text("ZEBRAS QUIZ\n" * 60)
    assert_one_line_error(
        jaxtrain("fit", *common, "--data-file", third, "--init-from", tmp_path / "a",
                 "--workdir", tmp_path / "d"), "characters the run in", "never saw")
    # The run with unrolled blocks also trains on as it is.
    jaxtrain("resume", "--workdir", tmp_path / "a", "--steps", 9, check=True)
    resumed = latest(tmp_path / "a")
    assert resumed.step == 9 and not resumed.config.model_config.scan_layers
    assert "Block_1" in resumed.state.params
