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
from jaxtrain.training.settings.config import MODELS, SECTIONS
from jaxtrain.training.settings.defaults import FAMILY_DEFAULTS

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


# The help's panels (cli/app.py:PANELS): a data or model setting goes in its section's; a
# training setting in TRAIN_PANELS' panel, or Optimisation.
SECTION_PANELS = {"data": "Data", "model_config": "Model"}
TRAIN_PANELS = {"eval_every": "Evaluation", "keep": "Evaluation", "patience": "Evaluation",
                "final_eval": "Evaluation", "init_from": "Fine-tuning",
                "init_step": "Fine-tuning", "freeze": "Fine-tuning", "log_every": "Output",
                **{name: "Output" for name in ("wandb", "wandb_project", "wandb_name",
                                               "wandb_group", "wandb_tags", "wandb_mode")}}


def on_off(value: bool) -> str:
    """How the help shows a boolean's default, everywhere: '[default: on]'."""
    return f"[default: {'on' if value else 'off'}]"


def _default_text(section: str, f) -> str:
    """'[default: 10]', '[default: vae 128, transformer 32]', '[default: one epoch; text
    250]': the field's default (or its `shown` words) once, then the families' own."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(default, bool):
        return on_off(default)
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    if default is None:
        default = f.metadata.get("shown")
    overrides = {family: values[section][f.name] for family, values in FAMILY_DEFAULTS.items()
                 if values.get(section, {}).get(f.name) is not None}
    shown = ", ".join(f"{family} {value}" for family, value in overrides.items())
    if overrides and all(m in overrides for m in MODELS):
        return f"[default: {shown}]"
    parts = [str(default)] if default is not None else []
    return f"[default: {'; '.join(parts + ([shown] if shown else []))}]" if parts or shown \
        else ""


def choices_metavar(choices) -> str:
    """'[vae|transformer]': the choices where the help shows an option's value."""
    return f"[{'|'.join(choices)}]"


def config_parameters() -> list[inspect.Parameter]:
    """Typer parameters for every user setting (keyword-only, default None)."""
    params = []
    for name, (section, f) in config_fields().items():
        kind = base_type(f.type)
        bounds = describe_bounds(f)
        help_text = " ".join(filter(None, [
            f.metadata["help"], f"Must be {bounds}." if bounds else "",
            _default_text(section, f)]))
        decls = [f"--{flag_name(name)}/--no-{flag_name(name)}"] if kind is bool \
            else [f"--{flag_name(name)}"]
        choices = f.metadata.get("choices")
        panel = SECTION_PANELS.get(section) or TRAIN_PANELS.get(name, "Optimisation")
        params.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[_TYPES[kind]],
            default=typer.Option(None, *decls, help=help_text, show_default=False,
                                 metavar=choices_metavar(choices) if choices else None,
                                 rich_help_panel=panel)))
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
