"""What the checks of documented data find, and the thorough test that finds it all.

A :class:`Finding` is one problem with an event. :func:`diagnose_into` walks data
along the tree of its documented fields (:func:`field_tree`) and lists every problem,
deciding with ``isinstance`` and parsing; it runs only when the compiled fast test of
:mod:`eventtracking.metadata._compile` said False.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventtracking.metadata._fields import FieldSpec
from eventtracking.metadata._jsonform import elements, entries, key_text, unserialisable_paths

__all__ = [
    "MAX_FINDINGS",
    "Checks",
    "FieldNode",
    "Finding",
    "diagnose_into",
    "field_tree",
    "never",
    "unserialisable_findings",
]

#: At most this many findings are listed per event.
MAX_FINDINGS = 20


@dataclass(frozen=True)
class Finding:
    """One problem with an event: its ``kind``, the ``path`` it concerns, and a message."""

    kind: str
    path: str
    message: str


Checks = tuple[
    Callable[[Any], bool], Callable[[Any], bool] | None, Callable[[Any], list["Finding"]]
]
"""``(check, shallow, diagnose)``: see :func:`compile_fields`."""


def never(data: Any) -> bool:
    """The check of what always needs diagnosing."""
    return False


@dataclass
class FieldNode:
    """One documented field of the tree both tests walk: its types, whether it is
    required, its documented keys (objects) and the type of its items (arrays)."""

    types: frozenset[str]
    required: bool = True
    children: dict[str, FieldNode] = field(default_factory=dict)
    items: FieldNode | None = None


def field_tree(fields: Sequence[FieldSpec]) -> FieldNode:
    """The tree of ``fields`` (parents first), rooted at ``data``."""
    root = FieldNode(frozenset({"object"}))
    nodes = {"": root}
    for spec in fields:
        if spec.path.endswith("[]"):
            parent_path, key = spec.path[:-2], None
        else:
            parent_path, _, key = spec.path.rpartition(".")
        node = FieldNode(frozenset(spec.types), spec.required)
        parent = nodes[parent_path]
        if key is None:
            parent.items = node
        else:
            parent.children[key] = node
        nodes[spec.path] = node
    return root


def _parses(parse: Callable[[Any], object], *errors: type[Exception]) -> Callable[[Any], bool]:
    """A test that is true when ``parse(value)`` raises none of ``errors``."""

    def accepts(value: Any) -> bool:
        try:
            parse(value)
        except errors:
            return False
        return True

    return accepts


_is_iso_datetime = _parses(datetime.datetime.fromisoformat, TypeError, ValueError)
_is_iso_date = _parses(datetime.date.fromisoformat, TypeError, ValueError)
_is_uuid_text = _parses(uuid.UUID, TypeError, ValueError, AttributeError)
_is_decimal_text = _parses(decimal.Decimal, TypeError, ValueError, ArithmeticError)


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


def diagnose_into(
    node: FieldNode, value: Any, path: str, additional: bool, out: list[Finding]
) -> None:
    """Append to ``out`` every finding about ``value`` at ``path``, documented by
    ``node``, up to :data:`MAX_FINDINGS`."""
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
        pairs = entries(value)
        if pairs is None:
            unserialisable_findings(value, path, out)
            return
        # Keys as the JSON writers write them: a key whose own methods raise (or that
        # equals a documented key only by a custom __eq__) is never compared.
        present = {key_text(key): item for key, item in pairs}
        for key, child in node.children.items():
            if key in present:
                diagnose_into(child, present[key], f"{path}.{key}", additional, out)
            elif child.required:
                out.append(Finding("missing_field", f"{path}.{key}", f"{path}.{key} is missing"))
        for key, item in present.items():
            if key in node.children:
                continue
            if node.children and not additional:
                out.append(
                    Finding("extra_field", f"{path}.{key}", f"{path}.{key} is not documented")
                )
            unserialisable_findings(item, f"{path}.{key}", out)
        return
    if isinstance(value, (list, tuple)) and node.items is not None:
        items = elements(value)
        if items is None:
            unserialisable_findings(value, path, out)
            return
        for index, item in enumerate(items):
            diagnose_into(node.items, item, f"{path}[{index}]", additional, out)
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
