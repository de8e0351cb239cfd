import gzip
import subprocess
import sys

import numpy as np
import pytest
from conftest import N_TEST, N_TRAIN, make_images, write_dataset

from jaxtrain.training.settings.config import DataConfig
from jaxtrain.training.sources import images as data
from jaxtrain.training.sources import mnist


def load(name, data_dir):
    """(train, test) ArrayDatasets of a built-in dataset in data_dir, offline."""
    return data.load_datasets(DataConfig(dataset=name, data_dir=str(data_dir),
                                         download=False))[:2]


def test_loads_idx_files_with_torchvision(data_dir):
    train, test = load("mnist", data_dir)
    assert (len(train), len(test)) == (N_TRAIN, N_TEST)
    images, labels = make_images(N_TRAIN, seed=0)
    got_images, got_labels, index = train.__getitems__([0, 5])
    assert index.tolist() == [0, 5]
    np.testing.assert_array_equal(got_images, images[[0, 5]][..., None])
    np.testing.assert_array_equal(got_labels, labels[[0, 5]])


def test_train_batches_are_full_uint8_and_shuffled_by_seed_and_epoch(data_dir):
    train, _ = load("mnist", data_dir)
    batches = list(data.train_loader(train, 8, seed=0, epoch=0))
    assert len(batches) == N_TRAIN // 8 == data.steps_per_epoch(train, 8)
    b = batches[0]
    assert b["image"].dtype == np.uint8 and b["image"].shape == (8, *mnist.SHAPE)
    assert b["label"].dtype == np.int32 and b["label"].shape == (8,)
    assert b["image"].max() == 255
    labels = lambda bs: np.concatenate([x["label"] for x in bs])  # noqa: E731
    again = list(data.train_loader(train, 8, seed=0, epoch=0))
    np.testing.assert_array_equal(labels(batches), labels(again))
    other_epoch = list(data.train_loader(train, 8, seed=0, epoch=1))
    assert not np.array_equal(labels(batches), labels(other_epoch))
    # Starting at batch 3 gives exactly batches 3.. of the same epoch (exact resume).
    tail = list(data.train_loader(train, 8, seed=0, epoch=0, start_batch=3))
    assert len(tail) == len(batches) - 3
    for x, y in zip(tail, batches[3:]):
        np.testing.assert_array_equal(x["image"], y["image"])


def test_eval_covers_every_example_once_with_padding_masked(data_dir):
    _, test = load("mnist", data_dir)
    batches = list(data.eval_loader(test, 8))
    assert len(batches) == 4  # 30 = 8 + 8 + 8 + 6
    assert all(b["image"].shape == (8, *mnist.SHAPE) for b in batches)
    assert batches[-1]["mask"].tolist() == [1] * 6 + [0] * 2
    assert batches[-1]["index"][:6].tolist() == list(range(24, 30))
    assert sum(b["mask"].sum() for b in batches) == N_TEST
    _, labels = make_images(N_TEST, seed=1)
    real = np.concatenate([b["label"][b["mask"] == 1] for b in batches])
    np.testing.assert_array_equal(real, labels)


def test_missing_data_without_download_names_dir_files_and_remedy(tmp_path):
    with pytest.raises(ValueError) as e:
        load("mnist", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "--data-dir" in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    raw = write_dataset(tmp_path)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load("mnist", tmp_path)


def test_label_count_mismatch_is_a_clear_error(tmp_path):
    raw = write_dataset(tmp_path)
    from conftest import write_idx

    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(N_TEST - 1, np.uint8))
    with pytest.raises(ValueError, match="labels"):
        load("mnist", tmp_path)


def test_fashion_mnist_found_offline_from_debian_package(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    src = write_dataset(tmp_path / "src")
    debian.mkdir()
    for f in src.iterdir():
        with gzip.open(debian / f"{f.name}.gz", "wb") as out:
            out.write(f.read_bytes())
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST", debian)
    train, test = load("fashion-mnist", tmp_path / "cache")
    assert (len(train), len(test)) == (N_TRAIN, N_TEST)
    assert (tmp_path / "cache" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_reading_images_imports_no_torchdynamo_and_leaves_it_importable(data_dir):
    """training/host/workarounds.py: torchvision without torch._dynamo (1.4 s of the start);
    TorchDynamo itself still imports whole afterwards."""
    code = ("import sys; from jaxtrain.training.sources import images as data; "
            "from jaxtrain.training.settings.config import DataConfig; "
            f"train, _, _ = data.load_datasets(DataConfig(dataset='mnist', "
            f"data_dir={str(data_dir)!r}, download=False)); "
            "assert len(train) > 0; "
            "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'; "
            "import torch._dynamo.utils as u; r = sys.modules['torchvision.ops.roi_align']; "
            "assert u.__file__ and callable(u.is_compile_supported); "
            "print(r.is_compile_supported.__module__, u.is_compile_supported.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["jaxtrain.training.host.workarounds", "torch._dynamo.utils"]
