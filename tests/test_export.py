"""`jaxtrain export` and its PyTorch reader: the exported EMA parameters, loaded into the
twins of benchmarks/torch_reference.py, give jaxtrain's outputs (VAE images, digits and
text logits) to 1e-5; the metadata rebuilds the run's config; errors are one line."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import SHAPE, TINY, assert_one_line_error, fresh_params, write_digit_folder

from jaxtrain.models.pixel_lm import PixelLMFamily
from jaxtrain.models.transformer import Transformer, TransformerConfig, relayout
from jaxtrain.models.vae import VAEConfig, VAEFamily
from jaxtrain.training.commands import export
from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.settings.config import RunConfig

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import torch_reference  # noqa: E402 (benchmarks/, beside the tests)

ATOL = 1e-5


def torch_images(model, z, labels):
    with torch.no_grad():
        return model.images(torch.tensor(np.asarray(z)),
                            torch.tensor(np.asarray(labels, np.int64))).numpy()


def torch_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens, np.int64))).numpy()


def noisy(params, seed=1):
    """`params` plus noise, so zero-initialised leaves (biases, the class prior) are
    not zero and a swapped or dropped tensor shows. (In NumPy: the float32 sums JAX
    would compute, without a compile per shape.)"""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: np.asarray(x) + np.float32(0.1 * rng.normal(size=x.shape)),
                        params)


def write(tmp_path, params, model, config, name="model.safetensors"):
    """Exports `params` as `jaxtrain export` would, without a run; returns the twin."""
    from safetensors.numpy import save_file

    run = RunConfig.from_dict({"model": model, "model_config": config.__dict__,
                               "data": {"dataset": "mnist"}, "train": {}})
    path = tmp_path / name
    save_file(export.tensors(params), str(path), metadata=export.metadata(run, 3))
    return torch_reference.load_exported(path)[0]


@pytest.mark.parametrize("settings", [
    {},  # the defaults: every-layer condition, class prior, silu, bernoulli
    {"condition": "latent", "prior": "standard", "activation": "gelu", "likelihood": "gaussian"},
    {"activation": "elu", "encoder_widths": (16, 8), "decoder_widths": (8, 16, 12)},
    {"activation": "relu"},
])
def test_vae_twin_decodes_the_same_images(tmp_path, settings):
    config = VAEConfig(**{"encoder_widths": (16,), "decoder_widths": (12, 8), "latent_dim": 4,
                          "image_shape": SHAPE,
                          **settings})
    family = VAEFamily(config)
    # (Jitted, as a run's init is: one program, not a compile per operation.)
    params = noisy(fresh_params(family, 1))
    twin = write(tmp_path, params, "vae", config)
    labels = np.arange(10) % 10
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (10, 4)) * 3)
    np.testing.assert_allclose(torch_images(twin, z, labels),
                               np.asarray(jax.jit(family.generate)(params, labels, z)),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_transformer_twin_gives_the_same_logits_in_either_layout(tmp_path, scan_layers):
    config = TransformerConfig(layers=3, d_model=16, heads=4, context=12, vocab_size=9,
                               output_size=7, scan_layers=scan_layers)
    model = Transformer(config)
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(3), (2, 12), 0, 9))
    params = noisy(jax.jit(model.init)(jax.random.PRNGKey(0), tokens)["params"])
    assert ("Blocks" in params) == scan_layers
    twin = write(tmp_path, params, "transformer", config)
    # The file names layers alike in both layouts.
    names = set(export.tensors(params))
    other = jax.device_get(jax.jit(relayout, static_argnums=1)(params, not scan_layers))
    assert names == set(export.tensors(other))
    assert "Block_2/Dense_1/kernel" in names and not any("Blocks" in n for n in names)
    np.testing.assert_allclose(torch_logits(twin, tokens), np.asarray(jax.jit(model.apply)(
        {"params": params}, tokens)), atol=ATOL, rtol=0)


def test_vae_run_exported_through_the_cli(tmp_path, data_dir, jaxtrain):
    workdir = tmp_path / "vae"
    jaxtrain("fit", "--data-dir", data_dir, "--workdir", workdir, "--epochs", 1, *TINY,
             "--log-every", 4, check=True)
    out = tmp_path / "out" / "vae.safetensors"
    proc = jaxtrain("export", "--workdir", workdir, "--step", "best", "--out", out, check=True)
    assert proc.stdout.strip() == f"wrote {out} (vae on images, step 8)"

    restored = checkpoint.restore(workdir, "best")
    twin, meta = torch_reference.load_exported(out)
    tensors, same_meta = export.read(out)
    assert same_meta == meta and all(v.dtype == np.float32 for v in tensors.values())
    assert meta["format"] == export.FORMAT and (meta["model"], meta["task"]) == ("vae", "images")
    assert meta["step"] == "8" and json.loads(meta["class_names"]) == list("0123456789")
    assert "vocab" not in meta and "tokenizer" not in meta
    assert RunConfig.from_dict(json.loads(meta["config"])) == restored.config
    # The EMA parameters, not the trained ones.
    ema = export.tensors(restored.state.ema_params)
    assert tensors.keys() == ema.keys()
    assert all(np.array_equal(tensors[k], ema[k]) for k in ema)
    assert not np.array_equal(tensors["out/bias"],
                              np.asarray(restored.state.params["out"]["bias"]))

    family = restored.config.family()
    labels = np.arange(20) % 10
    z = np.asarray(jax.jit(family.latents)(restored.state.ema_params, jax.random.PRNGKey(0),
                                           labels))
    np.testing.assert_allclose(torch_images(twin, z, labels), np.asarray(jax.jit(
        family.generate)(restored.state.ema_params, labels, z)), atol=ATOL, rtol=0)

    jaxtrain("export", "--workdir", workdir, check=True)  # the default --out
    assert export.read(workdir / "model.safetensors")[1] == meta


@pytest.mark.slow  # an end-to-end CLI run / a benchmark script's process
def test_digits_transformer_exported_through_the_cli(tmp_path, jaxtrain):
    """On the tiny digits as an 8 x 8 folder: 16 tokens an image, so the run's grid of 100
    samples, drawn token by token, takes a twelfth of MNIST's 196 steps."""
    workdir, data_dir = tmp_path / "digits", write_digit_folder(tmp_path / "data", 8,
                                                                judge=False)
    jaxtrain("fit", "--dataset", "folder", "--image-size", 8, "--data-dir", data_dir,
             "--workdir", workdir, "--model", "transformer", "--layers", 1, "--d-model", 16,
             "--heads", 2, "--batch-size", 8, "--steps", 4, "--warmup-steps", 1,
             "--eval-every", 4, "--no-download", check=True)
    out = tmp_path / "digits.safetensors"
    jaxtrain("export", "--workdir", workdir, "--out", out, check=True)
    twin, meta = torch_reference.load_exported(out)
    restored = checkpoint.restore(workdir)
    assert (meta["model"], meta["task"], meta["step"]) == ("transformer", "images", "4")
    family = restored.config.family()
    assert isinstance(family, PixelLMFamily)
    # A class token (16 + class), then patches 0..15.
    tokens = np.concatenate([16 + np.arange(3)[:, None], np.asarray(jax.random.randint(
        jax.random.PRNGKey(1), (3, 15), 0, 16))], axis=1)
    np.testing.assert_allclose(torch_logits(twin, tokens), np.asarray(jax.jit(
        family.model.apply)({"params": restored.state.ema_params}, tokens)), atol=ATOL, rtol=0)


def test_text_transformer_exported_through_the_cli(tmp_path, jaxtrain):
    text_file = tmp_path / "t.txt"
    text_file.write_text("to be or not to be, that is the question.\n" * 30, encoding="utf-8")
    workdir = tmp_path / "text"
    jaxtrain("fit", "--model", "transformer", "--dataset", "text", "--data-file", text_file,
             "--workdir", workdir, "--layers", 1, "--d-model", 16, "--heads", 2, "--context",
             16, "--batch-size", 4, "--steps", 4, "--warmup-steps", 1, "--eval-every", 4,
             check=True)
    out = tmp_path / "text.safetensors"
    jaxtrain("export", "--workdir", workdir, "--out", out, check=True)
    twin, meta = torch_reference.load_exported(out)
    restored = checkpoint.restore(workdir)
    assert meta["task"] == "text" and "class_names" not in meta
    vocab = meta["vocab"]
    assert vocab == restored.config.data.vocab == "".join(sorted(set(text_file.read_text())))
    tokens = np.array([[vocab.index(c) for c in "to be or not to "]])
    np.testing.assert_allclose(torch_logits(twin, tokens), np.asarray(jax.jit(
        restored.config.family().model.apply)({"params": restored.state.ema_params}, tokens)),
        atol=ATOL, rtol=0)


def test_export_without_a_checkpoint_is_one_line(tmp_path, jaxtrain):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert_one_line_error(jaxtrain("export", "--workdir", tmp_path / "run"), "no checkpoint in")
    assert_one_line_error(jaxtrain("export", "--workdir", tmp_path / "missing"),
                          "does not exist")
    assert_one_line_error(jaxtrain("export", "--workdir", tmp_path / "run", "--step", "newest"),
                          "--step takes")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_out_that_is_a_folder_is_one_line(tmp_path, jaxtrain, monkeypatch):
    monkeypatch.setattr(checkpoint, "restore", lambda *_, **__: _restored_stub())
    (tmp_path / "folder").mkdir()
    assert_one_line_error(jaxtrain("export", "--workdir", tmp_path, "--out",
                                   tmp_path / "folder"), "is a folder")


def _restored_stub():
    config = RunConfig.from_dict({"model": "vae", "model_config": {},
                                  "data": {"dataset": "mnist"}, "train": {}})
    return checkpoint.Restored(1, config, {}, None, [])


def test_a_bpe_runs_tokenizer_goes_in_the_metadata():
    """A text run's tokenizer JSON (config.data.tokenizer_json, BPE runs) is written as
    `tokenizer`; a character run has `vocab` and no `tokenizer`."""
    run = RunConfig.from_dict({
        "model": "transformer", "model_config": {"vocab_size": 3, "output_size": 3},
        "data": {"dataset": "text", "data_file": "t.txt", "vocab": "abc"},
        "train": {"steps": 2, "epochs": None}})
    meta = export.metadata(run, 2)
    assert meta["vocab"] == "abc" and "tokenizer" not in meta and meta["task"] == "text"

    class BPEData:  # the field a BPE run's DataConfig carries
        is_text, vocab, tokenizer_json = True, None, '{"model": {"type": "BPE"}}'

    class BPERun:
        model, task, data = "transformer", "text", BPEData()

        def to_dict(self):
            return run.to_dict()

    meta = export.metadata(BPERun(), 2)
    assert meta["tokenizer"] == BPEData.tokenizer_json and "vocab" not in meta


def test_a_file_that_is_not_an_export_is_refused(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a jaxtrain export"):
        export.read(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a jaxtrain export"):
        torch_reference.load_exported(tmp_path / "other.safetensors")
