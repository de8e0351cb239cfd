"""A user's own images: a folder with one subfolder per class (torchvision's ImageFolder
layout), read through torchvision and a DataLoader, brought once to S x S pixels
(--image-size S) and cached beside the data, then served like MNIST
(training/sources/images.py).

    PATH/cat/001.png, PATH/dog/a.jpg, ...            a seeded, stratified hold-out
    PATH/train/cat/..., PATH/test/cat/...             the given split

Each image is resized so that its shorter side is S (bilinear, antialiased) and its
centre S x S is kept (torchvision's Resize(S) + CenterCrop(S)): no stretching, the
long side's edges are cut. The channels are kept: a folder whose images are all grey
(PIL modes 1, L, LA, I, F) trains on one channel, any colour image makes it RGB.

The cache (PATH/.jaxtrain-SxS.npz, or under the jaxtrain cache folder when PATH is
read-only) carries a fingerprint of the files' names, sizes and modification times,
and is read again when the folder changes.
"""

import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxtrain.training.sources.registry import Dataset, ImageData, register

DEFAULT_SIZE = 28  # --image-size's default: the MNIST family's, so old folder runs read alike
SPLIT_SEED = 0  # the hold-out is a property of the folder, not of a run's seed
CACHE_VERSION = 2  # 2: S x S, channels kept (1: 28 x 28 grey, stretched)
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _files(root: Path) -> list[Path]:
    """Every file under root except hidden ones (and so the cache), sorted."""
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(folder) / n for n in sorted(names) if not n.startswith(".")]
    return out


def fingerprint(root: Path) -> str:
    """Changes when a file under root is added, removed, renamed, resized or touched."""
    digest = hashlib.sha1(str(CACHE_VERSION).encode())
    for path in _files(root):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _load_image(path: str, size: int) -> tuple[np.ndarray, bool]:
    """(one file as uint8 [S, S, 3], whether it is grey): its shorter side resized to
    `size`, its centre kept; a file PIL cannot read is one clear error."""
    try:
        with Image.open(path) as image:
            grey = image.mode in GREY_MODES
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path} is not an image PIL can read ({type(e).__name__}): remove "
                         "it from the folder or convert it to PNG/JPEG") from None
    w, h = rgb.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    rgb = rgb.resize(new, Image.Resampling.BILINEAR).crop((left, top, left + size, top + size))
    return np.asarray(rgb, np.uint8), grey


def _class_folders(root: Path) -> list[str]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class subfolders: put each class's images in "
                         f"{root}/<class name>/ (or use {root}/train/<class>/ and "
                         f"{root}/test/<class>/)")
    return classes


def read_images(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str], bool]:
    """(images uint8 [N, S, S, 3], labels int64 [N], class names, whether every image
    is grey) of an ImageFolder layout, through torchvision's ImageFolder and a
    DataLoader."""
    import functools

    from torch.utils.data import DataLoader

    from jaxtrain.training.host.workarounds import torchvision_module

    ImageFolder = torchvision_module().datasets.ImageFolder

    classes = _class_folders(root)
    for name in classes:
        if not any(f.is_file() for f in _files(root / name)):
            raise ValueError(f"class folder {root / name} holds no images: add some or remove "
                             "the folder")
    # Every file counts (not only known extensions), so a stray file is named, not skipped.
    dataset = ImageFolder(str(root), loader=functools.partial(_load_image, size=size),
                          is_valid_file=lambda p: not Path(p).name.startswith("."))
    # num_workers=0: forking workers once JAX has started its threads is unsafe.
    loader = DataLoader(dataset, batch_size=256, num_workers=0,
                        collate_fn=lambda items: (np.stack([i for (i, _), _ in items]),
                                                  np.array([g for (_, g), _ in items]),
                                                  np.array([c for _, c in items])))
    images, grey, labels = zip(*loader)
    return (np.concatenate(images), np.concatenate(labels).astype(np.int64), dataset.classes,
            bool(np.concatenate(grey).all()))


def stratified_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: each class's images shuffled by a fixed seed, and
    round(test_fraction * n) of them (at least one where a class has two or more) held out."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(max(round(test_fraction * len(idx)), 1), len(idx) - 1) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _cache_path(root: Path, cache_dir, size: int) -> Path:
    if os.access(root, os.W_OK):
        return root / f".jaxtrain-{size}x{size}.npz"
    name = hashlib.sha1(str(root).encode()).hexdigest()[:16]
    return Path(cache_dir) / "folders" / f"{name}-{size}x{size}.npz"


def load_folder(root, test_fraction: float, cache_dir, size: int = DEFAULT_SIZE):
    """((train images, labels), (test images, labels), class names) of the folder, the
    images uint8 [N, S, S, C], from its cache when the folder has not changed since it
    was written."""
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise ValueError(f"--data-dir {root} is not a folder: pass a folder with one "
                         "subfolder of images per class")
    start = time.perf_counter()
    split = (root / "train").is_dir() and (root / "test").is_dir()
    stamp = f"{fingerprint(root)}:{test_fraction if not split else 'folders'}:{size}"
    cache = _cache_path(root, cache_dir, size)
    if cache.exists():
        with np.load(cache) as saved:
            if str(saved["stamp"]) == stamp:
                return ((saved["train_images"], saved["train_labels"]),
                        (saved["test_images"], saved["test_labels"]),
                        [str(c) for c in saved["classes"]])
    if split:
        train_images, train_labels, classes, grey = read_images(root / "train", size)
        test_images, test_labels, test_classes, test_grey = read_images(root / "test", size)
        grey = grey and test_grey
        if test_classes != classes:
            raise ValueError(f"{root}/train and {root}/test have different class folders "
                             f"({', '.join(classes)} vs {', '.join(test_classes)}): give "
                             "both the same classes")
    else:
        images, labels, classes, grey = read_images(root, size)
        train, test = stratified_split(labels, test_fraction)
        train_images, train_labels = images[train], labels[train]
        test_images, test_labels = images[test], labels[test]
    if grey:  # every image grey: its three channels are equal, keep one
        train_images, test_images = train_images[..., :1], test_images[..., :1]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".partial.npz")
    np.savez(tmp, stamp=stamp, train_images=train_images, train_labels=train_labels,
             test_images=test_images, test_labels=test_labels, classes=np.array(classes))
    tmp.replace(cache)
    print(f"read {len(train_labels) + len(test_labels)} images of {len(classes)} classes "
          f"({'grey' if grey else 'RGB'}, brought to {size}x{size}) from "
          f"{root} in {time.perf_counter() - start:.1f} s; cached in {cache}", file=sys.stderr)
    return (train_images, train_labels), (test_images, test_labels), classes


def read(data):
    """A DataConfig's folder as ImageData (training/sources/registry.py)."""
    from jaxtrain.models.spec import ImageSpec
    from jaxtrain.training.host.paths import default_data_dir

    train, test, classes = load_folder(data.data_dir, data.test_fraction, default_data_dir(),
                                       data.image_size or DEFAULT_SIZE)
    return ImageData(train, test, ImageSpec(train[0].shape[1:], classes))


register(Dataset("folder", "your images in --data-dir, one subfolder per class, brought to "
                 "--image-size", read=read, home=lambda data: Path(data.data_dir)))
