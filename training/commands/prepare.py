"""A new run's config completed before it trains: from its data (a text's tokenizer, an
image folder's classes) and, for fine-tuning (--init-from), from the run it starts
from, whose architecture it must share. `fit --list-params` is answered from here,
and a command's data location and overrides (`with_data`) are applied here.
"""

import dataclasses
from pathlib import Path

import jax
import numpy as np

from jaxtrain.models.configs import PATCH_SYMBOLS
from jaxtrain.models.fields import flag_name
from jaxtrain.models.spec import ImageSpec
from jaxtrain.models.transformer import layer_paths, relayout
from jaxtrain.training.engine.steps import (
    param_path,
    param_shapes,
    partly_frozen,
    trainable_mask,
)
from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.settings.config import DEFAULT_BPE_VOCAB, RunConfig
from jaxtrain.training.settings.defaults import fitted
from jaxtrain.training.sources.base import open_source
from jaxtrain.training.sources.registry import datasets
from jaxtrain.training.sources.token_cache import char_vocab, trained_bpe
from jaxtrain.training.sources.tokenizer import read_tokenizer_file


def with_tokenizer(config: RunConfig, source=None) -> RunConfig:
    """A text config with its tokenizer made (--tokenizer: the corpus's characters, a BPE
    trained on its training text, or a tokenizers file), or taken from `source`, the
    DataConfig of the run a fine-tuned run starts from (whose characters must cover the
    new text's)."""
    data = config.data
    if not data.is_text or data.vocab is not None or data.tokenizer_json is not None:
        return config
    if source is not None and source.vocab is not None:
        chars = char_vocab(data.data_file, data.val_file)
        unknown = "".join(sorted(set(chars) - set(source.vocab)))
        if unknown:
            raise ValueError(f"{data.data_file} has {len(unknown)} characters the run in "
                             f"{config.train.init_from} never saw ({unknown[:20]!r}): "
                             "fine-tuning keeps its vocabulary; remove them from the text")
    if source is not None and (data.tokenizer != "char" or data.vocab_size is not None):
        asked = data.tokenizer if data.tokenizer in ("char", "bpe") else \
            str(Path(data.tokenizer).absolute())
        if (asked, data.vocab_size) != (source.tokenizer, source.vocab_size):
            raise ValueError(f"--tokenizer {data.tokenizer}: the run in "
                             f"{config.train.init_from} uses {source.tokenizer}; fine-tuning "
                             "keeps its tokenizer (leave --tokenizer and --vocab-size out)")
    if source is not None:
        data = dataclasses.replace(data, tokenizer=source.tokenizer, vocab=source.vocab,
                                   vocab_size=source.vocab_size,
                                   tokenizer_json=source.tokenizer_json)
    elif data.tokenizer == "char":
        data = dataclasses.replace(data, vocab=char_vocab(data.data_file, data.val_file))
    elif data.tokenizer == "bpe":
        data = dataclasses.replace(data, tokenizer_json=trained_bpe(
            data.data_file, data.vocab_size or DEFAULT_BPE_VOCAB, data.val_file))
    else:
        data = dataclasses.replace(data, tokenizer=str(Path(data.tokenizer).absolute()),
                                   tokenizer_json=read_tokenizer_file(data.tokenizer))
    n = data.text_tokenizer().vocab_size
    return dataclasses.replace(config, data=data,
                               model_config=config.model_config.replace(vocab_size=n,
                                                                        output_size=n))


# The model settings a run's data sizes, in the words an error shows them with.
DERIVED = {"num_classes": "{} classes", "vocab_size": "{} input symbols",
           "output_size": "{} output symbols", "image_shape": "images of shape {}",
           "context": "{} patches an image"}


def check_same_architecture(config: RunConfig, source: RunConfig, where) -> None:
    """One line naming the first setting in which `config` builds other parameters than
    the run `source` (in workdir `where`)."""
    keep = "fine-tuning keeps the architecture of the run it starts from"
    if config.model != source.model:
        raise ValueError(f"--model {config.model}: the run in {where} is a {source.model}; "
                         f"{keep} (leave --model out)")
    if config.data.is_text != source.data.is_text:
        task = "text" if source.data.is_text else "image"
        raise ValueError(f"--dataset {config.data.dataset}: the run in {where} is a {task} "
                         f"model ({keep})" + (": pass --dataset text --data-file FILE"
                                              if source.data.is_text else ""))
    new, old = config.model_config, source.model_config
    for f in dataclasses.fields(new):
        a, b = getattr(new, f.name), getattr(old, f.name)
        if f.name in type(new).NOT_ARCHITECTURE or a == b:
            continue
        shown = ",".join(map(str, a)) if isinstance(a, tuple) else a
        was = ",".join(map(str, b)) if isinstance(b, tuple) else b
        if f.metadata.get("cli"):
            flag = flag_name(f.name)
            raise ValueError(f"--{flag} {shown}: the run in {where} has {was}; {keep} (leave "
                             f"--{flag} out)")
        what = DERIVED.get(f.name, f.name + " {}")
        raise ValueError(f"the data has {what.format(shown)}, but the run in {where} has "
                         f"{what.format(was)}: {keep}; train on data of the same shape")


def with_spec(config: RunConfig, spec: ImageSpec | None) -> RunConfig:
    """An image run's config sized by its data's spec (models/spec.py): the classes (their
    names saved with the run), the image shape and, for the Transformer, its class tokens
    and context (the images' 2x2 patches). Text configs come back unchanged."""
    if spec is None:
        return config
    from jaxtrain.models.pixel_lm import num_patches

    c, n = config.model_config, spec.num_classes
    changes = {"num_classes": n, "image_shape": spec.shape}
    if config.model == "transformer":
        changes.update(vocab_size=PATCH_SYMBOLS + n, context=c.context or num_patches(spec.shape))
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, class_names=spec.classes),
        model_config=dataclasses.replace(c, **changes))


def with_layout(config: RunConfig) -> RunConfig:
    """A Transformer whose --freeze stops partway through its blocks (`Block_0` of four)
    trains them unrolled (Block_0, Block_1, ...; scan_layers False, saved with the run):
    a frozen layer is then whole leaves, which optax.multi_transform leaves out and whose
    weight gradients XLA drops. In the scan every layer computes them."""
    c = config.model_config
    if (config.model != "transformer" or not config.train.freeze or not c.scan_layers
            or not partly_frozen(param_shapes(config.family()), config.train.freeze)):
        return config
    return dataclasses.replace(config, model_config=c.replace(scan_layers=False))


def prepare(config: RunConfig, given=frozenset(), open_data: bool = True):
    """A new run's final config, the one function that completes it: from its data (a
    text's vocabulary; the images' spec: classes, shape, a Transformer's context), from
    the run it fine-tunes (--init-from), and, once the data gives its steps per epoch,
    the family defaults no layer set (`given`) fitted to it (settings/defaults.py).
    Returns (config, the (params, ema_params) to start from or None, the data source).
    With open_data False, the data is read only where it sizes the model (a folder's
    classes and shape), the source returned may be None and nothing is fitted."""
    restored = None
    if config.train.init_from:
        step = config.train.init_step
        step = step if step in (None, "best") else int(step)
        try:
            restored = checkpoint.restore(config.train.init_from, step)
        except ValueError as e:
            raise ValueError(f"--init-from: {e}") from None
    config = with_tokenizer(config, restored and restored.config.data)
    spec = None if config.data.is_text else datasets()[config.data.dataset].spec
    source = open_source(config) if open_data or (spec is None and not config.data.is_text) \
        else None
    config = with_spec(config, getattr(source, "spec", spec))
    config = with_layout(config)
    if source is not None:
        config = fitted(config, given, source.steps_per_epoch, jax.default_backend())
    if restored is None:
        return config, None, source
    where = Path(config.train.init_from).absolute()
    check_same_architecture(config, restored.config, where)
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, init_from=str(where), init_step=str(restored.step)))
    start = (restored.state.params, restored.state.ema_params)
    if config.model == "transformer":  # blocks saved in the other layout: move them
        start = tuple(relayout(p, config.model_config.scan_layers) for p in start)
    return config, start, source


def list_params(config: RunConfig) -> str:
    """A table of the parameter paths, shapes and sizes, frozen or trained (--list-params)."""
    config = prepare(config, open_data=False)[0]
    shapes = param_shapes(config.family())
    trainable = (trainable_mask(shapes, config.train.freeze) if config.train.freeze
                 else jax.tree.map(lambda _: True, shapes))
    rows = []  # a stacked leaf (scanned layers) gives one row per layer, as unrolled
    for (path, s), t in zip(jax.tree_util.tree_flatten_with_path(shapes)[0],
                            jax.tree.leaves(trainable)):
        layers = layer_paths(param_path(path), s)
        names, shape = (layers, s.shape[1:]) if layers else ([param_path(path)], s.shape)
        rows += [(name, shape, int(np.prod(shape)), t) for name in names]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'parameter':<{width}}  {'shape':<14} {'size':>10}  state"]
    lines += [f"{p:<{width}}  {str(tuple(s)):<14} {n:>10,}  {'trained' if t else 'frozen'}"
              for p, s, n, t in rows]
    total = sum(r[2] for r in rows)
    frozen = sum(r[2] for r in rows if not r[3])
    lines.append(f"{total:,} parameters: {total - frozen:,} trained, {frozen:,} frozen")
    return "\n".join(lines)


def check_classes(config: RunConfig, source) -> None:
    """A run's data must still have the classes and the image shape it was trained on
    (a folder may have changed since)."""
    spec = getattr(source, "spec", None)
    if spec is None:
        return
    if spec.classes != tuple(config.data.labels or ()):
        raise ValueError(f"the classes in {config.data.data_dir} ({', '.join(spec.classes)}) are "
                         f"not the ones the run was trained on "
                         f"({', '.join(config.data.labels or ())}): point --data-dir at "
                         "that folder")
    if spec.shape != tuple(config.model_config.image_shape):
        raise ValueError(f"the images in {config.data.data_dir} are {spec.describe()}, but the "
                         f"run was trained on images of shape "
                         f"{tuple(config.model_config.image_shape)}: point --data-dir at that "
                         "data")


def with_data(config: RunConfig, data_dir=None, data_file=None, val_file=None,
              **train) -> RunConfig:
    """The config with the data location and training overrides of a command."""
    data_changes = {k: str(v) for k, v in (("data_dir", data_dir), ("data_file", data_file),
                                           ("val_file", val_file)) if v is not None}
    for flag, value in (("--data-file", data_file), ("--val-file", val_file)):
        if value is not None and not config.data.is_text:
            raise ValueError(f"{flag} applies to text runs only")
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **data_changes),
                               train=dataclasses.replace(config.train, **train))


def check_val_file(config: RunConfig, val_file, workdir) -> None:
    """`resume --val-file F`: a run keeps its validation text, so that its test losses
    and its best checkpoint compare (and, validated by the last 10% of each file, its
    training text is the other 90%). F may name the run's own file, or say where it is
    now if it is gone from its saved path; anything else is one line."""
    saved = config.data.val_file
    if val_file is None or not config.data.is_text or (saved is not None and (
            Path(saved).resolve() == Path(val_file).resolve() or not Path(saved).exists())):
        return
    now = (f"validates on {saved}" if saved is not None else
           "validates on the last 10% of each --data-file file (and trains on the rest)")
    raise ValueError(f"--val-file {val_file}: the run in {workdir} {now}; a resumed run keeps "
                     "its validation text, so that its test losses and best checkpoint "
                     f"compare: leave --val-file out (`jaxtrain eval --val-file {val_file}` "
                     "evaluates the run on that text)")
