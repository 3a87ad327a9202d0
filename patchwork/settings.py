"""One way to declare a setting: a field of a frozen :class:`Settings` dataclass, with :func:`setting`.

Every settings class of the package (the workflow's config sections, each model type's ``params`` and
``apply``, the post-processing) declares each field once, with its default, its limits (JSON-schema
keywords) and its doc::

    @dataclass(frozen=True)
    class EnsembleSettings(Settings):
        what: ClassVar[str] = "ensemble"
        threshold: float = setting(0.5, minimum=0, maximum=1, doc="threshold of the ensemble")

From that one declaration :meth:`Settings.from_dict` builds and checks the settings (keys, types, limits:
every problem one line naming the key), :meth:`Settings.to_dict` writes them back as plain builtins,
:mod:`patchwork.schema` generates the config schema and ``config/README.md``'s tables, and the command
line takes its defaults. A rule between fields is the class's :meth:`Settings.problems`; a class that
stores a value in a canonical form (a scalar as a one-entry tuple, say) says so in
:meth:`Settings.normalise`. This module imports no torch, so the workflow checks settings cheaply.

Supported keywords: ``enum``, ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``,
``pattern``, ``not: {enum: [...]}``, ``minItems``, ``maxItems``, ``anyOf`` (a value fits one of the
schemas), ``type`` (replaces the JSON type the hint gives), and ``items`` / ``additionalProperties``
holding keywords for the elements of a list / the values of a mapping.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from patchwork.errors import PatchworkError, check_keys

T = TypeVar("T")
S = TypeVar("S", bound="Settings")
MISSING: Any = dataclasses.MISSING


def setting(
    default: Any = MISSING,
    *,
    doc: str,
    config: bool = True,
    optional: bool = False,
    hide_default: bool = False,
    **keywords: Any,
) -> Any:
    """A settings field: its ``default`` (mappings copied per instance), its ``doc`` and its JSON-schema
    ``keywords`` (the limits :meth:`Settings.from_dict` checks).

    ``config=False`` marks a field that only the command line sets (left out of the config schema);
    ``optional=True`` one whose default the class fills in from other fields (no default in the schema);
    ``hide_default=True`` one that :meth:`Settings.to_dict` leaves out while it holds its default (so
    files written before the field existed keep their identity).
    """
    metadata = {
        "schema": keywords,
        "doc": doc,
        "config": config,
        "optional": optional,
        "hide_default": hide_default,
    }
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def keywords(f: dataclasses.Field) -> dict[str, Any]:
    """The schema keywords :func:`setting` attached to a field (none for a plain field)."""
    return dict(f.metadata.get("schema", {}))


def doc(f: dataclasses.Field) -> str:
    """The doc :func:`setting` attached to a field."""
    return str(f.metadata.get("doc", ""))


def in_config(f: dataclasses.Field) -> bool:
    """Whether a field belongs in the config file (``False``: command line only)."""
    return bool(f.metadata.get("config", True))


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh one from its factory), or :data:`MISSING`."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a settings class (computed once per class)."""
    return typing.get_type_hints(cls)


class Settings:
    """Base of every settings class (a frozen dataclass whose fields are declared with :func:`setting`).

    Building one (``from_dict`` or the constructor) coerces every field to its type hint (ints for
    floats, lists for tuples, a mapping for a nested settings class), checks every limit of the values as
    a config writes them, lets the class put values in their canonical form (:meth:`normalise`), and
    checks the rules between fields (:meth:`problems`); every problem is one line starting with ``what``
    and naming the key.
    """

    what: ClassVar[str] = "settings"
    ALTERNATIVES: ClassVar[tuple[tuple[str, ...], ...]] = ()  # fields of which a config names one

    def __post_init__(self) -> None:
        problems: list[str] = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            try:
                object.__setattr__(
                    self, f.name, coerce_field(value, hints(type(self))[f.name], f"{self.what}: {f.name}")
                )
            except (TypeError, ValueError) as err:
                problems.append(f"{f.name}={value!r}: {err}")
            except PatchworkError as err:
                problems.extend(err.problems)
        problems = problems or check_fields(self)  # the values as a config writes them
        if not problems:
            try:
                self.normalise()
                problems = self.problems()  # rules between fields see values in range
            except PatchworkError as err:
                problems = err.problems
        if problems:
            raise PatchworkError(problems=[_prefixed(p, self.what) for p in problems])

    def normalise(self) -> None:
        """Store values in their canonical form (``object.__setattr__``); the default changes nothing."""

    def problems(self) -> list[str]:
        """The rules between fields that these settings break, one message each (none by default)."""
        return []

    @classmethod
    def coerce(cls: type[S], value: Any, what: str) -> S:
        """``value`` as these settings, nested in a config: an instance as it is, a mapping built by
        :meth:`from_dict` (a key only the command line sets is refused)."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise PatchworkError(f"{what}: expected a mapping, got {value!r}")
        cli_only = [f.name for f in dataclasses.fields(cls) if not in_config(f) and f.name in value]  # type: ignore[arg-type]
        if cli_only:
            raise PatchworkError(f"{what}: {', '.join(cli_only)}: not a config key (command line only)")
        return cls.from_dict(value, what)

    @classmethod
    def from_dict(cls: type[S], d: Any, what: str | None = None) -> S:
        """The settings from a plain mapping (a config section, a JSON argument, a model file): unknown keys,
        missing required ones, wrong types and values outside their limits raise one
        :class:`PatchworkError` whose lines start with ``what`` (default: the class's)."""
        what = what or cls.what
        if not isinstance(d, Mapping):
            raise PatchworkError(f"{what}: expected a mapping, got {type(d).__name__}")
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        check_keys(d, (f.name for f in fields), what)
        missing = [f.name for f in fields if default_of(f) is MISSING and f.name not in d]
        if missing:
            raise PatchworkError(problems=[f"{what}: {name}: required" for name in missing])
        try:
            return cls(**d)
        except PatchworkError as err:
            raise PatchworkError(problems=[_retarget(p, cls.what, what) for p in err.problems]) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON builtins (tuples as lists, nested settings as mappings), safe for JSON and
        ``torch.load(weights_only=True)``; ``type(s).from_dict(s.to_dict()) == s``."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get("hide_default") and value == default_of(f):
                continue
            out[f.name] = plain(value)
        return out


def _prefixed(problem: str, what: str) -> str:
    """``problem`` starting with ``what`` (nested settings' lines already do)."""
    return problem if problem.startswith(f"{what}: ") else f"{what}: {problem}"


def _retarget(problem: str, old: str, new: str) -> str:
    """A problem line of settings built as ``old`` named ``new`` instead (the caller's source)."""
    return new + problem[len(old) :] if problem.startswith(f"{old}: ") else f"{new}: {problem}"


def plain(value: Any) -> Any:
    """``value`` as plain builtins: settings as their :meth:`~Settings.to_dict`, tuples as lists."""
    if isinstance(value, Settings):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def field_class(cls: type | None, name: str) -> type | None:
    """The settings class that field ``name`` of the settings class ``cls`` holds (a nested section,
    ``X | None`` included), else ``None``."""
    if cls is None or not dataclasses.is_dataclass(cls):
        return None
    hint = hints(cls).get(name)
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    nested = [h for h in options if isinstance(h, type) and issubclass(h, Settings)]
    return nested[0] if nested else None


def alternatives(cls: type | None) -> tuple[tuple[str, ...], ...]:
    """The groups of fields of the settings class ``cls`` that are alternatives (its ``ALTERNATIVES``: a
    config names one of each group, e.g. the DNP scheme's ``fov_mm``/``fov_rel``); none for ``None``."""
    return tuple(getattr(cls, "ALTERNATIVES", ()))


def coerce_field(value: Any, hint: Any, what: str = "") -> Any:
    """Check ``value`` against the field type ``hint`` and return it in that type.

    Ints are accepted for floats, lists for tuples (``tuple[X, Y]`` fixed length, ``tuple[X, ...]`` any
    length), mappings with string keys for ``dict``, a mapping for a nested :class:`Settings` (built with
    ``what`` as its name); a union (``X | None``) takes the first option that fits; a ``Literal`` one of
    its values; a ``Callable`` any callable.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        reasons = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce_field(value, option, what)
            except (TypeError, ValueError) as err:
                reasons.append(str(err))
        raise TypeError(" or ".join(reasons + (["null"] if type(None) in args else [])))
    if origin is typing.Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise TypeError(f"expected one of {', '.join(map(str, args))}")
        return value
    if isinstance(hint, type) and issubclass(hint, Settings):
        return hint.coerce(value, what)
    if hint is Callable or origin is Callable or origin is typing.Callable:  # type: ignore[comparison-overlap]
        if not callable(value):
            raise TypeError("expected a callable")
        return value
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
            items, problems = [], []
            for v in value:
                try:
                    items.append(coerce_field(v, args[0], what))
                except PatchworkError as err:
                    problems += err.problems
            if problems:
                raise PatchworkError(problems=problems)
            return tuple(items)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TypeError(f"expected a list of {len(args)} values")
        return tuple(coerce_field(v, h, what) for v, h in zip(value, args, strict=True))
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise TypeError("expected a mapping with string keys")
        return dict(value)
    raise TypeError(f"unsupported field type {hint}")  # a new field needs a rule here


def violations(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """One message per keyword of ``schema`` that ``value`` breaks (``None`` and callables, which no config
    holds, break nothing)."""
    if value is None or (callable(value) and not isinstance(value, type)):
        return []
    problems = []
    if "anyOf" in schema and all(violations(value, option, where) for option in schema["anyOf"]):
        reasons = [violations(value, option, where)[0].split(": ", 1)[-1] for option in schema["anyOf"]]
        reasons = [r.removeprefix("expected ") for r in dict.fromkeys(reasons) if r != "expected null"]
        problems.append(f"{where}={value!r}: expected {' or '.join(reasons)}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}={value!r}: expected one of {', '.join(map(str, schema['enum']))}")
    if value in schema.get("not", {}).get("enum", ()):
        problems.append(f"{where}={value!r}: not allowed (reserved: {', '.join(schema['not']['enum'])})")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
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
        if len(value) > schema.get("maxItems", len(value)):
            problems.append(f"{where}: takes at most {schema['maxItems']} entries")
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
    """Every limit that a field value of the settings ``obj`` breaks, one message each (a nested settings
    value checked itself when it was built)."""
    problems = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Settings):
            continue
        problems += violations(value, field_schema(type(obj), f), f.name)
    return problems


_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


def schema_of(hint: Any) -> dict[str, Any]:
    """The JSON schema of a type hint: builtins, ``X | None``, unions, ``Literal``, ``tuple[X, ...]``,
    ``tuple[X, Y]``, ``dict[str, X]`` and settings classes (``Any`` and callables: no constraint)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _TYPES:
        return {"type": _TYPES[hint]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        options = [schema_of(a) for a in args if a is not type(None)]
        options = [o for o in options if o]  # a callable option: Python only, no JSON form
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        if type(None) in args and "type" in schema:
            schema["type"] = [schema["type"], "null"]
        elif type(None) in args:
            schema = {"anyOf": [*schema.get("anyOf", [schema]), {"type": "null"}]}
        return schema
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": schema_of(args[0])}
        return {"type": "array", "items": schema_of(args[0]), "minItems": len(args), "maxItems": len(args)}
    if origin is dict:
        return {"type": "object", "additionalProperties": schema_of(args[1])}
    if isinstance(hint, type) and issubclass(hint, Settings):
        return {"type": "object"}  # checked by its own class; patchwork.schema writes it out in full
    return {}


def field_schema(cls: type, f: dataclasses.Field) -> dict[str, Any]:
    """The JSON schema of a field: its type hint's, updated by the keywords of its :func:`setting`."""
    return merged(schema_of(hints(cls)[f.name]), keywords(f))


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, nested mappings merged key by key (a schema's ``items`` or
    ``additionalProperties``; a config overlay's sections, as Snakemake merges config files), anything
    else replaced."""
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out


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
