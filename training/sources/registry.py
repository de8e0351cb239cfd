"""The datasets a run can name (--dataset), each registered by the module that defines
it: adding one is its module, with one `register(...)` call, and its name in MODULES.

An image dataset reads into arrays (uint8 [N, H, W, C] images, int labels) and says what
they are (models/spec.py: ImageSpec); a dataset whose shape is fixed says so up front
(`spec`), so a run's model is sized without reading the data. Importing this module
costs no torch or JAX: `--help` lists the names.
"""

import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any, Callable

from jaxtrain.models.spec import ImageSpec

# The modules of training/sources/ that register datasets, imported on first use.
MODULES = ("mnist", "digits", "folder", "corpus")


@dataclasses.dataclass(frozen=True)
class ImageData:
    """A read image dataset: (images uint8 [N, H, W, C], labels int [N]) per split."""

    train: tuple[Any, Any]
    test: tuple[Any, Any]
    spec: ImageSpec


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    help: str  # one phrase for --dataset's help
    task: str = "images"  # or "text"
    # (data: DataConfig) -> ImageData; None for text (training/sources/text.py reads it).
    read: Callable[[Any], ImageData] | None = None
    # The spec when it does not depend on the files (MNIST's 28x28 grey, 10 classes).
    spec: ImageSpec | None = None
    # (data: DataConfig) -> the folder the dataset's files live in (its judge is kept there).
    home: Callable[[Any], Path] | None = None


_DATASETS: dict[str, tuple[str, Dataset]] = {}  # name -> (registering module, dataset)


def register(dataset: Dataset) -> Dataset:
    """Called by the module that defines the dataset, at import."""
    if dataset.name in _DATASETS and _DATASETS[dataset.name][1] != dataset:
        raise ValueError(f"two datasets are named {dataset.name!r}")
    module = sys._getframe(1).f_globals.get("__name__", "")  # the caller, for the order
    _DATASETS[dataset.name] = (module.rsplit(".", 1)[-1], dataset)
    return dataset


def datasets() -> dict[str, Dataset]:
    """Every registered dataset by name, in the order of MODULES (whichever was imported
    first), then those registered from elsewhere."""
    for module in MODULES:
        importlib.import_module(f"jaxtrain.training.sources.{module}")
    order = {module: i for i, module in enumerate(MODULES)}
    ranked = sorted(_DATASETS.items(), key=lambda kv: order.get(kv[1][0], len(order)))
    return {name: entry for name, (_, entry) in ranked}


def dataset(name: str) -> Dataset:
    known = datasets()
    if name not in known:
        raise ValueError(f"--dataset {name!r} is not a dataset jaxtrain knows: use one of "
                         f"{', '.join(known)}")
    return known[name]
