"""scikit-learn's digits: 1,797 handwritten digits of 8x8 pixels with 17 grey levels
(0-16), the UCI optical-digits test set, bundled with scikit-learn (no download).
Stored as 0-255 like every image source; a fixed, seeded 10% of each class tests
(--test-fraction), as a folder without train/ and test/ does.

Needs scikit-learn (`pip install 'jaxtrain[digits]'`; `make install` takes it).
"""

from pathlib import Path

import numpy as np

from jaxtrain.models.spec import ImageSpec
from jaxtrain.training.sources.registry import Dataset, ImageData, register

SHAPE = (8, 8, 1)
LEVELS = 17
CLASSES = tuple("0123456789")


def read(data) -> ImageData:
    """The digits as ImageData, split by data.test_fraction."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError("--dataset digits needs scikit-learn, which is not installed: pip "
                         "install 'jaxtrain[digits]' (or scikit-learn)") from None
    from jaxtrain.training.sources.folder import stratified_split

    bunch = load_digits()
    levels = np.asarray(bunch.images)  # float [N, 8, 8] in 0-16
    images = np.round(levels * (255 / (LEVELS - 1))).astype(np.uint8)[..., None]
    labels = np.asarray(bunch.target, np.int64)
    train, test = stratified_split(labels, data.test_fraction)
    return ImageData((images[train], labels[train]), (images[test], labels[test]),
                     ImageSpec(SHAPE, CLASSES, LEVELS))


def home(data) -> Path:
    """Where the judge of the digits is kept: the jaxtrain data folder's digits/."""
    return Path(data.data_dir) / "digits"


register(Dataset("digits", "scikit-learn's 1,797 8x8 digits (offline, needs scikit-learn)",
                 read=read, spec=ImageSpec(SHAPE, CLASSES, LEVELS), home=home))
