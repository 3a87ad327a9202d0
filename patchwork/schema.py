"""What the settings classes declare, written out: the JSON schema of a settings class and markdown tables.

:func:`json_schema` turns a :class:`~patchwork.settings.Settings` class into a JSON schema (types from the
type hints, the limits, the docs as descriptions, the defaults), nested settings written out in full, so
the config schema, the command line and the code cannot disagree. :func:`settings_rows` lists every key of
a settings class (nested ones dotted: ``train.augment.dphi``) with its default, a value a config sets
(the demo's) and its doc, and :func:`markdown_table` writes them as the tables of ``config/README.md``;
:func:`replace_tables` puts freshly generated tables between a document's markers::

    <!-- generated: config -->
    ... (replaced) ...
    <!-- end generated -->

This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Mapping
from typing import Any

from patchwork.errors import PatchworkError
from patchwork.settings import (
    MISSING,
    default_of,
    doc,
    field_class,
    field_schema,
    hints,
    in_config,
    keywords,
    merged,
    plain,
)

MARKER = re.compile(
    r"(<!-- generated: (?P<name>[\w.]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL
)


def json_schema(cls: type, defaults: bool = True) -> dict[str, Any]:
    """The JSON schema of a settings class: one property per config field (types, limits, doc, default),
    no other keys allowed, the fields without a default required, described by the docstring's first line.
    With ``defaults`` false it gives neither defaults nor required keys (a model's settings: the plans and
    the class fill what a config leaves out)."""
    properties, required = {}, []
    for f in dataclasses.fields(cls):
        if not in_config(f):
            continue
        schema = _property(cls, f, defaults)
        if doc(f):
            schema = {"description": doc(f), **schema}
        default = default_of(f)
        optional = f.metadata.get("optional")
        if defaults and default is not MISSING and not optional and not callable(default):
            schema["default"] = _config_value(default)
        if defaults and default is MISSING:
            required.append(f.name)
        properties[f.name] = schema
    out: dict[str, Any] = {"type": "object"}
    if cls.__doc__:
        out["description"] = cls.__doc__.strip().splitlines()[0]
    out |= {"additionalProperties": False, "properties": properties}
    if required:
        out["required"] = required
    return out


def _property(cls: type, f: dataclasses.Field, defaults: bool) -> dict[str, Any]:
    """A field's schema; a nested settings class written out (``null`` allowed where its hint is
    optional), its field keywords laid over it."""
    nested = field_class(cls, f.name)
    if nested is None:
        return field_schema(cls, f)
    schema = json_schema(nested, defaults)
    schema.pop("description", None)
    if type(None) in typing.get_args(hints(cls)[f.name]):
        schema["type"] = ["object", "null"]
    return merged(schema, keywords(f))


def _config_value(value: Any) -> Any:
    """A value as a config writes it: plain builtins, settings as mappings of their config fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return {f.name: _config_value(getattr(value, f.name)) for f in fields if in_config(f)}
    return plain(value)


def settings_rows(
    cls: type, set_values: Mapping[str, Any] | None = None, prefix: str = "", instance: Any = None
) -> list[list[str]]:
    """``[key, default, set value, doc]`` of every config field of ``cls``, a nested section's fields with
    dotted keys (``train.augment.dphi``) and the section's default instance's values as their defaults;
    ``set_values`` is a config mapping of ``cls`` (e.g. the demo's) whose values fill the third column."""
    set_values = set_values or {}
    rows = []
    for f in dataclasses.fields(cls):
        if not in_config(f):
            continue
        key, given = f"{prefix}{f.name}", set_values.get(f.name, MISSING)
        nested = field_class(cls, f.name)
        default = default_of(f) if instance is None else getattr(instance, f.name)
        inner = given if isinstance(given, Mapping) else {}
        if nested is not None and default is not None:  # a section: each of its keys has a row
            rows += settings_rows(nested, inner, f"{key}.", default)
            continue
        shown = "`{}`" if f.metadata.get("optional") else _cell(default)
        rows.append([f"`{key}`", shown, "" if given is MISSING else _cell(given), doc(f)])
        if nested is not None:  # an optional section (null by default): its keys when given
            rows += settings_rows(nested, inner, f"{key}.")
    return rows


class Several(list):
    """The values several configs (the demo's models of one type) give one key, shown side by side."""


def shared(mappings: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The keys of ``mappings`` (each a config mapping of one settings class) with their value where all
    that set it agree, nested mappings merged, else :class:`Several` values."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for m in mappings for k in m):
        values = [m[key] for m in mappings if key in m]
        if all(isinstance(v, Mapping) for v in values):
            out[key] = shared(values)
        elif all(v == values[0] for v in values):
            out[key] = values[0]
        else:
            out[key] = Several(values)
    return out


def _cell(value: Any) -> str:
    """A value in a table cell, as JSON (``null``, ``true``, numbers, ``[...]``, ``{...}``); several
    values separated by ``/``; none (a required key): ``(required)``."""
    if value is MISSING:
        return "(required)"
    if isinstance(value, Several):
        return " / ".join(_cell(v) for v in value)
    return f"`{json.dumps(plain(value), ensure_ascii=False)}`"


PRESET_HEADER = "CPU preset"  # the column of the values config/cpu.yaml sets


def markdown_table(rows: list[list[str]], set_header: str | None = PRESET_HEADER) -> str:
    """Rows of :func:`settings_rows` as a markdown table (the third column headed ``set_header``; none
    without a header)."""
    header = ["key", "default", *([set_header] if set_header else []), "what it does"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = row if set_header else [*row[:2], row[3]]
        lines.append("| " + " | ".join(cell.replace("\n", " ").replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def replace_tables(text: str, tables: Mapping[str, str]) -> str:
    """``text`` with the body between each ``<!-- generated: NAME -->`` marker and the next
    ``<!-- end generated -->`` replaced by ``tables[NAME]`` (an unknown name is an error)."""

    def body(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in tables:
            raise PatchworkError(f"generated table {name!r} unknown (known: {', '.join(tables)})")
        return match.group(1) + tables[name] + match.group(4)

    return MARKER.sub(body, text)


def tables_of(sections: Mapping[str, tuple[type, Mapping[str, Any] | None]]) -> dict[str, str]:
    """A markdown table per name: ``{name: (settings class, values a config sets)}``."""
    return {
        name: markdown_table(settings_rows(cls, given), PRESET_HEADER if given is not None else None)
        for name, (cls, given) in sections.items()
    }
