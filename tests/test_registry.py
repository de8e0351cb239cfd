"""The registries and the data spec (issue 30): every registered dataset yields what its
spec says, the conv VAE trains on shapes other than MNIST's (scikit-learn's 8 x 8 digits,
RGB folders of two sizes), and no module outside a dataset's own hard-codes MNIST's size."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dataset
from test_folder import write_folder

from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.settings.config import DataConfig
from jaxtrain.training.sources.registry import datasets

ROOT = Path(__file__).resolve().parent.parent


def mnist_like(folder):
    def make(tmp_path, name):
        write_dataset(tmp_path, folder)
        return DataConfig(name, str(tmp_path), download=False)
    return make


def text(tmp_path, name):
    (tmp_path / "t.txt").write_text("hello world\n" * 50)
    return DataConfig(name, data_file=str(tmp_path / "t.txt"))


# Test data for each registered dataset: a dataset registered without an entry here
# fails test_every_dataset_has_test_data, so a new one comes with its test.
MAKE = {
    "mnist": mnist_like("MNIST"),
    "fashion-mnist": mnist_like("FashionMNIST"),
    "digits": lambda tmp_path, name: DataConfig(name),  # scikit-learn's own, offline
    "folder": lambda tmp_path, name: DataConfig(name, str(write_folder(tmp_path / "f")),
                                                image_size=12),
    "text": text,
}


def test_every_dataset_has_test_data():
    assert set(datasets()) == set(MAKE)


@pytest.mark.parametrize("name", list(datasets()))
def test_each_dataset_yields_what_its_spec_says(tmp_path, name):
    from jaxtrain.training.sources.images import ImageSource

    entry, data = datasets()[name], MAKE[name](tmp_path, name)
    assert entry.task == ("text" if data.is_text else "images")
    if data.is_text:
        return  # text sources have a vocabulary, not an image spec (tests/test_text.py)
    source = ImageSource(data, 4, seed=0)
    spec = source.spec
    if entry.spec is not None:  # a dataset of one fixed shape says so before reading
        assert entry.spec == spec
    assert spec.num_classes == len(source.class_names) >= 2
    for batch in (next(source.train_batches(0)), next(iter(source.eval_batches(4)))):
        assert batch["image"].shape == (4, *spec.shape) and batch["image"].dtype == np.uint8
        assert 0 <= batch["label"].min() and batch["label"].max() < spec.num_classes
    assert source.preview()[0].shape[1:] == spec.shape


def test_digits_are_scikit_learns_1797_at_8x8_with_17_levels():
    from jaxtrain.training.sources.images import load_datasets

    train, test, spec = load_datasets(DataConfig("digits"))
    assert spec.shape == (8, 8, 1) and spec.levels == 17
    assert len(train) + len(test) == 1797 and 150 <= len(test) <= 200
    levels = np.unique(np.concatenate([train.images.ravel(), test.images.ravel()]))
    assert len(levels) == 17 and levels[0] == 0 and levels[-1] == 255


LITERAL = re.compile(r"(?<![\w.])(28|784)(?![\w.])")


def test_no_mnist_size_outside_a_dataset_definition():
    """28 and 784 belong to training/sources/mnist.py (and --image-size's default to
    folder.py): everything else reads the data's spec."""
    own = {"training/sources/mnist.py", "training/sources/folder.py"}
    found = []
    for path in sorted([*ROOT.glob("cli/*.py"), *ROOT.glob("models/*.py"),
                        *ROOT.glob("training/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel in own:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if LITERAL.search(line.split("#")[0]):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


CONV = ["--network", "conv", "--channels", "8,16", "--latent-dim", "4", "--batch-size", "8",
        "--warmup-steps", "2"]


@pytest.mark.slow
def test_conv_vae_on_scikit_learns_digits(tmp_path, jaxtrain):
    workdir = tmp_path / "run"
    jaxtrain("fit", "--dataset", "digits", "--epochs", 1, "--eval-every", 1000, *CONV,
             "--workdir", workdir, "--data-dir", tmp_path, check=True)
    restored = checkpoint.restore(workdir)
    assert tuple(restored.config.model_config.image_shape) == (8, 8, 1)
    assert restored.config.model_config.network == "conv"
    metrics = json.loads(jaxtrain("eval", "--workdir", workdir, "--json", check=True).stdout)
    assert np.isfinite(metrics["test_loss"])
    out = tmp_path / "seven.png"
    jaxtrain("sample", "--class", 7, "--num", 4, "--workdir", workdir, "--out", out,
             check=True)
    assert out.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("size, pixels", [(12, "independent"), (20, "local-ar")])
def test_conv_vae_on_rgb_folders_of_two_sizes(tmp_path, jaxtrain, size, pixels):
    """(The second size's pixels also see their neighbours: --pixel-model local-ar's
    sampling, pixel by pixel, on RGB.)"""
    from PIL import Image

    folder = write_folder(tmp_path / "shapes")
    workdir = tmp_path / "run"
    jaxtrain("fit", "--dataset", "folder", "--data-dir", folder, "--image-size", size,
             "--epochs", 1, *CONV, "--pixel-model", pixels, "--workdir", workdir, check=True)
    config = checkpoint.restore(workdir).config
    assert tuple(config.model_config.image_shape) == (size, size, 3)
    assert config.model_config.pixel_model == pixels
    out = tmp_path / "circle.png"
    jaxtrain("sample", "--class", "circle", "--num", 4, "--workdir", workdir, "--out", out,
             check=True)
    grid = Image.open(out)
    assert grid.mode == "RGB" and grid.size == (2 * (size + 2) + 2, 2 * (size + 2) + 2)
