"""Settings declared once: a dataclass field carries its default, its help text and
its bounds; validation, the command line and the config files all read them from there.

No heavy imports: the CLI builds its options from these fields before JAX loads.
"""

import dataclasses
import math
import types
import typing

BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_COMPARE = {"ge": lambda v, b: v >= b, "gt": lambda v, b: v > b,
            "le": lambda v, b: v <= b, "lt": lambda v, b: v < b}


class SettingError(ValueError):
    """A setting with a bad value. `key` is the field's name; the CLI adds where the value
    came from (a flag, a config file's key, a preset)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"--{flag_name(key)} {message}")
        self.key, self.message = key, message


def flag_name(key: str) -> str:
    return key.replace("_", "-")


def setting(default=dataclasses.MISSING, help: str = "", *, factory=None, cli: bool = True,
            ge=None, gt=None, lt=None, le=None, choices=None, shown=None):
    """A dataclass field with what the CLI and the validation need: `help`, bounds
    (ge/gt/lt/le), `choices`, `shown` (the default in words where it is None and the run
    derives it, e.g. "one epoch"); `cli=False` for values a run derives (a text model's
    vocabulary), which no flag or config file sets."""
    metadata = {"help": help, "cli": cli, "ge": ge, "gt": gt, "lt": lt, "le": le,
                "choices": choices, "shown": shown}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _resolved(annotation):
    """The annotation without its `| None`."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"tuple": tuple, "int": int, "float": float, "str": str,
                                       "bool": bool, "None": None})
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _resolved(args[0])
    return annotation


def base_type(annotation):
    """int for `int | None`, tuple for `tuple[int, ...]`, and so on."""
    annotation = _resolved(annotation)
    return typing.get_origin(annotation) or annotation


def item_type(annotation):
    """int for `tuple[int, ...]`, str for `tuple[str, ...] | None`."""
    return typing.get_args(_resolved(annotation))[0]


def user_fields(cls) -> list:
    """The fields a user sets (through flags or a config file)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", False)]


def validate(obj) -> None:
    """Checks every field of a settings dataclass against its type and bounds; raises
    SettingError naming the first bad one. Floats must be finite (NaN and inf never
    make a usable learning rate, decay or clip)."""
    for f in dataclasses.fields(obj):
        value, meta = getattr(obj, f.name), f.metadata
        if value is None or not meta:
            continue
        kind = base_type(f.type)
        if kind is bool:
            if not isinstance(value, bool):
                raise SettingError(f.name, f"takes true or false, got {value!r}")
            continue
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise SettingError(f.name, f"takes an integer, got {value!r}")
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SettingError(f.name, f"takes a number, got {value!r}")
            if not math.isfinite(value):
                raise SettingError(f.name, f"must be a finite number, got {value}")
        if kind is str and not isinstance(value, str):
            raise SettingError(f.name, f"takes a string, got {value!r}")
        if kind is tuple and item_type(f.type) is str:
            if not value or not all(isinstance(v, str) and v for v in value):
                raise SettingError(f.name, f"takes names like a,b, got {value!r}")
            continue
        if kind is tuple:
            if not value or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0
                                for v in value):
                raise SettingError(f.name, "takes positive integers like 512,256, got "
                                   f"{','.join(map(str, value)) if value else 'nothing'}")
            continue
        if meta.get("choices") and value not in meta["choices"]:
            raise SettingError(f.name, f"must be one of {', '.join(meta['choices'])}, "
                               f"got {value!r}")
        for bound, words in BOUNDS.items():
            b = meta.get(bound)
            if b is not None and not _COMPARE[bound](value, b):
                raise SettingError(f.name, f"must be {words} {b}, got {value}")


def describe_bounds(f) -> str:
    """'> 0 and < 1' for the help, from a field's bounds."""
    m = f.metadata
    parts = [f"{w} {m[b]}" for b, w in BOUNDS.items() if m.get(b) is not None]
    return " and ".join(parts)
