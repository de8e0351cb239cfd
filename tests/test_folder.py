"""--dataset folder: the user's own images, one subfolder per class."""

import json

import jax
import numpy as np
import pytest
from conftest import assert_one_line_error
from PIL import Image

from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.settings.config import DataConfig
from jaxtrain.training.sources.folder import DEFAULT_SIZE, load_folder
from jaxtrain.training.sources.images import ImageSource

CLASSES = {"circle": 14, "square": 12, "stripes": 10}  # images per class


def shape_image(kind: str, i: int, size=(40, 36)) -> Image.Image:
    """A small RGB picture of the class, of another size than 28x28."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[: size[1], : size[0]]
    cx, cy = size[0] / 2 + rng.integers(-4, 5), size[1] / 2 + rng.integers(-4, 5)
    if kind == "circle":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < (8 + i % 5) ** 2
    elif kind == "square":
        mask = (abs(xx - cx) < 7 + i % 4) & (abs(yy - cy) < 7 + i % 4)
    else:
        mask = (xx // (3 + i % 3)) % 2 == 0
    rgb = np.zeros((*mask.shape, 3), np.uint8)
    rgb[mask] = (200 + i % 50, 120, 40)
    return Image.fromarray(rgb)


def write_folder(root, classes=CLASSES):
    for kind, n in classes.items():
        (root / kind).mkdir(parents=True)
        for i in range(n):  # PNGs and JPEGs
            shape_image(kind, i).save(root / kind / f"{i:03d}.{'jpg' if i % 3 == 0 else 'png'}")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("shapes"))


def test_hold_out_is_stratified_seeded_and_cached(tmp_path):
    root = write_folder(tmp_path / "shapes")
    (train_x, train_y), (test_x, test_y), names = load_folder(root, 0.25, tmp_path / "cache")
    assert names == ["circle", "square", "stripes"]
    # RGB pictures stay RGB, brought to the default size
    assert train_x.dtype == np.uint8 and train_x.shape[1:] == (DEFAULT_SIZE, DEFAULT_SIZE, 3)
    # round(0.25 * n) of each class held out: 14 -> 4, 12 -> 3, 10 -> 2 (2.5 rounds to even)
    assert np.bincount(test_y).tolist() == [4, 3, 2]
    assert len(train_y) + len(test_y) == sum(CLASSES.values())
    cache = root / f".jaxtrain-{DEFAULT_SIZE}x{DEFAULT_SIZE}.npz"
    stamp = cache.stat().st_mtime_ns
    again = load_folder(root, 0.25, tmp_path / "cache")  # from the cache, the same split
    assert cache.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again[1][0], test_x)
    # A new image changes the folder: it is read again.
    shape_image("circle", 99).save(root / "circle" / "new.png")
    (train2, _), (test2, _), _ = load_folder(root, 0.25, tmp_path / "cache")
    assert len(train2) + len(test2) == sum(CLASSES.values()) + 1
    assert cache.stat().st_mtime_ns != stamp


def test_train_and_test_subfolders_are_the_split(tmp_path):
    write_folder(tmp_path / "d" / "train", {"a": 5, "b": 4})
    write_folder(tmp_path / "d" / "test", {"a": 2, "b": 1})
    (_, train_y), (_, test_y), names = load_folder(tmp_path / "d", 0.1, tmp_path / "cache")
    assert names == ["a", "b"]
    assert np.bincount(train_y).tolist() == [5, 4] and np.bincount(test_y).tolist() == [2, 1]


@pytest.mark.parametrize("make, fragment", [
    (lambda root: root.mkdir(), "has no class subfolders"),
    (lambda root: (write_folder(root, {"a": 3}), (root / "empty").mkdir()),
     "class folder {root}/empty holds no images"),
    (lambda root: (write_folder(root, {"a": 3}), (root / "a" / "notes.txt").write_text("hi")),
     "{root}/a/notes.txt is not an image PIL can read"),
    (lambda root: (write_folder(root, {"a": 3}), (root / "a" / "bad.png").write_bytes(b"\x89PNG")),
     "{root}/a/bad.png is not an image PIL can read"),
    (lambda root: None, "is not a folder"),
])
def test_bad_folders_are_one_line(tmp_path, jaxtrain, make, fragment):
    root = tmp_path / "images"
    make(root)
    proc = jaxtrain("fit", "--dataset", "folder", "--data-dir", root, "--workdir",
                    tmp_path / "run", "--epochs", 1)
    assert_one_line_error(proc, fragment.format(root=root))
    assert not (tmp_path / "run").exists()


def test_fewer_images_than_a_batch(tmp_path, folder):
    with pytest.raises(ValueError, match="--batch-size 64 is larger than the"):
        ImageSource(DataConfig(dataset="folder", data_dir=str(folder)), 64, 0)


def test_images_keep_their_channels_and_are_cropped_to_the_image_size(tmp_path):
    """A grey folder stays one channel; a non-square picture loses the long side's
    edges (shorter side resized to S, centre kept), it is not stretched."""
    grey = tmp_path / "grey"
    for c in ("a", "b"):
        (grey / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((10, 10), 40 * i, np.uint8)).save(grey / c / f"{i}.png")
    (x, _), _, _ = load_folder(grey, 0.3, tmp_path / "cache", size=4)
    assert x.shape[1:] == (4, 4, 1)
    wide = tmp_path / "wide"
    for c in ("a", "b"):
        (wide / c).mkdir(parents=True)
        for i in range(2):  # 12 x 4: a red left third, green middle, blue right third
            rgb = np.zeros((4, 12, 3), np.uint8)
            rgb[:, :4, 0] = rgb[:, 4:8, 1] = rgb[:, 8:, 2] = 255
            Image.fromarray(rgb).save(wide / c / f"{i}.png")
    (x, _), _, _ = load_folder(wide, 0.3, tmp_path / "cache", size=4)
    assert x.shape[1:] == (4, 4, 3)
    np.testing.assert_array_equal(x[:, :, :, 1], 255)  # only the green middle is left
    np.testing.assert_array_equal(x[:, :, :, [0, 2]], 0)


VAE = ["--encoder-widths", 32, "--decoder-widths", 32, "--latent-dim", 4, "--batch-size", 8,
       "--warmup-steps", 2]


@pytest.mark.slow
def test_vae_on_a_folder_with_class_names(tmp_path, folder, jaxtrain):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    args = ["fit", "--dataset", "folder", "--data-dir", folder, "--epochs", 2, *VAE]
    jaxtrain(*args, "--workdir", straight, check=True)
    restored = checkpoint.restore(straight)
    assert restored.config.data.class_names == ("circle", "square", "stripes")
    assert restored.config.model_config.num_classes == 3
    assert restored.step == 2 * (33 // 8)  # 36 images, 3 + 3 + 2 held out (0.1), 4 steps
    # Exact resume, as with MNIST.
    jaxtrain(*args, "--workdir", stopped, "--stop-at-epoch", 1, check=True)
    jaxtrain("resume", "--workdir", stopped, check=True)
    for x, y in zip(jax.tree.leaves(restored.state),
                    jax.tree.leaves(checkpoint.restore(stopped).state),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    metrics = json.loads(jaxtrain("eval", "--workdir", straight, "--json", check=True).stdout)
    assert metrics["test_examples"] == 3
    # Classes by name; rows labelled by name (a margin left of the 3 x 30 + 2 pixel grid).
    out = tmp_path / "square.png"
    jaxtrain("sample", "--class", "square", "--num", 4, "--workdir", straight, "--out", out,
             check=True)
    assert Image.open(out).size == (2 * 30 + 2, 2 * 30 + 2)
    jaxtrain("sample", "--class", "all", "--num", 6, "--workdir", straight, "--out", out,
             check=True)
    assert Image.open(out).size[0] > 2 * 30 + 2
    assert Image.open(straight / "samples_epoch002.png").size[0] > 3 * 30 + 2
    assert_one_line_error(jaxtrain("sample", "--class", "triangle", "--workdir", straight),
                          "--class 'triangle' is not a class of this run",
                          "circle, square, stripes")
    other = write_folder(tmp_path / "other", {"circle": 10, "square": 10})
    proc = jaxtrain("eval", "--workdir", straight, "--data-dir", other)
    assert proc.returncode == 2 and "are not the ones the run was trained on" in proc.stderr


@pytest.mark.slow
def test_digits_transformer_on_a_folder(tmp_path, folder, jaxtrain):
    workdir = tmp_path / "digits"
    # RGB at 8 x 8: 48 tokens an image (at the default size 588, drawn token by token)
    jaxtrain("fit", "--dataset", "folder", "--data-dir", folder, "--image-size", 8,
             "--model", "transformer", "--layers", 1, "--d-model", 16, "--heads", 2,
             "--batch-size", 8, "--epochs", 1, "--warmup-steps", 1, "--workdir", workdir,
             check=True)
    restored = checkpoint.restore(workdir)
    assert restored.config.model_config.vocab_size == 16 + 3  # patch symbols, class tokens
    assert restored.config.model_config.context == 4 * 4 * 3  # 2 x 2 patches per channel
    assert np.isfinite(json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
                       ["test_loss"])
