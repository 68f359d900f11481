"""What a documented event type or context type is: fields, versions and records.

A definition is immutable. Its :attr:`~EventType.record` is the JSON document stored
beside the events, and its :attr:`~EventType.id` is a hash of what the record says, so
the same definition has the same id in every process, and any change gives a new id.
:func:`build_definition` checks and normalises what a registration or a file gives.

Fields are named by path (``address.postal_code``, ``items[].sku``); their rules live
in ``eventtracking.metadata._fields``, and their public names are imported here.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from eventtracking.metadata._compile import compile_fields
from eventtracking.metadata._fields import (
    FIELD_TYPES,
    MAX_FIELD_DEPTH,
    FieldSpec,
    example_data,
    example_event,
    fields_from_schema,
    normalise_fields,
    schema_from_fields,
    unsafe_characters,
)
from eventtracking.metadata._jsonform import to_json_form
from eventtracking.metadata._schema import compile_schema

if TYPE_CHECKING:
    from eventtracking.metadata._findings import Checks

__all__ = [
    "CONTEXT_TYPE",
    "EVENT_TYPE",
    "FIELD_TYPES",
    "MAX_FIELD_DEPTH",
    "ContextType",
    "Definition",
    "EventType",
    "FieldSpec",
    "Location",
    "build_definition",
    "definition_id",
    "example_data",
    "example_event",
    "fields_from_schema",
    "normalise_fields",
    "parse_locations",
    "schema_from_fields",
]

#: ``kind`` of an event type's record.
EVENT_TYPE = "event_type"
#: ``kind`` of a context type's record.
CONTEXT_TYPE = "context_type"

_D = TypeVar("_D", bound="Definition")
_PACKAGE = "eventtracking.metadata"


@dataclass(frozen=True)
class Location:
    """Where events of a type are emitted: a ``module`` and, when known, a ``function``."""

    module: str
    function: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """This location as it appears in a record's ``emitted_from``."""
        return {"module": self.module, "function": self.function}

    def __str__(self) -> str:
        return self.module if self.function is None else f"{self.module}.{self.function}"


@dataclass(frozen=True, eq=False)
class Definition:
    """Common ground of :class:`EventType` and :class:`ContextType` (one version of one).

    Build them through a :class:`~eventtracking.metadata.Registry`, or with
    :func:`build_definition`, which check and normalise what they are given; ``id`` is
    computed from the content when left empty.
    """

    kind: ClassVar[str] = ""
    name: str
    version: int
    description: str = ""
    fields: tuple[FieldSpec, ...] = ()
    schema: Mapping[str, Any] | None = None
    owner: str | None = None
    emitted_from: tuple[Location, ...] = ()
    example: Any = None
    additional_fields: bool = False
    id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", definition_id(self.content()))

    def content(self) -> dict[str, Any]:
        """Everything the definition says, except its version: the input of its id."""
        return {
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "owner": self.owner,
            "emitted_from": [location.to_dict() for location in self.emitted_from],
            "fields": {spec.path: spec.to_dict() for spec in self.fields},
            "schema": None if self.schema is None else to_json_form(self.schema),
            "additional_fields": self.additional_fields,
            "example": None if self.example is None else to_json_form(self.example),
        }

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of ``data``: the one given, or one built from the fields."""
        if self.schema is not None:
            schema: dict[str, Any] = to_json_form(self.schema)
            return schema
        return schema_from_fields(self.fields, self.additional_fields)

    @cached_property
    def checks(self) -> Checks:
        """``(check, shallow, diagnose)`` for this definition's data, compiled once.

        Compiled at the first event of the type that is checked. The registry compiles
        a JSON Schema when it is registered, so that a schema that cannot be compiled
        is refused there; a field list always compiles (see :data:`MAX_FIELD_DEPTH`).
        Raises ValueError saying why a definition cannot be compiled.
        """
        if self.schema is not None:
            return compile_schema(self.name, self.json_schema)
        return compile_fields(self.fields, self.additional_fields)

    @cached_property
    def record(self) -> dict[str, Any]:
        """The documentation record stored beside the events. Do not change it.

        Keys: ``kind``, ``id``, ``name``, ``version``, ``description``, ``owner``,
        ``emitted_from``, ``fields``, ``schema`` (always a JSON Schema of ``data``),
        ``schema_source`` (``'fields'`` or ``'schema'``), ``additional_fields`` and
        ``example``.
        """
        content = self.content()
        return {
            "kind": self.kind,
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "owner": self.owner,
            "emitted_from": content["emitted_from"],
            "fields": content["fields"],
            "schema": self.json_schema,
            "schema_source": "fields" if self.schema is None else "schema",
            "additional_fields": self.additional_fields,
            "example": content["example"],
        }


class EventType(Definition):
    """One version of a documented event type (``kind == 'event_type'``)."""

    kind = EVENT_TYPE


class ContextType(Definition):
    """One version of a documented context (``kind == 'context_type'``): the keys a
    named context adds to every event emitted while it is entered."""

    kind = CONTEXT_TYPE


def definition_id(content: Mapping[str, Any]) -> str:
    """A stable id for a definition's content: 16 hex digits of its SHA-256."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# -- where events are emitted ---------------------------------------------------------


def parse_locations(value: Any, *, where: str) -> tuple[Location, ...]:
    """Read ``emitted_from``: a string ``'module'`` or ``'module:function'``, a mapping
    with ``module`` and ``function``, a function object, or a list of these."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else [value]
    return tuple(dict.fromkeys(_location(item, where) for item in items))


def _location(item: Any, where: str) -> Location:
    if isinstance(item, Location):
        return item
    if isinstance(item, str) and item:
        module, _, function = item.partition(":")
        return Location(module, function or None)
    if isinstance(item, Mapping) and isinstance(item.get("module"), str):
        declared = item.get("function")
        return Location(item["module"], None if declared is None else str(declared))
    if callable(item) and hasattr(item, "__module__") and hasattr(item, "__qualname__"):
        return Location(str(item.__module__), str(item.__qualname__))
    msg = (
        f"{where}: emitted_from entry {item!r} is not a location; use 'module', "
        "'module:function', {'module': ..., 'function': ...} or the function itself."
    )
    raise ValueError(msg)


# -- checking what is given -----------------------------------------------------------


def build_definition(
    cls: type[_D],
    name: Any,
    description: Any,
    *,
    fields: Any,
    schema: Any,
    owner: Any,
    emitted_from: Any,
    example: Any,
    additional_fields: Any,
) -> _D:
    """Check and build a definition (version 0), and compile its checks.

    The arguments are those of :meth:`~eventtracking.metadata.Registry.register`. With
    ``emitted_from`` None, the location is the first caller outside this package.
    Raises ValueError naming the problem.
    """
    kind = "event type" if cls is EventType else "context type"
    if not isinstance(name, str) or not name:
        msg = f"A {kind} needs a non-empty name (a str), got {name!r}."
        raise ValueError(msg)
    unsafe = unsafe_characters(name)
    if unsafe:
        msg = (
            f"The {kind} name {name!r} holds a control character or line break "
            f"({', '.join(repr(char) for char in unsafe)}); names must be printable "
            "text."
        )
        raise ValueError(msg)
    where = f"{kind} {name!r}"
    if not isinstance(description, str):
        msg = f"{where}: description must be text, got {description!r}."
        raise ValueError(msg)
    if owner is not None and not isinstance(owner, str):
        msg = f"{where}: owner must be text or None, got {owner!r}."
        raise ValueError(msg)
    if not isinstance(additional_fields, bool):
        msg = f"{where}: additional_fields must be True or False, got {additional_fields!r}."
        raise ValueError(msg)
    if schema is not None:
        if fields is not None:
            msg = (
                f"{where}: give either fields or a full JSON schema, not both; the "
                "catalogue derives the field table from the schema."
            )
            raise ValueError(msg)
        if not isinstance(schema, Mapping):
            msg = f"{where}: schema must be a JSON Schema mapping, got {schema!r}."
            raise ValueError(msg)
        schema = to_json_form(schema)
        specs = fields_from_schema(schema)
    else:
        specs = normalise_fields(fields, where=where)
    if emitted_from is None:
        locations: tuple[Location, ...] = _caller_location()
    else:
        locations = parse_locations(emitted_from, where=where)
    definition = cls(
        name=name,
        version=0,
        description=description,
        fields=specs,
        schema=schema,
        owner=owner,
        emitted_from=locations,
        example=None if example is None else to_json_form(example),
        additional_fields=additional_fields,
    )
    if schema is not None:
        try:
            # Only compiling tells whether a JSON Schema can be compiled: do it now,
            # so that a bad one is refused here, once, and not on every emit.
            # Field lists need no such step: FieldSpec bounds what they can hold.
            definition.checks  # noqa: B018
        except ValueError as exc:
            msg = f"{where}: {exc}"
            raise ValueError(msg) from None
    return definition


def _caller_location() -> tuple[Location, ...]:
    """The first frame outside this package: where ``register`` was called from."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__") or "?"
        if module != _PACKAGE and not module.startswith(_PACKAGE + "."):
            code = frame.f_code
            function = getattr(code, "co_qualname", code.co_name)
            return (Location(module, None if function == "<module>" else function),)
        frame = frame.f_back  # type: ignore[assignment]
    return ()
