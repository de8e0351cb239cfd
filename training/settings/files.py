"""Config files and presets, and how a run's settings are resolved from layers:
field defaults < family defaults < preset < --config file < command-line flags.

The file is TOML with the sections of the JSON saved in checkpoints:

    model = "vae"                 # top level: the model family and the workdir
    workdir = "checkpoints/vae"
    [data]                        # DataConfig
    [train]                       # TrainConfig
    [model_config]                # VAEConfig or TransformerConfig, by `model`

Every key a file sets is checked: unknown keys, wrong types and values out of range
are one error naming the file, the key and the fix.
"""

import dataclasses
import sys
from importlib import resources
from pathlib import Path

import tomli_w

from jaxtrain.models.fields import SettingError, base_type, flag_name, user_fields
from jaxtrain.training.settings.config import (
    DEFAULT_MODEL,
    MODELS,
    SECTIONS,
    RunConfig,
    model_config_class,
)
from jaxtrain.training.settings.defaults import FITTED, family_layers, family_warmup

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_LEVEL = ("model", "workdir")


class ConfigError(ValueError):
    """A config file or preset that cannot be used; the message names the file and key."""


@dataclasses.dataclass
class Layer:
    """One source of settings: {"model": .., "workdir": .., section: {key: value}}."""

    source: str  # "flag", "preset NAME" or a file path
    values: dict


def presets() -> dict:
    """{name: (one-line description, path)} of the presets shipped in the package."""
    out = {}
    for entry in sorted(resources.files("jaxtrain.training.settings").joinpath("presets").iterdir(),
                        key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            first = entry.read_text().splitlines()[0]
            out[entry.name[:-5]] = (first.lstrip("# ").strip(), entry)
    return out


def read_preset(name: str) -> Layer:
    known = presets()
    if name not in known:
        raise ConfigError(f"--preset {name!r} is not a preset: choose one of "
                          f"{', '.join(known)} (`jaxtrain presets` describes them)")
    return Layer(f"preset {name}", tomllib.loads(known[name][1].read_text()))


def read_file(path) -> Layer:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist: pass a TOML file (`jaxtrain fit "
                          "--print-config > run.toml` writes one)") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as e:
        raise ConfigError(f"--config {path} cannot be read ({type(e).__name__}): pass a "
                          "readable TOML file") from None
    try:
        return Layer(str(path), tomllib.loads(text))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e}): fix the syntax") from None


def _where(layer: Layer, section, key) -> str:
    if layer.source == "flag":
        return f"--{flag_name(key)}"
    return f"{layer.source}: " + (f"[{section}] {key}" if section else key)


def _check_keys(layer: Layer, model: str) -> None:
    """Unknown sections and keys, and keys of the other model family, are errors."""
    sections = {**SECTIONS, "model_config": model_config_class(model)}
    for name, value in layer.values.items():
        if name in TOP_LEVEL:
            if not isinstance(value, str):
                raise ConfigError(f"{_where(layer, None, name)} takes a string, got {value!r}")
            continue
        if name not in sections or not isinstance(value, dict):
            what = "section" if isinstance(value, dict) else "key"
            raise ConfigError(f"{_where(layer, None, name)}: unknown {what}; "
                              f"a config has {', '.join(TOP_LEVEL)} and the sections "
                              f"[{'], ['.join(sections)}]")
        known = {f.name for f in user_fields(sections[name])}
        for key in value:
            if key in known:
                continue
            if name == "model_config":
                for other, cls in MODELS.items():
                    if other != model and key in {f.name for f in user_fields(cls)}:
                        raise ConfigError(f"{_where(layer, name, key)} is a {other} option; "
                                          f"it does not apply to model {model}")
            raise ConfigError(f"{_where(layer, name, key)}: unknown key; [{name}] takes "
                              f"{', '.join(sorted(known))}")


def _coerce(cls, key, value):
    """TOML/flag values to the field's type: ints where floats go, arrays to tuples."""
    kind = base_type({f.name: f.type for f in dataclasses.fields(cls)}[key])
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is tuple and isinstance(value, list):
        return tuple(value)
    return value


def resolve(layers: list[Layer]) -> tuple[RunConfig, str | None]:
    """The RunConfig (and workdir, None if no layer names one) from the layers, later
    layers overriding earlier ones. A bad value raises an error naming its source."""
    top = {}
    for layer in layers:
        top.update({k: layer.values[k] for k in TOP_LEVEL if k in layer.values})
    model = top.get("model", DEFAULT_MODEL)
    setters = {}  # (section, key) -> the layer that set it last
    merged = {"data": {}, "train": {}, "model_config": {}}
    dataset, network = "mnist", None
    for layer in layers:
        dataset = layer.values.get("data", {}).get("dataset", dataset)
        network = layer.values.get("model_config", {}).get("network", network)
    for defaults in family_layers(model, dataset, network):
        for section, values in defaults.items():
            merged[section].update(values)
    for layer in layers:
        _check_keys(layer, model)
        for section in merged:
            values = layer.values.get(section, {})
            # The run's length is one of epochs and steps: a layer setting one clears the
            # other from the layers below it.
            for key, other in (("epochs", "steps"), ("steps", "epochs")):
                if section == "train" and key in values and other not in values:
                    merged["train"][other] = None
            for key, value in values.items():
                merged[section][key] = value
                setters[(section, key)] = layer
    if merged["data"].get("dataset") == "folder" and ("data", "data_dir") not in setters:
        # The default is the cache of the built-in datasets, never a folder of your images.
        raise ConfigError("--dataset folder needs --data-dir PATH (a folder with one "
                          "subfolder of images per class)")
    train = merged["train"]
    if ("train", "warmup_steps") not in setters and train.get("warmup_steps") and \
            train.get("steps"):
        # A value a layer sets stays as set (TrainConfig checks it); a run in epochs has
        # its family's warmup fitted once its data is known (commands/fit.py).
        train["warmup_steps"] = family_warmup(train["warmup_steps"], train["steps"])
    classes = {**SECTIONS, "model_config": model_config_class(model)}
    try:
        built = {s: cls(**{k: _coerce(cls, k, v) for k, v in merged[s].items()})
                 for s, cls in classes.items()}
        config = RunConfig(model=model, **built)
    except SettingError as e:
        section = next((s for s in merged if (s, e.key) in setters), None)
        layer = setters.get((section, e.key))
        if layer is None or layer.source == "flag":
            raise
        raise ConfigError(f"{_where(layer, section, e.key)} = {merged[section][e.key]!r}: "
                          f"{e.message}; fix it in the file or override it with "
                          f"--{flag_name(e.key)}") from None
    except TypeError as e:  # a value of the wrong type that the dataclass could not take
        raise ConfigError(str(e)) from None
    return config, top.get("workdir")


def sets(layers: list[Layer], section: str, key: str) -> bool:
    """Whether any of the layers sets the key (else it comes from the defaults)."""
    return any(key in layer.values.get(section, {}) for layer in layers)


def given(layers: list[Layer]) -> frozenset:
    """The (section, key)s of defaults.FITTED that a layer sets: those stay as set when
    the data is known (training/settings/defaults.py:fitted); the others are fitted."""
    return frozenset(k for k in FITTED if sets(layers, *k))


def to_toml(config: RunConfig, workdir=None, unset=()) -> str:
    """The resolved config as TOML: what `--print-config` prints and each run writes as
    <workdir>/config.toml. Derived values (a text model's vocabulary) are left out: the
    run derives them again. The (section, key)s in `unset` (defaults still to be fitted to
    the data: defaults.fitted) are written as comments, so the file, run again, fits
    them as this command would."""
    out = {"model": config.model}
    if workdir is not None:
        out["workdir"] = str(workdir)
    for section, obj in (("data", config.data), ("train", config.train),
                         ("model_config", config.model_config)):
        out[section] = {f.name: getattr(obj, f.name) for f in user_fields(type(obj))
                        if getattr(obj, f.name) is not None}
    notes = []
    for section, key in unset:
        value = out[section].pop(key, None)
        if value is not None:
            how = {"warmup_steps": "at most a tenth of the run",
                   "steps_per_call": "S steps between two evaluations, else 1; the conv "
                                     "VAE's is 10 off a CPU"}.get(key, "")
            notes.append(f"# [{section}] {key} = {value!r}: the default, fitted to the data "
                         f"and device when the run starts ({how})")
    header = ("# jaxtrain run config: `jaxtrain fit --config FILE` runs it again; flags on "
              "the command line override it.\n")
    return header + "".join(n + "\n" for n in notes) + tomli_w.dumps(out)
