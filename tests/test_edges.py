"""Rough edges a first try hits (issue 21): messages that point the right way, options
that are never silently ignored. In-process and cheap: validation paths that fail
before anything compiles, or small helpers."""

import ast
import importlib.util
import json
from pathlib import Path

import jax
import pytest
from conftest import TINY, assert_one_line_error

from jaxtrain.cli.app import parse_step
from jaxtrain.training.engine.parallel import DataParallel


def test_step_latest_is_the_default_the_help_names():
    assert parse_step("latest") is None and parse_step(None) is None
    assert parse_step("best") == "best" and parse_step("12") == 12
    with pytest.raises(ValueError, match="'latest' or 'best'"):
        parse_step("worst")


def test_too_many_devices_says_what_to_pass():
    n = len(jax.devices())
    with pytest.raises(ValueError) as e:
        DataParallel(n + 1)
    message = str(e.value)
    assert f"1 to {n}" not in message if n == 1 else f"1 to {n}" in message
    if n == 1:
        assert "leave --devices out" in message and "device(s)" not in message


def test_plot_of_an_unknown_metric_lists_the_known_ones(tmp_path, jaxtrain):
    (tmp_path / "metrics.jsonl").write_text(json.dumps(
        {"step": 8, "train_loss": 3.0, "test_loss": 2.0, "test_kl": 1.0}) + "\n")
    proc = jaxtrain("plot", tmp_path, "--metric", "nope", "--out", tmp_path / "x.png")
    assert_one_line_error(proc, "--metric nope", "pass one of", "test_kl, test_loss")


def torchvision_classes(name: str) -> list:
    """A torchvision dataset class's `classes`, read from its source (importing torch
    would cost this test 5 s)."""
    folder = importlib.util.find_spec("torchvision").submodule_search_locations[0]
    tree = ast.parse((Path(folder) / "datasets" / "mnist.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    return next(ast.literal_eval(n.value) for n in cls.body if isinstance(n, ast.Assign)
                and n.targets[0].id == "classes")


def test_built_in_datasets_name_their_classes():
    from jaxtrain.training.commands.restored import class_index
    from jaxtrain.training.settings.config import DataConfig
    from jaxtrain.training.sources.mnist import CLASSES

    assert CLASSES["fashion-mnist"] == tuple(torchvision_classes("FashionMNIST"))
    names = DataConfig(dataset="fashion-mnist").labels
    assert [class_index(x, 10, names) for x in ("sneaker", "Ankle boot", "ankle-boot",
                                                "t-shirt", "3")] == [7, 9, 9, 0, 3]
    with pytest.raises(ValueError, match="one of T-shirt/top, Trouser"):
        class_index("shoe", 10, names)
    assert DataConfig(dataset="mnist").labels == tuple("0123456789")
    assert DataConfig(dataset="text", data_file="/x").labels is None


def test_freeze_without_init_from_warns(jaxtrain):
    proc = jaxtrain("fit", "--freeze", "encoder", "--print-config", check=True)
    assert "warning: --freeze encoder without --init-from" in proc.stderr


@pytest.mark.slow
def test_a_short_run_says_its_plan_units_and_how_to_go_on(tmp_path, data_dir, jaxtrain):
    workdir = tmp_path / "run"
    proc = jaxtrain("fit", "--data-dir", data_dir, "--workdir", workdir, *TINY, "--steps", 6,
                    "--eval-every", 3, "--no-tensorboard", "--stop-at-epoch", 1)
    assert proc.returncode == 0, proc.stderr
    # --stop-at-epoch past the end is said, not silently dropped; the plan comes first.
    assert "--stop-at-epoch 1 is not before the run's end (step 6/6)" in proc.stderr
    assert "training vae on mnist: 6 steps (batch 8), " in proc.stderr
    assert "parameters; evaluating every 3 steps," in proc.stderr
    first, second = proc.stdout.splitlines()
    for line in (first, second):  # both losses per image, and labelled so
        assert "train loss" in line and " nats/image  test loss " in line
        assert line.count("nats/image") == 2, line
    assert "(with start-up)" in first and "(with start-up)" not in second
    assert "tensorboard" not in proc.stderr.strip().splitlines()[-1]  # --no-tensorboard

    # A run shorter than its evaluation period (one epoch, 8 steps) evaluates at its end.
    short = jaxtrain("fit", "--data-dir", data_dir, "--workdir", tmp_path / "short", *TINY,
                     "--steps", 4, "--no-tensorboard", check=True)
    assert "parameters; evaluating at the end," in short.stderr

    proc = jaxtrain("eval", "--workdir", workdir, check=True)
    assert "step 6 (epoch 0.75)" in proc.stdout  # 8 steps an epoch; not 0.75000000001
    assert "WARNING" not in proc.stderr  # Orbax's absl chatter stays out
    assert_one_line_error(jaxtrain("resume", "--workdir", workdir, "--steps", 3),
                          "--steps 3 is not more than the 6 steps", "--steps 7 or more")
    proc = jaxtrain("resume", "--workdir", workdir, "--steps", 20, "--stop-at-epoch", 2,
                    check=True)
    assert f"stopped at step 16/20 (--stop-at-epoch); continue with: jaxtrain resume " \
           f"--workdir {workdir}" in proc.stderr
    assert "to step 16, evaluating every 3 steps," in proc.stderr
    proc = jaxtrain("sample", "--class", "all", "--num", 5, "--workdir", workdir, check=True)
    assert "--num 5 with --class all: drawing 1 per class, one row each (10 images)" \
        in proc.stderr


def test_folder_needs_its_data_dir_and_a_text_preset_prints_alone(jaxtrain):
    assert_one_line_error(jaxtrain("fit", "--dataset", "folder", "--print-config"),
                          "--dataset folder needs --data-dir PATH")
    proc = jaxtrain("fit", "--preset", "baby-gpt", "--print-config", check=True)
    assert 'data_file = "PATH/TO/TEXT.txt"  # your text file (or --data-file)' in proc.stdout
    assert_one_line_error(jaxtrain("fit", "--preset", "baby-gpt"), "needs --data-file PATH")


@pytest.mark.slow  # seconds only, but the first import of torch in a worker costs 5 s
def test_data_dir_may_name_the_raw_folder_and_a_failed_download_leaves_no_folders(
        tmp_path, data_dir, monkeypatch):
    from jaxtrain.training.sources import mnist
    from jaxtrain.training.sources.mnist import data_root, load_split

    raw = data_dir / "MNIST" / "raw"
    assert data_root("mnist", raw) == data_root("mnist", raw.parent) == data_dir
    pixels, _ = load_split("mnist", raw, train=False, download=False)
    assert tuple(pixels.shape) == (30, *mnist.SHAPE[:2])
    # Files straight in a folder of another name: said where they must go.
    loose = tmp_path / "loose"
    loose.mkdir()
    for f in raw.iterdir():
        (loose / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ValueError, match=f"in {loose} itself, but torchvision reads them from "
                                         f"{loose}/MNIST/raw"):
        load_split("mnist", loose, train=False, download=False)
    # A download that fails, as torchvision's does offline: what it made goes again.
    class MNIST:  # torchvision's, offline: makes its folders, then fails
        def __init__(self, root, train, download):
            (Path(root) / "MNIST" / "raw").mkdir(parents=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(mnist, "torchvision_class", lambda dataset: MNIST)
    empty = tmp_path / "cache"
    with pytest.raises(ValueError, match="the download failed"):
        load_split("mnist", empty, train=False, download=True)
    assert not empty.exists()


def test_a_transformer_run_of_short_epochs_fits_its_family_warmup(monkeypatch, jaxtrain):
    """The family's 200 warmup steps in a run of one 8-step epoch: a tenth of the run;
    fit learns from the CLI whether a layer set it (then it stays, and is checked)."""
    from jaxtrain.training.commands import fit as commands
    from jaxtrain.training.settings.defaults import fitted
    from jaxtrain.training.settings.files import Layer, resolve

    config = resolve([Layer("flag", {"model": "transformer", "train": {"epochs": 1}})])[0]
    assert config.train.warmup_steps == 200
    assert fitted(config, frozenset(), 8).train.warmup_steps == 0
    assert fitted(config, frozenset(), 5000).train.warmup_steps == 200
    assert fitted(config, {("train", "warmup_steps")}, 8).train.warmup_steps == 200
    seen = []
    monkeypatch.setattr(commands, "fit", lambda *a, given, **k: seen.append(given))
    monkeypatch.setattr("jaxtrain.cli.train.start_jax", lambda: None)
    jaxtrain("fit", "--model", "transformer", "--epochs", 1, check=True)
    jaxtrain("fit", "--model", "transformer", "--epochs", 1, "--warmup-steps", 5, check=True)
    assert seen == [frozenset(), {("train", "warmup_steps")}]


def test_the_conv_vae_steps_ten_a_call_off_a_cpu():
    """The conv VAE's one step a call is a CPU's default: on a GPU it takes the VAE's 10,
    unless a layer set it or 10 steps do not fit between two evaluations; on a CPU it
    keeps its 1, and the MLP VAE its 10 everywhere."""
    from jaxtrain.training.settings.defaults import fitted, to_fit
    from jaxtrain.training.settings.files import Layer, resolve

    def run(**model_config):
        return resolve([Layer("flag", {"model_config": model_config,
                                       "train": {"epochs": 1}})])[0]

    conv, mlp = run(network="conv"), run(network="mlp")
    assert conv.train.steps_per_call == 1 and mlp.train.steps_per_call == 10
    spc = lambda *a, **k: fitted(*a, **k).train.steps_per_call  # noqa: E731
    assert spc(conv, frozenset(), 468, "gpu") == 10
    assert spc(conv, frozenset(), 468, "cpu") == 1
    assert spc(conv, frozenset(), 468) == 1
    assert spc(conv, {("train", "steps_per_call")}, 468, "gpu") == 1
    assert spc(conv, frozenset(), 8, "gpu") == 1  # 8 steps between evaluations
    assert spc(mlp, frozenset(), 468, "gpu") == 10
    assert ("train", "steps_per_call") in to_fit(conv, frozenset())


def test_a_printed_config_leaves_the_family_warmup_to_be_fitted(tmp_path, jaxtrain):
    """--print-config of a run in epochs comments the family's warmup out, so the file
    trains what the command would (the warmup fitted to the run); a set one stays."""
    text = jaxtrain("fit", "--model", "transformer", "--epochs", 1, "--print-config",
                    check=True).stdout
    assert "\n# [train] warmup_steps = 200: the default, fitted to the data" in text
    assert "\nwarmup_steps =" not in text
    (tmp_path / "run.toml").write_text(text)
    again = jaxtrain("fit", "--config", tmp_path / "run.toml", "--print-config", check=True)
    assert again.stdout == text
    given = jaxtrain("fit", "--model", "transformer", "--epochs", 1, "--warmup-steps", 50,
                     "--print-config", check=True).stdout
    assert "\nwarmup_steps = 50\n" in given
