"""Documented fields: what a :class:`FieldSpec` is, the ways of writing fields, and
the JSON Schema of the data they document.

Fields are named by path: ``url`` is a key of ``data``, ``address.postal_code`` a key
of the object under ``address``, ``tags[]`` each item of the array ``tags`` and
``items[].sku`` a key of each object in the array ``items``. Parents that are not
declared are added as required objects or arrays.

The public names are imported from :mod:`eventtracking.metadata.definitions`, where
they belong to what a definition is; this module holds their rules.
"""

from __future__ import annotations

import datetime
import decimal
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventtracking._util.metadata_api import REFERENCE_KEY
from eventtracking.metadata._jsonform import to_json_form

__all__ = [
    "FIELD_TYPES",
    "MAX_FIELD_DEPTH",
    "FieldSpec",
    "example_data",
    "example_event",
    "fields_from_schema",
    "normalise_fields",
    "schema_from_fields",
    "unsafe_characters",
]

#: Field types, with the JSON Schema each stands for. ``datetime``, ``date``, ``uuid``
#: and ``decimal`` accept the Python object or its string form, as the JSON writers
#: produce it; ``any`` accepts every value that can be written as JSON.
FIELD_TYPES: Mapping[str, Mapping[str, Any]] = {
    "any": {},
    "array": {"type": "array"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
    "decimal": {"type": "string", "format": "decimal"},
    "integer": {"type": "integer"},
    "null": {"type": "null"},
    "number": {"type": "number"},
    "object": {"type": "object"},
    "string": {"type": "string"},
    "uuid": {"type": "string", "format": "uuid"},
}

_SEGMENT = re.compile(r"[^.\[\]]+(\[\])*")
#: Levels of nesting a field path may have, counting each key and each ``[]``. Deeper
#: definitions are refused: their compiled check would exceed the nesting Python's
#: compiler accepts (about 60 levels of arrays of objects).
MAX_FIELD_DEPTH = 32
#: Unicode categories refused in names: control characters (C0, DEL, C1), lone
#: surrogates, and the line and paragraph separators that break lines like a newline.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def unsafe_characters(text: str) -> list[str]:
    """The control characters and line breaks in ``text``, each once, in order.

    Names (of event types and fields) are written into generated code, catalogues
    and logs; these characters would break lines there, or hide what follows them.
    """
    return list(
        dict.fromkeys(char for char in text if unicodedata.category(char) in _UNSAFE_CATEGORIES)
    )


_FIELD_KEYS = frozenset({"type", "description", "required", "fields", "items", "observed"})


@dataclass(frozen=True)
class FieldSpec:
    """One documented field: its ``path``, accepted ``types``, ``description`` and
    whether it is ``required``."""

    path: str
    types: tuple[str, ...] = ("any",)
    description: str = ""
    required: bool = True

    def __post_init__(self) -> None:
        unsafe = unsafe_characters(self.path) if isinstance(self.path, str) else []
        if unsafe:
            msg = (
                f"Field path {self.path!r} holds a control character or line break "
                f"({', '.join(repr(char) for char in unsafe)}); field names must be "
                "printable text."
            )
            raise ValueError(msg)
        if not isinstance(self.path, str) or not all(
            _SEGMENT.fullmatch(part) for part in self.path.split(".")
        ):
            msg = (
                f"Field path {self.path!r} is not valid: use keys separated by dots, each "
                "optionally followed by [] for the items of an array, e.g. "
                "'address.postal_code' or 'items[].sku'."
            )
            raise ValueError(msg)
        depth = self.path.count(".") + 1 + self.path.count("[]")
        if depth > MAX_FIELD_DEPTH:
            msg = (
                f"Field path {self.path[:60]!r}... is nested {depth} levels deep; at most "
                f"{MAX_FIELD_DEPTH} are allowed. Document the deeper part as an 'object' "
                "or 'any' field."
            )
            raise ValueError(msg)
        unknown = [name for name in self.types if name not in FIELD_TYPES]
        if unknown or not self.types:
            msg = (
                f"Field {self.path!r} has type {list(self.types)!r}; use one or more of "
                f"{', '.join(sorted(FIELD_TYPES))}."
            )
            raise ValueError(msg)

    @property
    def type(self) -> str | list[str]:
        """The type as written in files: one name, or a list of names."""
        return self.types[0] if len(self.types) == 1 else list(self.types)

    def to_dict(self) -> dict[str, Any]:
        """This field as it appears under ``fields`` in a record."""
        return {"type": self.type, "description": self.description, "required": self.required}


# -- reading fields -------------------------------------------------------------------


def normalise_fields(fields: Any, *, where: str) -> tuple[FieldSpec, ...]:
    """Turn any accepted way of writing fields into FieldSpecs, parents first.

    Accepted: a mapping of path -> spec, where a spec is a type name (``'string'``), a
    list of type names, a mapping with ``type``, ``description``, ``required`` and,
    for objects and arrays, nested ``fields`` (or ``items``, the type of an array's
    items); or a sequence of :class:`FieldSpec`. ``where`` names the definition in
    error messages. Raises ValueError naming the bad field.
    """
    specs: list[FieldSpec] = []
    if fields is None:
        return ()
    if isinstance(fields, Mapping):
        for path, spec in fields.items():
            _read_field(str(path), spec, specs, where)
    elif isinstance(fields, Iterable) and not isinstance(fields, (str, bytes)):
        for spec in fields:
            if not isinstance(spec, FieldSpec):
                msg = (
                    f"{where}: fields given as a list must be FieldSpec objects, got "
                    f"{spec!r}; or give a mapping of path -> spec."
                )
                raise ValueError(msg)
            specs.append(spec)
    else:
        msg = f"{where}: fields must be a mapping of path -> spec, got {fields!r}."
        raise ValueError(msg)
    return _with_parents(specs, where)


def _read_field(path: str, spec: Any, out: list[FieldSpec], where: str) -> None:
    if isinstance(spec, FieldSpec):
        out.append(spec if spec.path == path else FieldSpec(path, *_spec_values(spec)))
        return
    if isinstance(spec, str) or (isinstance(spec, Sequence) and not isinstance(spec, bytes)):
        out.append(_field(path, spec, "", True, where))
        return
    if not isinstance(spec, Mapping):
        msg = (
            f"{where}: field {path!r} must be a type name or a mapping with 'type', "
            f"'description' and 'required', got {spec!r}."
        )
        raise ValueError(msg)
    unknown = set(spec) - _FIELD_KEYS
    if unknown:
        msg = (
            f"{where}: field {path!r} has unknown keys {sorted(unknown)}; use "
            f"{', '.join(sorted(_FIELD_KEYS - {'observed'}))}."
        )
        raise ValueError(msg)
    nested = spec.get("fields")
    items = spec.get("items")
    default_type = "array" if items is not None else "object" if nested is not None else "any"
    required = spec.get("required", True)
    if not isinstance(required, bool):
        msg = f"{where}: field {path!r} has required={required!r}; use true or false."
        raise ValueError(msg)
    description = spec.get("description") or ""
    if not isinstance(description, str):
        msg = f"{where}: field {path!r} has a description that is not text: {description!r}."
        raise ValueError(msg)
    own = _field(path, spec.get("type", default_type), description, required, where)
    out.append(own)
    child_prefix = f"{path}[]" if "array" in own.types and "object" not in own.types else path
    if items is not None:
        child_prefix = f"{path}[]"
        _read_field(child_prefix, items, out, where)
    if nested is not None:
        if not isinstance(nested, Mapping):
            msg = f"{where}: the nested fields of {path!r} must be a mapping, got {nested!r}."
            raise ValueError(msg)
        for key, child in nested.items():
            _read_field(f"{child_prefix}.{key}", child, out, where)


def _spec_values(spec: FieldSpec) -> tuple[tuple[str, ...], str, bool]:
    return spec.types, spec.description, spec.required


def _field(path: str, kind: Any, description: str, required: bool, where: str) -> FieldSpec:
    types = (kind,) if isinstance(kind, str) else tuple(kind)
    if not all(isinstance(name, str) for name in types):
        msg = f"{where}: field {path!r} has type {kind!r}; use a type name or a list of them."
        raise ValueError(msg)
    try:
        return FieldSpec(path, types, description, required)
    except ValueError as exc:
        msg = f"{where}: {exc}"
        raise ValueError(msg) from None


def _with_parents(specs: list[FieldSpec], where: str) -> tuple[FieldSpec, ...]:
    by_path: dict[str, FieldSpec] = {}
    for spec in specs:
        if spec.path in by_path:
            msg = f"{where}: field {spec.path!r} is declared twice; declare each path once."
            raise ValueError(msg)
        by_path[spec.path] = spec
    result: dict[str, FieldSpec] = {}
    for spec in specs:
        for parent, kind in _parents(spec.path):
            if parent in result:
                continue
            declared = by_path.get(parent)
            if declared is None:
                required = any(
                    other.required and other.path.startswith((f"{parent}.", f"{parent}["))
                    for other in specs
                )
                result[parent] = FieldSpec(parent, (kind,), "", required)
            else:
                result[parent] = declared
        result.setdefault(spec.path, spec)
    for spec in result.values():
        for parent, kind in _parents(spec.path):
            if kind not in result[parent].types and "any" not in result[parent].types:
                msg = (
                    f"{where}: field {parent!r} has type {result[parent].type!r} but "
                    f"{spec.path!r} is declared inside it; give {parent!r} the type {kind!r}."
                )
                raise ValueError(msg)
    return tuple(result.values())


def _parents(path: str) -> list[tuple[str, str]]:
    """The ancestors of ``path`` with the type each must have, outermost first."""
    parents: list[tuple[str, str]] = []
    prefix = ""
    for part in path.split("."):
        base = part.split("[", 1)[0]
        prefix = f"{prefix}.{base}" if prefix else base
        for _ in range(part.count("[]")):
            parents.append((prefix, "array"))
            prefix = f"{prefix}[]"
        parents.append((prefix, "object"))
    # The last entry is the path itself, which is no ancestor.
    return parents[:-1]


def schema_from_fields(fields: Sequence[FieldSpec], additional: bool) -> dict[str, Any]:
    """The JSON Schema of data documented by ``fields``."""
    root: dict[str, Any] = {"type": "object", "properties": {}}
    if not additional:
        root["additionalProperties"] = False
    nodes: dict[str, dict[str, Any]] = {"": root}
    for spec in fields:
        node = _schema_of(spec.types, spec.description)
        parent_path, key = _split(spec.path)
        parent = nodes[parent_path]
        if key is None:
            parent["items"] = node
        else:
            parent.setdefault("properties", {})[key] = node
            if spec.required:
                parent.setdefault("required", []).append(key)
        nodes[spec.path] = node
    if not additional:
        _close_objects(root)
    return root


def _split(path: str) -> tuple[str, str | None]:
    """Split ``path`` into its parent's path and its key (None for array items)."""
    if path.endswith("[]"):
        return path[:-2], None
    parent, _, key = path.rpartition(".")
    return parent, key


def _close_objects(node: dict[str, Any]) -> None:
    # Only objects whose keys are documented are closed: an object field documented
    # without fields of its own may hold anything.
    if "properties" in node:
        node["additionalProperties"] = False
        for child in node["properties"].values():
            _close_objects(child)
    if "items" in node:
        _close_objects(node["items"])


def _schema_of(types: Sequence[str], description: str) -> dict[str, Any]:
    if "any" in types:
        schema: dict[str, Any] = {}
    else:
        names: list[str] = []
        formats = set()
        for name in types:
            part = FIELD_TYPES[name]
            if part["type"] not in names:
                names.append(part["type"])
            if name != "null":
                formats.add(part.get("format"))
        schema = {"type": names[0] if len(names) == 1 else names}
        fmt = formats.pop() if len(formats) == 1 else None
        if fmt is not None:
            schema["format"] = fmt
    if description:
        schema["description"] = description
    return schema


def fields_from_schema(schema: Mapping[str, Any]) -> tuple[FieldSpec, ...]:
    """Best-effort FieldSpecs describing a JSON Schema, for tables in the catalogue."""
    specs: list[FieldSpec] = []
    _fields_of(schema, "", specs)
    return tuple(specs)


_JSON_TO_FIELD = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "null": "null",
    "object": "object",
    "array": "array",
}
_FORMAT_TO_FIELD = {"date-time": "datetime", "date": "date", "uuid": "uuid"}


def _fields_of(schema: Any, prefix: str, out: list[FieldSpec]) -> None:
    if not isinstance(schema, Mapping):
        return
    required = set(schema.get("required") or ())
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for key, child in properties.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if not _SEGMENT.fullmatch(str(key)) or unsafe_characters(str(key)):
                continue
            out.append(_field_of(path, child, key in required))
            _fields_of(child, path, out)
    items = schema.get("items")
    if prefix and isinstance(items, Mapping):
        out.append(_field_of(f"{prefix}[]", items, True))
        _fields_of(items, f"{prefix}[]", out)


def _field_of(path: str, schema: Any, required: bool) -> FieldSpec:
    if not isinstance(schema, Mapping):
        return FieldSpec(path, ("any",), "", required)
    declared = schema.get("type")
    names = [declared] if isinstance(declared, str) else list(declared or [])
    types = [_JSON_TO_FIELD[name] for name in names if name in _JSON_TO_FIELD]
    fmt = _FORMAT_TO_FIELD.get(schema.get("format", ""))
    if fmt and "string" in types:
        types[types.index("string")] = fmt
    description = schema.get("description") or schema.get("title") or ""
    return FieldSpec(path, tuple(types) or ("any",), str(description), required)


# -- placeholder values for example events --------------------------------------------

_PLACEHOLDERS: Mapping[str, Callable[[], Any]] = {
    "any": lambda: "...",
    "array": list,
    "boolean": lambda: True,
    "date": lambda: datetime.date(2024, 1, 31).isoformat(),
    "datetime": lambda: datetime.datetime(
        2024, 1, 31, 12, 0, tzinfo=datetime.timezone.utc
    ).isoformat(),
    "decimal": lambda: str(decimal.Decimal("1.50")),
    "integer": lambda: 0,
    "null": lambda: None,
    "number": lambda: 0.0,
    "object": dict,
    "string": lambda: "...",
    "uuid": lambda: str(uuid.UUID(int=0)),
}


class _Documented(Protocol):  # what the examples read of a Definition
    @property
    def name(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def fields(self) -> tuple[FieldSpec, ...]: ...
    @property
    def example(self) -> Any: ...


def example_data(definition: _Documented) -> tuple[Any, bool]:
    """The definition's example, or one built from its fields; and whether it was built."""
    if definition.example is not None:
        return to_json_form(definition.example), False
    data: dict[str, Any] = {}
    nodes: dict[str, Any] = {"": data}
    for spec in definition.fields:
        parent_path, key = _split(spec.path)
        parent = nodes.get(parent_path)
        if parent is None:
            continue
        value = _PLACEHOLDERS[spec.types[0]]()
        if key is None and isinstance(parent, list):
            parent.append(value)
        elif key is not None and isinstance(parent, dict):
            parent[key] = value
        else:
            continue
        nodes[spec.path] = value
    return data, True


def example_event(definition: _Documented) -> dict[str, Any]:
    """A sample event of this type as a backend would write it."""
    data, _ = example_data(definition)
    return {
        "name": definition.name,
        "timestamp": "<UTC time of the emit, ISO 8601>",
        "context": {REFERENCE_KEY: definition.id},
        "data": data,
    }
