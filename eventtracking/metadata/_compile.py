"""Checking data against documented fields: a compiled fast test and a thorough one.

Each definition gets two functions:

* ``check(data) -> bool``: Python source generated from the fields and compiled once.
  It uses exact type tests (``type(v) is str``) and key-set comparisons, so a valid
  event costs a few hundred nanoseconds. It may say False for valid data (a ``str``
  subclass, a date given as text), never True for invalid data;
* ``diagnose(data) -> findings``: a plain recursive walk that runs only when ``check``
  said False. It decides with ``isinstance`` and parsing, and lists every problem.

A general JSON Schema library (fastjsonschema) costs about 1.3 us for five fields on
the benchmark machine, more than the whole budget of ``warn``; it is still used for
definitions given as a full JSON Schema (see :mod:`eventtracking.metadata.validation`).
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventtracking.metadata._jsonform import is_plain, unserialisable_paths
from eventtracking.metadata.definitions import FieldSpec

__all__ = ["Finding", "compile_fields", "unserialisable_findings"]

#: At most this many findings are listed per event.
MAX_FINDINGS = 20


@dataclass(frozen=True)
class Finding:
    """One problem with an event: its ``kind``, the ``path`` it concerns, and a message."""

    kind: str
    path: str
    message: str


@dataclass
class _Node:
    types: frozenset[str]
    required: bool = True
    children: dict[str, _Node] = field(default_factory=dict)
    items: _Node | None = None


def _tree(fields: Sequence[FieldSpec]) -> _Node:
    root = _Node(frozenset({"object"}))
    nodes = {"": root}
    for spec in fields:
        if spec.path.endswith("[]"):
            parent_path, key = spec.path[:-2], None
        else:
            parent_path, _, key = spec.path.rpartition(".")
        node = _Node(frozenset(spec.types), spec.required)
        parent = nodes[parent_path]
        if key is None:
            parent.items = node
        else:
            parent.children[key] = node
        nodes[spec.path] = node
    return root


# -- the thorough test ----------------------------------------------------------------


def _is_iso_datetime(value: Any) -> bool:
    try:
        datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_iso_date(value: Any) -> bool:
    try:
        datetime.date.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_uuid_text(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _is_decimal_text(value: Any) -> bool:
    try:
        decimal.Decimal(value)
    except (TypeError, ValueError, ArithmeticError):
        return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


_ACCEPTS: Mapping[str, Callable[[Any], bool]] = {
    "any": lambda value: True,
    "array": lambda value: isinstance(value, (list, tuple)),
    "boolean": lambda value: isinstance(value, bool),
    "date": lambda value: (
        (isinstance(value, datetime.date) and not isinstance(value, datetime.datetime))
        or (isinstance(value, str) and _is_iso_date(value))
    ),
    "datetime": lambda value: (
        isinstance(value, datetime.datetime) or (isinstance(value, str) and _is_iso_datetime(value))
    ),
    "decimal": lambda value: (
        isinstance(value, decimal.Decimal) or (isinstance(value, str) and _is_decimal_text(value))
    ),
    "integer": _is_int,
    "null": lambda value: value is None,
    "number": _is_number,
    "object": lambda value: isinstance(value, Mapping),
    "string": lambda value: isinstance(value, str),
    "uuid": lambda value: (
        isinstance(value, uuid.UUID) or (isinstance(value, str) and _is_uuid_text(value))
    ),
}


def _type_text(types: frozenset[str]) -> str:
    return " or ".join(sorted(types))


def _diagnose(node: _Node, value: Any, path: str, additional: bool, out: list[Finding]) -> None:
    if len(out) >= MAX_FINDINGS:
        return
    if not any(_ACCEPTS[name](value) for name in node.types):
        out.append(
            Finding(
                "wrong_type",
                path,
                f"{path} is {type(value).__name__} {_short(value)}, documented as "
                f"{_type_text(node.types)}",
            )
        )
        unserialisable_findings(value, path, out)
        return
    if isinstance(value, Mapping) and (node.children or "object" in node.types):
        for key, child in node.children.items():
            if key in value:
                _diagnose(child, value[key], f"{path}.{key}", additional, out)
            elif child.required:
                out.append(Finding("missing_field", f"{path}.{key}", f"{path}.{key} is missing"))
        for key, item in value.items():
            if key in node.children:
                continue
            if node.children and not additional:
                out.append(
                    Finding("extra_field", f"{path}.{key}", f"{path}.{key} is not documented")
                )
            unserialisable_findings(item, f"{path}.{key}", out)
        return
    if isinstance(value, (list, tuple)) and node.items is not None:
        for index, item in enumerate(value):
            _diagnose(node.items, item, f"{path}[{index}]", additional, out)
        return
    unserialisable_findings(value, path, out)


def unserialisable_findings(value: Any, path: str, out: list[Finding]) -> None:
    """Append an ``unserialisable_value`` finding for each such value inside ``value``."""
    for where, kind in unserialisable_paths(value, path):
        if kind == "cycle":
            what = "is a reference cycle"
        elif kind == "too deep":
            what = "is nested too deep"
        else:
            what = f"is of type {kind}, which has no JSON form (it would be written as its repr)"
        out.append(Finding("unserialisable_value", where, f"{where} {what}"))


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return "(unrepresentable)"
    return text if len(text) <= 40 else text[:37] + "..."


# -- the compiled fast test -----------------------------------------------------------

#: Exact classes the fast test accepts for each type; anything else goes to diagnose.
_EXACT: Mapping[str, tuple[type, ...]] = {
    "array": (list, tuple),
    "boolean": (bool,),
    "date": (datetime.date,),
    "datetime": (datetime.datetime,),
    "decimal": (decimal.Decimal,),
    "integer": (int,),
    "null": (type(None),),
    "number": (int, float, decimal.Decimal),
    "object": (dict,),
    "string": (str,),
    "uuid": (uuid.UUID,),
}


class _Writer:
    """Generates the source of one ``check`` function."""

    def __init__(self, additional: bool) -> None:
        self.additional = additional
        self.constants: dict[str, Any] = {"_plain": is_plain}
        self.names = itertools.count()
        self.needs_plain_check = False

    def constant(self, value: Any) -> str:
        name = f"_c{next(self.names)}"
        self.constants[name] = value
        return name

    def variable(self) -> str:
        return f"_v{next(self.names)}"

    def node(self, node: _Node, expr: str) -> str:
        """An expression, true when the value of ``expr`` surely matches ``node``."""
        if "any" in node.types:
            # Anything is accepted, but it must still be writable as JSON.
            return f"_plain({expr})"
        classes = tuple(dict.fromkeys(c for name in node.types for c in _EXACT[name]))
        if len(classes) == 1:
            type_test = f"type({expr}) is {self.constant(classes[0])}"
        else:
            type_test = f"type({expr}) in {self.constant(frozenset(classes))}"
        if "object" in node.types:
            object_test = self.object_body(node, expr)
            other = node.types - {"object"}
            if not other:
                return f"(type({expr}) is dict and {object_test})"
            return (
                f"((type({expr}) is dict and {object_test}) or "
                f"(type({expr}) is not dict and {type_test}))"
            )
        if "array" in node.types and node.items is not None:
            item = f"_i{next(self.names)}"
            item_test = self.node(node.items, item)
            array = f"all({item_test} for {item} in {expr})"
            if node.types == {"array"}:
                return f"({type_test} and {array})"
            return f"({type_test} and (type({expr}) not in (list, tuple) or {array}))"
        return type_test

    def object_body(self, node: _Node, expr: str) -> str:
        if not node.children:
            return f"_plain({expr})"
        required = frozenset(key for key, child in node.children.items() if child.required)
        every = frozenset(node.children)
        parts = []
        if self.additional:
            self.needs_plain_check = True
            if required:
                parts.append(f"{self.constant(required)} <= {expr}.keys()")
        elif required == every:
            parts.append(f"{expr}.keys() == {self.constant(every)}")
        else:
            if required:
                parts.append(f"{self.constant(required)} <= {expr}.keys()")
            parts.append(f"{expr}.keys() <= {self.constant(every)}")
        for key, child in node.children.items():
            var = self.variable()
            # Bind the value where the test first reads it, which is also the first
            # thing the test evaluates: one dict lookup per field.
            test = re.sub(
                rf"\b{var}\b", f"({var} := {expr}[{key!r}])", self.node(child, var), count=1
            )
            if child.required:
                parts.append(test)
            else:
                parts.append(f"({key!r} not in {expr} or {test})")
        return " and ".join(parts) if parts else "True"


def compile_fields(
    fields: Sequence[FieldSpec], additional: bool
) -> tuple[Callable[[Any], bool], Callable[[Any], list[Finding]]]:
    """Return ``(check, diagnose)`` for data documented by ``fields`` (see module doc)."""
    root = _tree(fields)
    writer = _Writer(additional)
    body = writer.node(root, "data")
    if writer.needs_plain_check:
        # Undocumented keys are allowed, so their values are not type-tested above.
        body = f"{body} and _plain(data)"
    source = f"def check(data):\n    return bool({body})\n"
    namespace = dict(writer.constants)
    exec(compile(source, "<eventtracking field check>", "exec"), namespace)
    check: Callable[[Any], bool] = namespace["check"]

    def diagnose(data: Any) -> list[Finding]:
        found: list[Finding] = []
        _diagnose(root, data, "data", additional, found)
        return found[:MAX_FINDINGS]

    return check, diagnose
