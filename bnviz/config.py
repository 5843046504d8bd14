"""Frozen, hashable configs: the cache key, the CLI's JSON, and a model's recipe.

Every experiment takes one frozen dataclass. ``__post_init__`` validates at
the boundary (scikit-learn style) and raises :class:`BnvizError` with a
message that says what to change; everything below trusts the config.

Before a config's own ``__post_init__`` runs, :func:`check_numbers` holds every
config to the rules no field may break, so a new field cannot open the holes
a hostile URL or ``--set`` finds: every number finite (no NaN, no infinity),
every integer within +-2**31 - 1, and every seed (a field called ``seed`` or
``*_seed``) between 0 and 2**32 - 1, what numpy and torch both accept.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any

from .errors import BnvizError

MAX_INTEGER = 2**31 - 1  # no count, size or step number in bnviz comes near it
MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds below 2**32


class Config:
    """Mixin for frozen config dataclasses: copy with changes, JSON in and out.

    A subclass's ``__post_init__`` runs after :func:`check_numbers` (wrapped here).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own_checks = cls.__dict__.get("__post_init__")

        def __post_init__(self):
            check_numbers(self)
            if own_checks is not None:
                own_checks(self)

        __post_init__.__doc__ = own_checks.__doc__ if own_checks is not None else None
        cls.__post_init__ = __post_init__

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_json_value(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise BnvizError(f"Unknown setting(s) {', '.join(sorted(unknown))} for {cls.__name__}; known: {', '.join(sorted(known))}.")
        return cls(**{name: _coerce(value, hints[name], name) for name, value in values.items()})

    def with_overrides(self, assignments: list[str]):
        """Apply ``key=value`` strings (the CLI's ``--set``); values parse as JSON when they can."""
        hints = typing.get_type_hints(type(self))
        changes = {}
        for assignment in assignments:
            if "=" not in assignment:
                raise BnvizError(f"--set expects key=value, got {assignment!r}.")
            key, raw = assignment.split("=", 1)
            key = key.strip()
            if key not in hints:
                raise BnvizError(f"Unknown setting {key!r}; known: {', '.join(sorted(f.name for f in dataclasses.fields(self)))}.")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            changes[key] = _coerce(value, hints[key], key)
        return self.replace(**changes)


def _to_json_value(value):
    if isinstance(value, tuple):
        return [_to_json_value(v) for v in value]
    if isinstance(value, Config):
        return value.to_dict()
    return value


def _coerce(value, hint, name):
    """Turn a JSON value into the field's type (tuples from lists, ints from floats...)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        last_error = None
        for option in inner:
            try:
                return _coerce(value, option, name)
            except BnvizError as exc:
                last_error = exc
        raise last_error or BnvizError(f"Bad value for {name}: {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        element = args[0] if args else str
        return tuple(_coerce(v, element, name) for v in value)
    if origin is typing.Literal:
        if value not in args:
            raise BnvizError(f"{name} must be one of {', '.join(map(str, args))}; got {value!r}.")
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            first = dataclasses.fields(hint)[0].name
            example = json.dumps({first: hint().to_dict()[first]})
            raise BnvizError(f"{name} must be a JSON object of {hint.__name__} settings, e.g. {name}={example}; got {value!r}.")
        return hint.from_dict(value)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)  # OverflowError for an infinite float
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if hint is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BnvizError(f"{name} must be {TYPE_WORDS.get(hint, hint.__name__)}; got {value!r}.") from exc
    return value


TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def check_numbers(config) -> None:
    """The rules every config obeys (see the module docstring), tuples' elements included."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        for number in value if isinstance(value, tuple) else (value,):
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                continue
            if isinstance(number, float) and not math.isfinite(number):
                raise BnvizError(f"{field.name} must be a finite number; got {number}.")
            if field.name == "seed" or field.name.endswith("_seed"):
                if not (isinstance(number, int) and 0 <= number <= MAX_SEED):
                    raise BnvizError(f"{field.name} must be a whole number between 0 and {MAX_SEED:,}; got {_shown(number)}.")
            elif isinstance(number, int) and abs(number) > MAX_INTEGER:
                raise BnvizError(f"{field.name} must be between {-MAX_INTEGER:,} and {MAX_INTEGER:,} (and its own range, far smaller); got {_shown(number)}.")


def _shown(number: int | float) -> str:
    """A number as a message quotes it: 1e+30, not 31 digits."""
    return f"{number:.3g}" if abs(number) >= 1e9 else repr(number)


def check(condition: bool, message: str) -> None:
    """Raise the one bnviz error type when a config asks for the impossible."""
    if not condition:
        raise BnvizError(message)
