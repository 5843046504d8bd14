"""Frozen, hashable configs: the cache key, the CLI's JSON, and a model's recipe.

Every experiment takes one frozen dataclass. ``__post_init__`` validates at
the boundary (scikit-learn style) and raises :class:`BnvizError` with a
message that says what to change; everything below trusts the config.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from .errors import BnvizError


class Config:
    """Mixin for frozen config dataclasses: copy with changes, JSON in and out."""

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
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
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
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        raise BnvizError(f"{name} must be a {hint.__name__}; got {value!r}.") from exc
    return value


def check(condition: bool, message: str) -> None:
    """Raise the one bnviz error type when a config asks for the impossible."""
    if not condition:
        raise BnvizError(message)
