"""JSON-schema keywords on settings fields: checked when the settings are built, and written out as schema.

A settings dataclass declares each field's limits once, with :func:`setting`::

    threshold: float = setting(0.5, minimum=0, maximum=1)

:func:`check_fields` (called from ``__post_init__``) reports every value outside its limits, and
:func:`json_schema` turns the dataclass into a JSON schema (types from the type hints, the limits, the
defaults), so the config schema, the command line and the code cannot disagree. Supported keywords:
``enum``, ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``pattern``,
``not: {enum: [...]}``, ``minItems``, and ``items`` / ``additionalProperties`` holding keywords for the
elements of a list / the values of a mapping. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

_MISSING = dataclasses.MISSING
_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


def setting(default: Any = _MISSING, *, config: bool = True, optional: bool = False, **keywords: Any) -> Any:
    """A dataclass field with ``default`` (mappings copied per instance) and JSON-schema ``keywords``.

    ``config=False`` marks a field that only the command line sets (left out of the config schema);
    ``optional=True`` one without a default that the raw input may still omit (its parser fills it in).
    """
    metadata = {"schema": keywords, "config": config, "optional": optional}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def keywords(f: dataclasses.Field) -> dict[str, Any]:
    """The schema keywords :func:`setting` attached to a field (none for a plain field)."""
    return dict(f.metadata.get("schema", {}))


def in_config(f: dataclasses.Field) -> bool:
    """Whether a field belongs in the config file (``False``: command line only)."""
    return bool(f.metadata.get("config", True))


def violations(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """One message per keyword of ``schema`` that ``value`` breaks (``None`` breaks nothing)."""
    if value is None:
        return []
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}={value!r}: expected one of {', '.join(map(str, schema['enum']))}")
    if value in schema.get("not", {}).get("enum", ()):
        problems.append(f"{where}={value!r}: not allowed (reserved: {', '.join(schema['not']['enum'])})")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(
            f"{where}={value!r}: must be {schema.get('description', 'like ' + schema['pattern'])}"
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, fails, text in (
            ("minimum", lambda v, lim: v < lim, ">="),
            ("maximum", lambda v, lim: v > lim, "<="),
            ("exclusiveMinimum", lambda v, lim: v <= lim, ">"),
            ("exclusiveMaximum", lambda v, lim: v >= lim, "<"),
        ):
            if key in schema and fails(value, schema[key]):
                problems.append(f"{where}={value!r}: must be {text} {schema[key]}")
    if isinstance(value, (list, tuple)):
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{where}: needs at least {schema['minItems']} entries")
        for i, item in enumerate(value):
            problems += violations(item, schema.get("items", {}), f"{where}[{i}]")
    if isinstance(value, dict):
        for key, item in value.items():
            problems += violations(item, schema.get("additionalProperties", {}), f"{where}.{key}")
    if "type" in schema and not _has_type(value, schema["type"]):
        problems.append(f"{where}={value!r}: expected {schema['type']}")
    return problems


def _has_type(value: Any, names: str | list[str]) -> bool:
    """Whether ``value`` is of one of the JSON types ``names`` (an int is also a number)."""
    names = [names] if isinstance(names, str) else names
    if isinstance(value, bool):
        kinds = {"boolean"}
    elif isinstance(value, int):
        kinds = {"integer", "number"}
    elif isinstance(value, float):
        kinds = {"number"}
    elif isinstance(value, str):
        kinds = {"string"}
    elif isinstance(value, (list, tuple)):
        kinds = {"array"}
    else:
        kinds = {"object"}
    return bool(kinds & set(names))


def check_fields(obj: Any) -> list[str]:
    """Every limit that a field value of the dataclass instance ``obj`` breaks, one message each.

    The type of each value counts too where the type hint leaves it open (the values of a mapping).
    """
    hints = typing.get_type_hints(type(obj))
    problems = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            continue
        problems += violations(value, _merge(schema_of(hints[f.name]), keywords(f)), f.name)
    return problems


def schema_of(hint: Any) -> dict[str, Any]:
    """The JSON schema of a type hint: builtins, ``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``,
    ``dict[str, X]`` and settings dataclasses (``Any``: no constraint)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _TYPES:
        return {"type": _TYPES[hint]}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        schema = schema_of(options[0]) if len(options) == 1 else {"anyOf": [schema_of(a) for a in options]}
        if type(None) in args and "type" in schema:
            schema["type"] = [schema["type"], "null"]
        return schema
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": schema_of(args[0])}
        return {"type": "array", "items": schema_of(args[0]), "minItems": len(args), "maxItems": len(args)}
    if origin is dict:
        return {"type": "object", "additionalProperties": schema_of(args[1])}
    if dataclasses.is_dataclass(hint):
        return json_schema(hint)
    return {}


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON schema of a settings dataclass: one property per config field (types, limits, defaults),
    no other keys allowed, the fields without a default required, described by the docstring's first line.
    """
    hints = typing.get_type_hints(cls)
    properties, required = {}, []
    for f in dataclasses.fields(cls):
        if not in_config(f):
            continue
        schema = _merge(schema_of(hints[f.name]), keywords(f))
        default = _default(f)
        if default is not _MISSING and "default" not in schema:
            schema["default"] = default
        if "default" not in schema and not f.metadata.get("optional"):
            required.append(f.name)
        properties[f.name] = schema
    out: dict[str, Any] = {"type": "object"}
    if cls.__doc__:
        out["description"] = cls.__doc__.strip().splitlines()[0]
    out |= {"additionalProperties": False, "properties": properties}
    if required:
        out["required"] = required
    return out


def _default(f: dataclasses.Field) -> Any:
    """A field's default as plain JSON (a settings dataclass as its config mapping), or ``_MISSING``."""
    if f.default is not _MISSING:
        value = f.default
    elif f.default_factory is not _MISSING:
        value = f.default_factory()
    else:
        return _MISSING
    return _plain(value)


def _plain(value: Any) -> Any:
    """``value`` as JSON builtins: dataclasses as mappings of their config fields, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if in_config(f)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, nested mappings (``items``, ``additionalProperties``) merged."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out
