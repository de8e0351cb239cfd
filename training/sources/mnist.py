"""MNIST and Fashion-MNIST: torchvision's datasets, read from its IDX layout (downloaded
by torchvision where the network allows, or Fashion-MNIST copied from Debian's
`dataset-fashion-mnist`, or IDX files you put in place): SHAPE, 10 classes.
"""

import gzip
import shutil
import sys
from pathlib import Path

import numpy as np

from jaxtrain.models.spec import ImageSpec
from jaxtrain.training.sources.registry import Dataset, ImageData, register

SHAPE = (28, 28, 1)
# The classes' names, as torchvision names them (torchvision.datasets.FashionMNIST.classes;
# MNIST's are its digits), kept here so that naming a class costs no torch import.
CLASSES = {"mnist": tuple("0123456789"),
           "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")}
TORCHVISION_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def torchvision_class(dataset: str):
    from jaxtrain.training.host.workarounds import torchvision_module

    return getattr(torchvision_module().datasets, TORCHVISION_NAMES[dataset])


# Debian's package dataset-fashion-mnist: real Fashion-MNIST, no network needed.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def raw_dir(dataset: str, data_dir) -> Path:
    """Where torchvision looks for the uncompressed IDX files (of a --data-dir that may
    name its MNIST/ or MNIST/raw/ folder: data_root)."""
    return data_root(dataset, data_dir) / TORCHVISION_NAMES[dataset] / "raw"


def data_root(dataset: str, data_dir) -> Path:
    """The folder torchvision takes, from a --data-dir that may name it or, as people
    often do, its MNIST/ or MNIST/raw/ folder (where the files are)."""
    d, name = Path(data_dir), TORCHVISION_NAMES[dataset]
    if d.name == "raw" and d.parent.name == name:
        return d.parent.parent
    if d.name == name and (d / "raw").is_dir():
        return d.parent
    return d


def _remove_empty(folders) -> None:
    """Removes the folders a failed download made, if they stayed empty (deepest first)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def _copy_debian_fashion_mnist(raw: Path) -> bool:
    """Unpacks Debian's Fashion-MNIST into torchvision's layout; False if it is absent."""
    sources = [DEBIAN_FASHION_MNIST / f"{name}.gz" for name in IDX_FILES]
    if not all(s.exists() for s in sources):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for src, name in zip(sources, IDX_FILES):
        if not (raw / name).exists():
            tmp = raw / f"{name}.partial"
            with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            tmp.rename(raw / name)
    print(f"Fashion-MNIST: copied from {DEBIAN_FASHION_MNIST} into {raw}", file=sys.stderr)
    return True


def _missing_data_error(dataset, raw, reason) -> ValueError:
    root = raw.parent.parent
    if all((root / name).exists() for name in IDX_FILES):  # the files, in the wrong place
        return ValueError(f"the {dataset} IDX files are in {root} itself, but torchvision "
                          f"reads them from {raw}: move them there and pass --data-dir "
                          f"{root}, or keep them and pass --data-dir of a folder holding "
                          f"{raw.parent.name}/raw/")
    remedy = ("put the IDX files there or pass --data-dir DIR (a folder holding "
              f"{raw.parent.name}/raw/), or train offline with --dataset fashion-mnist "
              "after `apt-get install dataset-fashion-mnist`")
    if dataset == "fashion-mnist":
        remedy = ("run `apt-get install dataset-fashion-mnist` (files under "
                  f"{DEBIAN_FASHION_MNIST}), or put the IDX files there, or pass --data-dir DIR")
    return ValueError(f"{dataset} not found in {raw} (expected {', '.join(IDX_FILES)}) "
                      f"and {reason}: {remedy}")


def load_split(dataset: str, data_dir, train: bool, download: bool = True):
    """Images uint8 [N, H, W] and labels int64 [N] of one split, as torch tensors."""
    data_dir = data_root(dataset, data_dir)
    raw = raw_dir(dataset, data_dir)
    have_files = all((raw / name).exists() for name in IDX_FILES)
    if not have_files and dataset == "fashion-mnist":
        have_files = _copy_debian_fashion_mnist(raw)
    if not have_files:
        if not download:
            raise _missing_data_error(dataset, raw, "downloading is off (--no-download)")
        made = [p for p in (raw, raw.parent, Path(data_dir)) if not p.exists()]
        try:
            torchvision_class(dataset)(data_dir, train=train, download=True)
        except Exception as e:  # torchvision raises RuntimeError/URLError/OSError offline
            _remove_empty(made)  # no empty MNIST/raw/ left behind in the cache
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(":")
            raise _missing_data_error(dataset, raw, f"the download failed ({reason})") from None
    try:
        ds = torchvision_class(dataset)(data_dir, train=train, download=False)
        images, labels = ds.data, ds.targets
    except (AssertionError, RuntimeError, ValueError, TypeError) as e:
        split = "train" if train else "t10k"
        raise ValueError(f"the {split} IDX files in {raw} are truncated or corrupt "
                         f"({type(e).__name__}: {e or 'bad header or size'}): delete them "
                         "and download again, or point --data-dir at good copies") from None
    if tuple(images.shape[1:]) != SHAPE[:2] or len(labels) != len(images):
        raise ValueError(f"the IDX files in {raw} hold images {tuple(images.shape)} and "
                         f"{len(labels)} labels; expected [N, {SHAPE[0]}, {SHAPE[1]}] images "
                         "and N labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"the label file in {raw} has labels outside 0-9: it is corrupt")
    return images, labels


def read(data) -> ImageData:
    """Both splits of data.dataset (a DataConfig) as uint8 [N, H, W, 1] arrays."""
    splits = []
    for train in (True, False):
        images, labels = load_split(data.dataset, data.data_dir, train, data.download)
        splits.append((np.asarray(images)[..., None], np.asarray(labels)))
    return ImageData(*splits, spec=ImageSpec(SHAPE, CLASSES[data.dataset]))


def home(data) -> Path:
    """The dataset's folder in torchvision's layout (its MNIST/ or FashionMNIST/)."""
    return raw_dir(data.dataset, data.data_dir).parent


register(Dataset("mnist", "MNIST digits (torchvision; --data-dir holding MNIST/raw/)",
                 read=read, spec=ImageSpec(SHAPE, CLASSES["mnist"]), home=home))
register(Dataset("fashion-mnist", "Fashion-MNIST (torchvision, or Debian's "
                 "dataset-fashion-mnist offline)", read=read,
                 spec=ImageSpec(SHAPE, CLASSES["fashion-mnist"]), home=home))
