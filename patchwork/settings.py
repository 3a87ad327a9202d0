"""Typed settings built from plain mappings (a config file, a JSON argument, a checkpoint).

Every settings object of the package is a frozen dataclass. :func:`dataclass_from_dict` builds one from a
mapping, checking each key against the fields and each value against the field's type hint
(:func:`coerce_field`); unknown keys and wrong types become one :class:`~patchwork.errors.PatchworkError`
whose lines name the key. This module imports no torch, so the workflow can check settings cheaply.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from patchwork.errors import PatchworkError, check_keys

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], d: Any, what: str) -> T:
    """Build the settings dataclass ``cls`` from a plain mapping ``d``, every field checked by its type.

    Unknown keys and values of the wrong type raise one :class:`PatchworkError` whose lines start with
    ``what``; a field typed as (an optional) dataclass is built from its own mapping the same way.
    """
    if not isinstance(d, Mapping):
        raise PatchworkError(f"{what}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    check_keys(d, (f.name for f in dataclasses.fields(cls)), what)  # type: ignore[arg-type]
    problems: list[str] = []
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        nested = field_class(cls, key)
        if nested is not None and value is not None:
            kwargs[key] = dataclass_from_dict(nested, value, f"{what}.{key}")
            continue
        try:
            kwargs[key] = coerce_field(value, hints[key])
        except (TypeError, ValueError) as err:
            problems.append(f"{what}: {key}={value!r}: {err}")
    if problems:
        raise PatchworkError(problems=problems)
    return cls(**kwargs)


def field_class(cls: type | None, name: str) -> type | None:
    """The settings dataclass that field ``name`` of the settings class ``cls`` holds (a nested section,
    ``X | None`` included), else ``None``."""
    if cls is None or not dataclasses.is_dataclass(cls):
        return None
    hint = typing.get_type_hints(cls).get(name)
    nested = [h for h in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(h)]
    return nested[0] if nested else None


def alternatives(cls: type | None) -> tuple[tuple[str, ...], ...]:
    """The groups of fields of the settings class ``cls`` that are alternatives (its ``ALTERNATIVES``: a
    config names one of each group, e.g. the DNP scheme's ``fov_mm``/``fov_rel``); none for ``None``."""
    return tuple(getattr(cls, "ALTERNATIVES", ()))


def coerce_field(value: Any, hint: Any) -> Any:
    """Check ``value`` against the field type ``hint`` and return it in that type.

    Ints are accepted for floats, lists for tuples (``tuple[X, Y]`` fixed length, ``tuple[X, ...]`` any
    length), mappings with string keys for ``dict``; a union (``X | None``) takes the first option that fits.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        reasons = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce_field(value, option)
            except (TypeError, ValueError) as err:
                reasons.append(str(err))
        raise TypeError(" or ".join(reasons + (["null"] if type(None) in args else [])))
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError("expected a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            if not isinstance(value, (list, tuple)):
                raise TypeError("expected a list")
            return tuple(coerce_field(v, args[0]) for v in value)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TypeError(f"expected a list of {len(args)} values")
        return tuple(coerce_field(v, h) for v, h in zip(value, args, strict=True))
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise TypeError("expected a mapping with string keys")
        return dict(value)
    raise TypeError(f"unsupported field type {hint}")  # a new field needs a rule here


def read_tuned_settings(path: Any, parse: Callable[[Any], T], what: str) -> T:
    """The ``settings`` entry of a tuning result file (``{"settings": ..., "mean_dice": ...}``) parsed by
    ``parse``; ``what`` names the file kind in the error (e.g. ``"a postprocessing.json of
    tune-postprocessing"``), and every problem of the settings is prefixed with the file."""
    from patchwork.io import read_json

    tuned = read_json(path)
    if not isinstance(tuned, dict) or "settings" not in tuned:
        raise PatchworkError(f"{path}: not {what} (no 'settings')")
    try:
        return parse(tuned["settings"])
    except PatchworkError as err:
        raise PatchworkError(problems=[f"{path}: {p}" for p in err.problems]) from None
