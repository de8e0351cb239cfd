"""The judge of a dataset (models/judge.py): trained once on the dataset's training
images, kept beside the data, and reused until the data changes.

It is trained on grey-level images and, for a quarter of each batch, on a fresh
binarization of them, so that it reads both kinds of samples: the VAE's (grey Bernoulli
means) and the digits Transformer's (binary pixels). Its test accuracy is reported on
both kinds of test images.

    mnist, fashion-mnist:  <data-dir>/MNIST/jaxtrain-judge.msgpack (FashionMNIST/...)
    folder:                <folder>/.jaxtrain-judge.msgpack
    digits:                <data-dir>/digits/jaxtrain-judge.msgpack
    (the dataset's home folder, training/sources/registry.py; when it is read-only,
    under the jaxtrain cache folder, judges/)
"""

import dataclasses
import hashlib
import os
import sys
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from jaxtrain.models.binarize import dynamic_bits
from jaxtrain.models.family import example_keys
from jaxtrain.models.judge import Judge, apply_in_batches
from jaxtrain.training.scoring.quality import pixels

VERSION = 1  # of the network and its training: a judge of another version is retrained
EPOCHS = 6  # Fashion-MNIST: 91.2% test accuracy in 93 s on 2 cores (4: 89.9%)
MIN_STEPS = 1000  # a small folder trains for more epochs
BATCH_SIZE = 128
LR = 2e-3
SEED = 0
BINARY_SHARE = 0.25  # of each batch shown binarized (0.5 cost Fashion 0.3% of accuracy)


@dataclasses.dataclass
class TrainedJudge:
    model: Judge
    params: dict
    accuracy: float  # on the grey-level test images
    accuracy_binary: float  # on the fixed binarization of the test images
    path: Path
    trained_s: float | None = None  # None when it was read from `path`

    def classify(self, images: np.ndarray):
        """(predicted classes [N], features [N, F]) of images [N, H, W, C] in [0, 1]."""
        return apply_in_batches(self.model, self.params, images)


def judge_path(data, cache_dir) -> Path:
    """Where the judge of this data (a DataConfig) lives: in its dataset's home folder
    (training/sources/registry.py), or in the cache folder when that is read-only."""
    from jaxtrain.training.sources.registry import dataset

    folder = Path(dataset(data.dataset).home(data))
    name = ".jaxtrain-judge.msgpack" if data.dataset == "folder" else "jaxtrain-judge.msgpack"
    if os.access(folder, os.W_OK) or (not folder.exists() and os.access(folder.parent, os.W_OK)):
        return folder / name
    digest = hashlib.sha1(str(folder.absolute()).encode()).hexdigest()[:16]
    return Path(cache_dir) / "judges" / f"{digest}.msgpack"


def judge_of(data, source, retrain: bool = False, report: bool = True,
             steps: int | None = None) -> TrainedJudge:
    """The judge of a run's data (a DataConfig) whose batches `source` serves; `report`
    says a new judge's accuracy on stderr (`jaxtrain judge` prints its own line). A new
    judge trains `steps` steps (rounded up to whole epochs), by default EPOCHS epochs of
    at least MIN_STEPS steps."""
    from jaxtrain.training.host.paths import default_data_dir

    if data.is_text:
        raise ValueError("the judge scores image samples; this is a text run")
    path = judge_path(data, default_data_dir())
    length = {} if steps is None else {"epochs": 1, "min_steps": steps}
    return load_or_train(source, path, len(data.labels), retrain, report=report, **length)


def open_judge(data, retrain: bool = False, steps: int | None = None):
    """`jaxtrain judge`: (the judge of `data`, a DataConfig, read or trained now for
    `steps` steps or the default; its ImageSource)."""
    from jaxtrain.training.sources.images import ImageSource

    # (The source's own batch size is unused: train() batches the arrays itself.)
    source = ImageSource(data, 1, SEED)
    return judge_of(dataclasses.replace(data, class_names=source.spec.classes), source,
                    retrain, report=False, steps=steps), source


def fingerprint(train, test) -> str:
    """Changes when any image or label of either split changes (sha1 of their bytes)."""
    digest = hashlib.sha1(f"judge {VERSION}".encode())
    for dataset in (train, test):
        digest.update(np.ascontiguousarray(dataset.images).tobytes())
        digest.update(np.ascontiguousarray(dataset.labels).tobytes())
    return digest.hexdigest()


def load_or_train(source, path: Path, num_classes: int, retrain: bool = False,
                  epochs: int = EPOCHS, min_steps: int = MIN_STEPS,
                  report: bool = True) -> TrainedJudge:
    """The judge of `source`'s data (an ImageSource): read from `path` when it was
    trained on exactly this data, else trained now (and saved there)."""
    stamp = fingerprint(source.train, source.test)
    model = Judge(num_classes)
    if path.exists() and not retrain:
        try:
            saved = flax.serialization.msgpack_restore(path.read_bytes())
            meta, params = saved["meta"], saved["params"]
            current = meta["stamp"] == stamp and int(meta["num_classes"]) == num_classes
        except Exception as e:  # a damaged file: say so and train a new one
            print(f"warning: the judge in {path} does not read ({type(e).__name__}); "
                  "training a new one", file=sys.stderr)
        else:
            if current:
                return TrainedJudge(model, params, float(meta["accuracy"]),
                                    float(meta["accuracy_binary"]), path)
            print(f"the data changed since the judge in {path} was trained: training a new "
                  "one", file=sys.stderr)
    elif not retrain:
        print(f"no judge of this data yet: training one ({len(source.train)} images; about "
              "1.5 min for Fashion-MNIST on 2 CPU cores)", file=sys.stderr)
    start = time.perf_counter()
    params = train(model, source.train, epochs, min_steps)
    judged = TrainedJudge(model, params, 0.0, 0.0, path, time.perf_counter() - start)
    judged.accuracy, judged.accuracy_binary = (
        float(np.mean(judged.classify(pixels(source.test.images, binary))[0]
                      == source.test.labels)) for binary in (False, True))
    meta = {"stamp": stamp, "num_classes": num_classes, "accuracy": judged.accuracy,
            "accuracy_binary": judged.accuracy_binary, "version": VERSION}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")  # two writers: last one wins
    tmp.write_bytes(flax.serialization.msgpack_serialize(
        {"params": jax.device_get(params), "meta": meta}))
    tmp.replace(path)  # a reader never sees half a file
    if report:
        print(f"trained the judge in {judged.trained_s:.0f} s: test accuracy "
              f"{100 * judged.accuracy:.2f}% (binarized test images "
              f"{100 * judged.accuracy_binary:.2f}%); kept in {path}", file=sys.stderr)
    return judged


def train(model: Judge, dataset, epochs: int, min_steps: int = 0):
    """The judge's parameters after `epochs` epochs (or more, to make `min_steps` steps)
    of AdamW on `dataset` (an ArrayDataset), batches from the trainer's DataLoader
    (training/sources/images.py)."""
    from jaxtrain.training.sources.images import steps_per_epoch, train_loader

    batch_size = min(BATCH_SIZE, len(dataset))
    per_epoch = steps_per_epoch(dataset, batch_size)
    epochs = max(epochs, -(-min_steps // per_epoch))
    steps = epochs * per_epoch
    rng = jax.random.PRNGKey(SEED)
    # Jitted: one program, not one compile per operation (the same bits as eager).
    params = jax.jit(model.init)(rng, jnp.zeros((1, *dataset.images.shape[1:])))["params"]
    warmup = min(100, steps // 10)
    schedule = optax.warmup_cosine_decay_schedule(LR / 100, LR, warmup, steps)
    state = TrainState.create(apply_fn=model.apply, params=params,
                              tx=optax.adamw(schedule, weight_decay=1e-4))

    @jax.jit
    def step(state, images, labels, index):
        key = jax.random.fold_in(rng, state.step)
        grey = images / 255.0  # [B, H, W, C]
        bits = dynamic_bits(example_keys(key, index), images)
        binary = jax.random.bernoulli(jax.random.fold_in(key, 1), BINARY_SHARE,
                                       labels.shape)  # [B]
        x = jnp.where(binary[:, None, None, None], bits, grey)

        def loss_fn(params):
            logits, _ = state.apply_fn({"params": params}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    said = time.perf_counter()
    for epoch in range(epochs):
        losses = []
        for batch in train_loader(dataset, batch_size, SEED, epoch):
            state, loss = step(state, batch["image"], batch["label"], batch["index"])
            losses.append(loss)
        if epoch + 1 == epochs or time.perf_counter() - said > 10:  # a line every 10 s
            said = time.perf_counter()
            print(f"judge epoch {epoch + 1}/{epochs}: train loss "
                  f"{float(jnp.mean(jnp.stack(losses))):.4f}", file=sys.stderr, flush=True)
    return state.params
