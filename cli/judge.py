"""`jaxtrain judge`: the dataset's classifier that scores samples (training/scoring/judge.py)."""

from pathlib import Path
from typing import Optional

import typer

from jaxtrain.cli.app import app, start_jax
from jaxtrain.cli.options import config_fields
from jaxtrain.training.settings.config import DataConfig
from jaxtrain.training.sources.registry import datasets

IMAGE_SIZE = config_fields()["image_size"][1]
# The image datasets that keep a judge beside their files (training/sources/registry.py).
JUDGED = tuple(name for name, d in datasets().items() if d.task == "images" and d.home)


@app.command()
def judge(
    dataset: str = typer.Option("mnist", help=f"{', '.join(JUDGED)} (folder: your images in "
                                              "--data-dir, one subfolder per class)."),
    data_dir: Optional[Path] = typer.Option(
        None, help="Folder holding MNIST/raw/ or FashionMNIST/raw/; folder: the images' "
                   "folder [default: the jaxtrain cache folder]."),
    test_fraction: float = typer.Option(
        0.1, help="folder: share of each class held out for testing, as in `fit`."),
    image_size: Optional[int] = typer.Option(
        None, help=f"{IMAGE_SIZE.metadata['help']} As in `fit`; a judge scores the runs "
                   f"of its size. [default: {IMAGE_SIZE.metadata['shown']}]",
        show_default=False),
    download: bool = typer.Option(True, help="Download the data if it is missing."),
    retrain: bool = typer.Option(False, help="Train a new judge even if one of this data "
                                             "is kept."),
    steps: Optional[int] = typer.Option(
        None, min=1, help="Training steps of a new judge, rounded up to whole epochs "
                          "[default: 6 epochs and at least 1,000 steps]. A kept judge is "
                          "reused whatever its steps: add --retrain.", show_default=False),
):
    """Train (once) the small CNN that scores samples for `eval --samples`, and print its
    test accuracy. It is kept beside the data and reused until the data changes."""
    if dataset not in JUDGED:
        raise ValueError(f"--dataset {dataset!r} has no judge: pass one of {', '.join(JUDGED)}")
    if dataset == "folder" and data_dir is None:
        raise ValueError("--dataset folder needs --data-dir PATH (a folder with one "
                         "subfolder of images per class)")
    extra = {"data_dir": str(data_dir.expanduser().absolute())} if data_dir else {}
    data = DataConfig(dataset=dataset, download=download, test_fraction=test_fraction,
                      image_size=image_size, **extra)
    start_jax(devices_env=False)
    from jaxtrain.training.scoring.judge import open_judge

    judged, source = open_judge(data, retrain, steps)
    how = (f"trained in {judged.trained_s:.0f} s" if judged.trained_s is not None
           else "trained earlier, on this same data")
    print(f"judge of {dataset} ({len(source.train)} training images, "
          f"{judged.model.num_classes} classes), {how}: test accuracy "
          f"{100 * judged.accuracy:.2f}% on the {len(source.test)} test images "
          f"({100 * judged.accuracy_binary:.2f}% on their binarization); kept in {judged.path}")
