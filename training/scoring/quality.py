"""How good a run's samples are, in the eyes of the dataset's judge (training/scoring/judge.py):
whether a sample of class c looks like a c (class accuracy), and how far the samples'
feature distribution is from the test images' (a Frechet distance in the judge's
features, the MNIST analogue of FID), beside the same distance for as many training
images, the floor a perfect generator would reach with this many samples.
"""

import time

import jax
import numpy as np

from jaxtrain.models.binarize import dynamic_bits, test_bits
from jaxtrain.models.family import example_keys
from jaxtrain.models.judge import class_accuracy, frechet_distance

SAMPLE_BATCH = 500  # samples drawn per call (a Transformer's KV cache grows with it)
# The keys sample_quality adds to a result (eval's JSON, a run's last record).
KEYS = ("test_class_accuracy", "test_frechet", "test_frechet_floor", "judge_accuracy",
        "class_accuracy_per_class", "samples_per_class", "sample_pixels", "quality_s",
        "class_names")


def draw(family, params, num_classes: int, per_class: int, key) -> tuple[np.ndarray, np.ndarray]:
    """(images [C * N, H, W, Ch], the classes asked for [C * N]): N samples of every class
    from the family's own sampler, class c from fold_in(key, c)."""
    images, asked = [], []
    for c in range(num_classes):
        class_key = jax.random.fold_in(key, c)
        for start in range(0, per_class, SAMPLE_BATCH):
            n = min(SAMPLE_BATCH, per_class - start)
            images.append(family.sample(params, np.full(n, c), jax.random.fold_in(class_key,
                                                                                  start)))
            asked.append(np.full(n, c))
    return np.concatenate(images), np.concatenate(asked)


def pixels(images_uint8: np.ndarray, binary: bool, key=None) -> np.ndarray:
    """uint8 [N, H, W, C] images as the samples are: grey levels in [0, 1], or binary (the
    test set's fixed binarization when `key` is None, else one draw from `key`)."""
    if not binary:
        return images_uint8 / 255.0
    index = np.arange(len(images_uint8))
    bits = (test_bits(images_uint8, index) if key is None
            else dynamic_bits(example_keys(key, index), images_uint8))
    return np.asarray(bits)


def floor_index(labels: np.ndarray, per_class: int, num_classes: int) -> np.ndarray:
    """The indices [<= C * N], in order, of N examples of each class of `labels` (seeded;
    all of a class with fewer)."""
    rng = np.random.default_rng(0)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class]
              for c in range(num_classes)]
    return np.sort(np.concatenate(chosen))


def floor_images(dataset, per_class: int, num_classes: int) -> np.ndarray:
    """uint8 [<= C * N, H, W, Ch]: N training images of each class (floor_index), the
    stand-in for a perfect generator's samples."""
    return dataset.images[floor_index(dataset.labels, per_class, num_classes)]


def sample_quality(run, params, source, judge, per_class: int, key) -> dict:
    """Class accuracy and Frechet distance of `per_class` samples per class drawn from
    `params` with the fixed `key` (engine/steps.py:sample_key), against `source`'s test
    images; see the module docstring. Keys as metrics.jsonl takes them."""
    start = time.perf_counter()
    family, num_classes = run.family, run.config.model_config.num_classes
    binary = family.sample_pixels == "binary"
    samples, asked = draw(family, params, num_classes, per_class, key)
    predicted, sample_features = judge.classify(samples)
    per = class_accuracy(predicted, asked, num_classes)
    test_predicted, test_features = judge.classify(pixels(source.test.images, binary))
    _, floor_features = judge.classify(pixels(
        floor_images(source.train, per_class, num_classes), binary, jax.random.PRNGKey(1)))
    return {"test_class_accuracy": float(per.mean()),
            "test_frechet": frechet_distance(sample_features, test_features),
            "test_frechet_floor": frechet_distance(floor_features, test_features),
            "judge_accuracy": float(np.mean(test_predicted == source.test.labels)),
            "class_accuracy_per_class": [float(a) for a in per],
            "samples_per_class": per_class, "sample_pixels": "binary" if binary else "grey",
            "quality_s": time.perf_counter() - start,
            **({"class_names": list(names)} if (names := run.config.data.labels) else {})}


def describe_quality(m: dict) -> str:
    """One line for the console."""
    worst = int(np.argmin(m["class_accuracy_per_class"]))
    name = m["class_names"][worst] if m.get("class_names") else worst
    return (f"samples ({m['samples_per_class']} per class, {m['sample_pixels']} pixels): "
            f"class accuracy {100 * m['test_class_accuracy']:.1f}% (lowest: class {name}, "
            f"{100 * m['class_accuracy_per_class'][worst]:.1f}%; the judge's own test "
            f"accuracy {100 * m['judge_accuracy']:.1f}%), Frechet distance "
            f"{m['test_frechet']:.2f} (training images: {m['test_frechet_floor']:.2f}) "
            f"in {m['quality_s']:.1f} s")
