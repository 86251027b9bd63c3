"""Build typed dataclasses from plain mappings (YAML), with errors that name the field.

Every config object in clbench goes through `build`: an unknown key, a wrong type
or a value out of range fails here, before any model or dataset is loaded.
"""
from __future__ import annotations

import dataclasses
import math
import typing

from .errors import ConfigError
from .suggest import did_you_mean


def help_of(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def field(default, help: str, **kw):
    """A dataclass field with a default and a help string (shown by `clbench methods`)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def _check(value, tp, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is typing.Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not allowed; {did_you_mean(value, [str(a) for a in args])}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {str(k): _check(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        try:
            number = float(value)  # an integer past 1e308 has no float
        except OverflowError:
            raise ConfigError(f"{where}: {str(value)[:20]}... is too large to be a number") from None
        if not math.isfinite(number):  # NaN passes every range check (x < min is False)
            raise ConfigError(f"{where}: {value!r} is not a finite number")
        return number
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def build(cls, data, where: str, root: bool = False):
    """Return cls(**data) after checking keys, types and each field's declared range. root: `where` names a file
    (or other source), not a field, so its fields read 'file: budget.epochs' rather than 'file.budget.epochs'."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}'; {did_you_mean(key, fields)}")
    kwargs = {}
    for name, value in data.items():
        f, at = fields[name], f"{where}: {name}" if root else f"{where}.{name}"
        checked = _check(value, hints[name], at)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if lo is not None and checked < lo:
            raise ConfigError(f"{at}: {checked!r} is below the minimum {lo} ({help_of(f)})")
        if hi is not None and checked > hi:
            raise ConfigError(f"{at}: {checked!r} is above the maximum {hi} ({help_of(f)})")
        kwargs[name] = checked
    return cls(**kwargs)


def describe(cls) -> list[tuple[str, object, str]]:
    """(name, default, help) for every field of a config dataclass."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append((f.name, default, help_of(f)))
    return out
