"""The `fit` options generated from the config dataclasses: one flag per user setting,
its help and default read from the field (training/settings/config.py), so a default lives in
one place. Every flag defaults to None, meaning "not given": the value then comes from
a lower layer (the --config file, a --preset, the family defaults, the field).
"""

import dataclasses
import inspect
from pathlib import Path
from typing import Optional

import typer

from jaxtrain.models.fields import (
    base_type,
    describe_bounds,
    flag_name,
    item_type,
    user_fields,
)
from jaxtrain.training.settings.config import FAMILY_DEFAULTS, MODELS, SECTIONS

_TYPES = {int: int, float: float, str: str, bool: bool, tuple: str}


def config_fields() -> dict:
    """{field name: (section, field)} of every user setting, model configs included."""
    out = {}
    classes = [*SECTIONS.items(), *(("model_config", cls) for cls in MODELS.values())]
    for section, cls in classes:
        for f in user_fields(cls):
            assert f.name not in out, f"two settings named {f.name}"
            out[f.name] = (section, f)
    return out


def _default_text(section: str, f) -> str:
    """'[default: 10]', '[default: vae 128, transformer 32]', '[default: 0.1; text 256]'."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    elif isinstance(default, bool):
        default = str(default).lower()
    overrides = {family: values[section][f.name] for family, values in FAMILY_DEFAULTS.items()
                 if values.get(section, {}).get(f.name) is not None}
    shown = ", ".join(f"{family} {value}" for family, value in overrides.items())
    if overrides and all(m in overrides for m in MODELS):
        return f"[default: {shown}]"
    parts = [str(default)] if default is not None else []
    return f"[default: {'; '.join(parts + ([shown] if shown else []))}]" if parts or shown \
        else ""


def config_parameters() -> list[inspect.Parameter]:
    """Typer parameters for every user setting (keyword-only, default None)."""
    params = []
    for name, (section, f) in config_fields().items():
        kind = base_type(f.type)
        bounds = describe_bounds(f)
        help_text = " ".join(filter(None, [
            f.metadata["help"],
            f"One of: {', '.join(f.metadata['choices'])}." if f.metadata.get("choices") else "",
            f"Must be {bounds}." if bounds else "", _default_text(section, f)]))
        decls = [f"--{flag_name(name)}/--no-{flag_name(name)}"] if kind is bool \
            else [f"--{flag_name(name)}"]
        params.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[_TYPES[kind]],
            default=typer.Option(None, *decls, help=help_text, show_default=False,
                                 rich_help_panel=section)))
    return params


def parse_flags(values: dict) -> dict:
    """The given (non-None) config flags as a layer: {"model_config": {...}, ...}. Widths
    are parsed from "512,256"; paths made absolute against the current folder."""
    fields = config_fields()
    layer = {}
    for name, value in values.items():
        if value is None or name not in fields:
            continue
        section, f = fields[name]
        if base_type(f.type) is tuple and item_type(f.type) is str:
            value = tuple(w.strip() for w in value.split(",") if w.strip())
        elif base_type(f.type) is tuple:
            try:
                value = tuple(int(w) for w in value.split(","))
            except ValueError:
                raise ValueError(f"--{flag_name(name)} takes comma-separated integers like "
                                 f"512,256, got {value!r}") from None
        if name.endswith(("_dir", "_file", "_from")):
            value = str(Path(value).expanduser().absolute())
        layer.setdefault(section, {})[name] = value
    return layer


def with_signature(fn, extra: list[inspect.Parameter]):
    """`fn(**options)` with a signature Typer reads: its own options then the settings."""
    params = extra + config_parameters()
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {p.name: p.annotation for p in params}
    return fn
