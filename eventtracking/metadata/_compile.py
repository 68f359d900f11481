"""Checking data against documented fields: a compiled fast test and a thorough one.

Each definition gets a fast ``check(data) -> bool``, Python source generated from the
fields and compiled once, which may say False for valid data but never True for
invalid data, and a thorough ``diagnose(data) -> findings`` that runs only when
``check`` said False. Why, and why not fastjsonschema for everything: see
``docs/metadata.rst`` ("How it stays cheap"); it is used for definitions given as a
full JSON Schema (:mod:`eventtracking.metadata._schema`). The thorough test and the
findings are in :mod:`eventtracking.metadata._findings`; this module writes the fast
test and picks the checks of a definition.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eventtracking.metadata._fields import FieldSpec
from eventtracking.metadata._findings import (
    MAX_FINDINGS,
    FieldNode,
    Finding,
    diagnose_into,
    field_tree,
)
from eventtracking.metadata._jsonform import is_plain

__all__ = ["compile_fields"]

# Compared with values read for ``any`` fields: reading them proves the key is there.
_ABSENT = object()

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
    """Generates the source of one ``check`` function.

    Keys appear in the source only as ``repr()`` literals, which Python reads back as
    the same text whatever the key holds; nothing is ever substituted into generated
    text, so no key can change the meaning of the code around it.
    """

    def __init__(self, additional: bool, walk: bool) -> None:
        self.additional = additional
        # Whether values of undocumented shape (``any``, objects without documented
        # keys, undocumented keys) are walked to prove they can be written as JSON.
        self.walk = walk
        self.constants: dict[str, Any] = {"_plain": is_plain, "_absent": _ABSENT}
        self.names = itertools.count()
        self.needs_plain_check = False
        #: Whether the generated test walks any value with ``_plain``.
        self.walks = False

    def constant(self, value: Any) -> str:
        name = f"_c{next(self.names)}"
        self.constants[name] = value
        return name

    def variable(self) -> str:
        return f"_v{next(self.names)}"

    def plain(self, expr: str) -> str:
        self.walks = True
        return f"_plain({expr})"

    def node(self, node: FieldNode, expr: str, first: str | None = None) -> str:
        """An expression, true when the value of ``expr`` surely matches ``node``.

        ``first`` is what to write where the value is read first, when that differs
        from ``expr`` (an assignment expression that binds ``expr``). Every form below
        reads the value first at its start, which Python also evaluates first.
        """
        first = expr if first is None else first
        if "any" in node.types:
            # Anything is accepted, but it must still be writable as JSON.
            return self.plain(first) if self.walk else f"{first} is not _absent"
        classes = tuple(dict.fromkeys(c for name in node.types for c in _EXACT[name]))
        if len(classes) == 1:
            test_of = f"type({{}}) is {self.constant(classes[0])}"
        else:
            test_of = f"type({{}}) in {self.constant(frozenset(classes))}"
        if "object" in node.types:
            object_test = self.object_body(node, expr)
            if node.types == {"object"}:
                return f"(type({first}) is dict and {object_test})"
            return (
                f"((type({first}) is dict and {object_test}) or "
                f"(type({expr}) is not dict and {test_of.format(expr)}))"
            )
        if "array" in node.types and node.items is not None:
            items = node.items
            if (
                items.children
                or items.items is not None
                or "any" in items.types
                or "object" in items.types
            ):
                item = f"_i{next(self.names)}"
                array = f"all({self.node(items, item)} for {item} in {expr})"
            else:
                # Scalar items: compare the set of their classes, all in C.
                allowed = frozenset(c for name in items.types for c in _EXACT[name])
                array = f"{self.constant(allowed)}.issuperset(map(type, {expr}))"
            if node.types == {"array"}:
                return f"({test_of.format(first)} and {array})"
            return f"({test_of.format(first)} and (type({expr}) not in (list, tuple) or {array}))"
        return test_of.format(first)

    @staticmethod
    def reads_once(node: FieldNode) -> bool:
        """Whether the test of ``node`` reads its value only once."""
        if "any" in node.types:
            return True
        return "object" not in node.types and not ("array" in node.types and node.items)

    def object_body(self, node: FieldNode, expr: str) -> str:
        if not node.children:
            return self.plain(expr) if self.walk else "True"
        # Required keys are read by subscription: a missing one raises KeyError, which
        # the generated function turns into False. With every required key present,
        # the length proves that no undocumented key is there.
        required = [key for key, child in node.children.items() if child.required]
        optional = [key for key, child in node.children.items() if not child.required]
        parts = []
        if self.additional:
            self.needs_plain_check = self.walk
        else:
            count = " + ".join([str(len(required)), *(f"({key!r} in {expr})" for key in optional)])
            parts.append(f"len({expr}) == {count}")
        for key, child in node.children.items():
            read = f"{expr}[{key!r}]"
            if self.reads_once(child):
                # A scalar is read where it is tested.
                test = self.node(child, read)
            else:
                # An object or array is bound where its test first reads it: one lookup.
                var = self.variable()
                test = self.node(child, var, first=f"({var} := {read})")
            if child.required:
                parts.append(test)
            else:
                parts.append(f"({key!r} not in {expr} or {test})")
        return " and ".join(parts) if parts else "True"


def compile_fields(
    fields: Sequence[FieldSpec], additional: bool
) -> tuple[Callable[[Any], bool], Callable[[Any], bool] | None, Callable[[Any], list[Finding]]]:
    """Return ``(check, shallow, diagnose)`` for data documented by ``fields``.

    ``check`` and ``diagnose`` are described in the module documentation. ``shallow``
    is ``check`` without walking the values whose shape is not documented (``any``,
    objects without documented keys, undocumented keys), or None when there are none:
    the validator's ``warn`` mode uses it for most events, to stay cheap.
    """
    root = field_tree(fields)
    try:
        check, walks = _compile(root, additional, walk=True)
        shallow = _compile(root, additional, walk=False)[0] if walks else None
    except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:
        # Python's compiler has limits (nesting depth, above all). MAX_FIELD_DEPTH
        # keeps definitions well within them; this says why if one still is not.
        msg = (
            f"its fields cannot be compiled into a check ({type(exc).__name__}: {exc}); "
            "nest fewer levels, or document the deep part as an 'object' or 'any' field."
        )
        raise ValueError(msg) from None

    def diagnose(data: Any) -> list[Finding]:
        found: list[Finding] = []
        diagnose_into(root, data, "data", additional, found)
        return found[:MAX_FINDINGS]

    return check, shallow, diagnose


def _compile(
    root: FieldNode, additional: bool, *, walk: bool
) -> tuple[Callable[[Any], bool], bool]:
    """The compiled test, and whether it walks any value."""
    writer = _Writer(additional, walk)
    body = writer.node(root, "data")
    if writer.needs_plain_check:
        # Undocumented keys are allowed, so their values are not type-tested above.
        body = f"{body} and {writer.plain('data')}"
    # Constants and builtins as default arguments: local reads are the cheapest.
    constants = dict(writer.constants, type=type, len=len, dict=dict)
    signature = ", ".join(["data", *(f"{name}={name}" for name in constants)])
    source = (
        f"def check({signature}):\n"
        "    try:\n"
        f"        return bool({body})\n"
        # Any failure (a missing key, a wrong type, a key whose __eq__ raises) sends the
        # data to diagnose, which decides.
        "    except Exception:\n"
        "        return False\n"
    )
    namespace = dict(constants)
    exec(compile(source, "<eventtracking field check>", "exec"), namespace)
    check: Callable[[Any], bool] = namespace["check"]
    return check, writer.walks
