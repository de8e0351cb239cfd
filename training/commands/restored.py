"""The commands that use a saved run without training it: evaluate a checkpoint, sample.
Both read the checkpoint's EMA parameters alone; neither builds an optimizer."""

import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxtrain.models.decoding import Clock
from jaxtrain.training.commands.prepare import check_classes, with_data
from jaxtrain.training.engine.evaluate import evaluate, evaluate_iw
from jaxtrain.training.engine.run import Evaluator
from jaxtrain.training.engine.steps import sample_key
from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.rundir.grids import make_grid, save_grid
from jaxtrain.training.sources.base import open_source


def eval_checkpoint(workdir, step=None, data_dir=None, data_file=None, val_file=None,
                    iw_samples: int | None = None, samples: int | None = None) -> dict:
    """Test metrics of the EMA parameters of a checkpoint (latest by default; "best"); also
    the IW test NLL with `iw_samples` K (VAE), the judge's scores of `samples` N per class.
    A text run is scored on `val_file` if given (read alone), else on its own validation
    text. The metrics have the keys of the run's metrics.jsonl records (training/metrics.py)."""
    restored = checkpoint.restore(workdir, step, ema_only=True)
    config = with_data(restored.config, data_dir, data_file, val_file)
    params = restored.ema_params
    if samples and config.data.is_text:
        raise ValueError("--samples scores image samples; this is a text run")
    source = open_source(config, train=False)
    check_classes(config, source)
    run = Evaluator(config, restored.position["steps_per_epoch"])
    metrics = evaluate(run, params, source)
    if iw_samples:
        t = time.perf_counter()
        metrics.update(evaluate_iw(run, params, source, iw_samples))
        metrics["iw_s"] = time.perf_counter() - t
    if samples:
        from jaxtrain.training.scoring import judge, quality

        metrics.update(quality.sample_quality(run, params, source,
                                              judge.judge_of(config.data, source), samples,
                                              sample_key(config.train.seed)))
    at = restored.position["step"]
    targets = run.family.target_pixels  # image families: binary or grey
    return {**metrics, "step": at, **run.epoch_of(at), "dataset": config.data.dataset,
            "model": config.model, "test_examples": source.eval_examples,
            **({"targets": targets} if targets else {}),
            **({"val_file": config.data.val_file} if config.data.is_text else {})}


def sample(workdir, label=None, prompt=None, num: int = 64, out=None, seed: int = 0,
           step=None, length: int = 500, **options):
    """Generates from the EMA parameters of a checkpoint, the one entry for images and
    text. `label` is a class for image models (its index, its name for a folder
    dataset, or "all" for one row per class), whose PNG grid is written (its path
    returned); `prompt` a text for text models, whose continuation is returned.
    `options` (temperature, top_k, top_p) go to families that take them; a value given
    to one that does not is an error."""
    restored = checkpoint.restore(workdir, step, ema_only=True)
    config, params = restored.config, restored.ema_params
    family = config.family()
    for name, value in options.items():
        if value is not None and name not in family.sample_options:
            raise ValueError(f"--{name.replace('_', '-')} does not apply to a "
                             f"{config.model} run")
    options = {k: v for k, v in options.items() if v is not None}
    rng = jax.random.PRNGKey(seed)
    if prompt is not None:
        if not config.data.is_text:
            raise ValueError("--prompt applies to text models; this is an image model: pass "
                             "--class N")
        tokenizer = config.data.text_tokenizer()
        clock = Clock()
        tokens = family.sample(params, tokenizer.encode(prompt), rng, length, clock=clock,
                               **options)
        print(speed_line(length, clock), file=sys.stderr)
        return prompt + tokenizer.decode(tokens)
    if config.data.is_text:
        raise ValueError("--class applies to image models; this is a text model: pass "
                         "--prompt TEXT")
    num_classes, names = config.model_config.num_classes, config.data.labels
    row_names = None
    if label == "all":
        cols = -(-num // num_classes)
        labels = np.repeat(np.arange(num_classes), cols)
        row_names = names
        if cols * num_classes != num:
            print(f"--num {num} with --class all: drawing {cols} per class, one row each "
                  f"({cols * num_classes} images)", file=sys.stderr)
    else:
        index = class_index(label, num_classes, names)
        cols = int(np.ceil(np.sqrt(num)))
        labels = np.full(num, index)
    images = family.sample(params, labels, rng, **options)
    if out is None:  # named by the class as given ("T-shirt/top" makes no folder)
        out = Path(workdir) / f"sample_class_{str(label).replace('/', '-')}.png"
    out = Path(out)
    return save_grid(make_grid(images, cols, row_names=row_names), out)


def speed_line(tokens: int, clock: Clock) -> str:
    """How fast a text was sampled, its compile apart (a first sample pays it once)."""
    return (f"sampled {tokens:,} tokens in {clock.generate_s:.2f} s "
            f"({tokens / max(clock.generate_s, 1e-9):,.0f} tokens/s after a "
            f"{clock.compile_s:.1f} s compile)")


def _simple(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def class_index(label, num_classes: int, names=None) -> int:
    """The index of class `label`: a number 0..n-1, or one of the classes' names
    (case, spaces and dashes aside: sneaker, ankle-boot; t-shirt for "T-shirt/top")."""
    if names and str(label) in names:
        return names.index(str(label))
    for i, name in enumerate(names or ()):
        if _simple(str(label)) in {_simple(name), *map(_simple, name.split("/"))}:
            return i
    try:
        index = int(label)
    except ValueError:
        shown = [n for n in names or () if not n.isdigit()]
        known = f"one of {', '.join(shown)}, " if shown else ""
        raise ValueError(f"--class {label!r} is not a class of this run: use {known}"
                         f"0-{num_classes - 1} or all") from None
    if not 0 <= index < num_classes:
        raise ValueError(f"--class {label} is out of range: use 0-{num_classes - 1} or all")
    return index
