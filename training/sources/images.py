"""MNIST-family data: torchvision datasets read once into memory, batched by a DataLoader.

Batches are dicts of numpy arrays: image float32 [B, 784] in [0, 1], label int32 [B],
index int32 [B] (the examples' positions in the dataset) and, for evaluation, mask
float32 [B] (1 for real examples, 0 for padding).

The whole uint8 dataset is one tensor; a batch is one slice of it (the Dataset has
`__getitems__`), so there is no per-sample PIL/ToTensor cost. The training order of
epoch e is a permutation drawn from (seed, e) alone, so a run resumed in the middle
of an epoch sees exactly the batches the uninterrupted run saw.
"""

import functools
import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from jaxtrain.training.sources.vision import import_torchvision

torchvision = import_torchvision()

# Debian's package dataset-fashion-mnist: real Fashion-MNIST, no network needed.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_CLASSES = {"mnist": torchvision.datasets.MNIST,
                       "fashion-mnist": torchvision.datasets.FashionMNIST}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def raw_dir(dataset: str, data_dir) -> Path:
    """Where torchvision looks for the uncompressed IDX files (of a --data-dir that may
    name its MNIST/ or MNIST/raw/ folder: data_root)."""
    return data_root(dataset, data_dir) / TORCHVISION_CLASSES[dataset].__name__ / "raw"


def data_root(dataset: str, data_dir) -> Path:
    """The folder torchvision takes, from a --data-dir that may name it or, as people
    often do, its MNIST/ or MNIST/raw/ folder (where the files are)."""
    d, name = Path(data_dir), TORCHVISION_CLASSES[dataset].__name__
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
    """Images uint8 [N, 28, 28] and labels int64 [N] of one split, as torch tensors."""
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
            TORCHVISION_CLASSES[dataset](data_dir, train=train, download=True)
        except Exception as e:  # torchvision raises RuntimeError/URLError/OSError offline
            _remove_empty(made)  # no empty MNIST/raw/ left behind in the cache
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(":")
            raise _missing_data_error(dataset, raw, f"the download failed ({reason})") from None
    try:
        ds = TORCHVISION_CLASSES[dataset](data_dir, train=train, download=False)
        images, labels = ds.data, ds.targets
    except (AssertionError, RuntimeError, ValueError, TypeError) as e:
        split = "train" if train else "t10k"
        raise ValueError(f"the {split} IDX files in {raw} are truncated or corrupt "
                         f"({type(e).__name__}: {e or 'bad header or size'}): delete them "
                         "and download again, or point --data-dir at good copies") from None
    if images.shape[1:] != (28, 28) or len(labels) != len(images):
        raise ValueError(f"the IDX files in {raw} hold images {tuple(images.shape)} and "
                         f"{len(labels)} labels; expected [N, 28, 28] images and N labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"the label file in {raw} has labels outside 0-9: it is corrupt")
    return images, labels


class ArrayDataset(Dataset):
    """A dataset held in memory (numpy views of the torchvision tensors);
    `__getitems__` returns a whole batch with one fancy index, not one item at a time."""

    def __init__(self, images, labels):
        self.images = np.asarray(images).reshape(len(images), -1)  # uint8 [N, 784]
        self.labels = np.asarray(labels).astype(np.int32)  # [N]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.__getitems__([index])

    def __getitems__(self, indices):
        indices = np.asarray(indices, np.int32)
        return self.images[indices], self.labels[indices], indices


def _to_numpy(batch, pad_to=None):
    """A batch as the steps take it; with pad_to, padded to that size with a mask."""
    images, labels, index = batch
    # Pixels stay uint8 (0-255) to the device, a quarter of float32's bytes; the model
    # families scale them to [0, 1] inside the jitted step.
    out = {"image": images,  # uint8 [B, 784]
           "label": labels,  # int32 [B]
           "index": index}  # int32 [B], position in the dataset
    if pad_to is None:
        return out
    n = len(out["label"])
    out = {k: np.pad(v, [(0, pad_to - n)] + [(0, 0)] * (v.ndim - 1)) for k, v in out.items()}
    out["mask"] = (np.arange(pad_to) < n).astype(np.float32)  # [B] 1 = real example
    return out


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of one epoch, a function of (seed, epoch) only."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(mixed))


def steps_per_epoch(dataset: ArrayDataset, batch_size: int) -> int:
    """Full batches per epoch; the remainder (a different one each epoch) is dropped."""
    return len(dataset) // batch_size


def train_loader(dataset, batch_size, seed, epoch, start_batch=0):
    """Shuffled full batches of epoch `epoch`, beginning at batch `start_batch`."""
    n = steps_per_epoch(dataset, batch_size)
    order = epoch_permutation(len(dataset), seed, epoch)[: n * batch_size].view(n, batch_size)
    return DataLoader(dataset, batch_sampler=order[start_batch:].tolist(), collate_fn=_to_numpy)


def eval_loader(dataset, batch_size):
    """Every example once, in order; the last batch is padded to full size with mask 0,
    so the eval step compiles once and padding never counts."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False,
                      collate_fn=functools.partial(_to_numpy, pad_to=batch_size))


def load_datasets(dataset: str, data_dir, download: bool = True):
    """(train, test) ArrayDatasets."""
    # torch only draws permutations and runs the DataLoader here; its OpenMP threads
    # would otherwise spin after each op and take the cores XLA computes on (measured
    # when batches were torch slices: data + steps per epoch went from 6.7 s to 4.3 s).
    torch.set_num_threads(1)
    train = ArrayDataset(*load_split(dataset, data_dir, True, download))
    test = ArrayDataset(*load_split(dataset, data_dir, False, download))
    return train, test


class ImageSource:
    """A Source (training/sources/base.py): training and test batches of an MNIST-family
    dataset or an image folder (training/sources/folder.py), addressed by global step.
    `class_names` is None for MNIST; `train` and `test` hold the arrays (the judge and
    the sample scores read them)."""

    def __init__(self, dataset: str, data_dir, download: bool, batch_size: int, seed: int,
                 test_fraction: float = 0.1):
        self.class_names = None
        if dataset == "folder":
            from jaxtrain.training.settings.config import default_data_dir
            from jaxtrain.training.sources.folder import load_folder

            torch.set_num_threads(1)  # as in load_datasets
            train, test, self.class_names = load_folder(data_dir, test_fraction,
                                                        default_data_dir())
            self.train, self.test = ArrayDataset(*train), ArrayDataset(*test)
            if not len(self.test):
                raise ValueError(f"{data_dir} leaves no test images: give each class at least "
                                 "two images, or a test/ folder beside train/")
        else:
            self.train, self.test = load_datasets(dataset, data_dir, download)
        self.batch_size, self.seed = batch_size, seed
        self.steps_per_epoch = steps_per_epoch(self.train, batch_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"--batch-size {batch_size} is larger than the {len(self.train)} "
                             "training examples: lower it")

    def train_batches(self, start_step: int):
        """Batches of steps start_step, start_step + 1, ... across epochs (endless)."""
        epoch, batch = divmod(start_step, self.steps_per_epoch)
        while True:
            yield from train_loader(self.train, self.batch_size, self.seed, epoch, batch)
            epoch, batch = epoch + 1, 0

    @property
    def eval_examples(self) -> int:
        return len(self.test)

    def eval_batches(self, batch_size=None):
        return eval_loader(self.test, batch_size or self.batch_size)

    def preview(self, n: int = 10):
        """The first n test images float32 [n, 784] and labels int32 [n], for PNGs."""
        images, labels, _ = self.test.__getitems__(list(range(min(n, len(self.test)))))
        return images.astype(np.float32) / 255.0, labels
