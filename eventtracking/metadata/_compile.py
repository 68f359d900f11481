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
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventtracking.metadata._jsonform import (
    elements,
    entries,
    is_plain,
    key_text,
    to_json_form,
    unserialisable_paths,
)
from eventtracking.metadata.definitions import Definition, FieldSpec

__all__ = [
    "Checks",
    "Finding",
    "compile_definition",
    "compile_fields",
    "compile_schema",
    "remote_references",
    "unserialisable_findings",
]

#: At most this many findings are listed per event.
MAX_FINDINGS = 20

# Compared with values read for ``any`` fields: reading them proves the key is there.
_ABSENT = object()


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

#: Rules of a JSON Schema reported as their own kinds of finding.
_RULES = {
    "required": "missing_field",
    "additionalProperties": "extra_field",
    "type": "wrong_type",
}


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
        pairs = entries(value)
        if pairs is None:
            unserialisable_findings(value, path, out)
            return
        # Keys as the JSON writers write them: a key whose own methods raise (or that
        # equals a documented key only by a custom __eq__) is never compared.
        present = {key_text(key): item for key, item in pairs}
        for key, child in node.children.items():
            if key in present:
                _diagnose(child, present[key], f"{path}.{key}", additional, out)
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

    def node(self, node: _Node, expr: str, first: str | None = None) -> str:
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
            return (
                f"({test_of.format(first)} and "
                f"(type({expr}) not in (list, tuple) or {array}))"
            )
        return test_of.format(first)

    @staticmethod
    def reads_once(node: _Node) -> bool:
        """Whether the test of ``node`` reads its value only once."""
        if "any" in node.types:
            return True
        return "object" not in node.types and not ("array" in node.types and node.items)

    def object_body(self, node: _Node, expr: str) -> str:
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
    root = _tree(fields)
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
        _diagnose(root, data, "data", additional, found)
        return found[:MAX_FINDINGS]

    return check, shallow, diagnose


def _compile(root: _Node, additional: bool, *, walk: bool) -> tuple[Callable[[Any], bool], bool]:
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


# -- definitions ----------------------------------------------------------------------


def compile_definition(definition: Definition) -> Checks:
    """``(check, shallow, diagnose)`` for a definition's data, from its fields or schema.

    Raises ValueError saying why when the definition cannot be compiled, so that the
    registry refuses it when it is registered rather than on every emit.
    """
    if definition.schema is not None:
        return compile_schema(definition.name, definition.json_schema)
    return compile_fields(definition.fields, definition.additional_fields)


def remote_references(schema: Any, path: str = "schema") -> list[str]:
    """Where ``schema`` has a ``$ref`` that is not a local one (``#...``), with its value.

    A JSON Schema library resolves any other reference by fetching it, over the network
    or from a ``file://`` path, when the schema is compiled: at the first emit of the
    type, in the process that serves users.
    """
    found: list[str] = []
    _find_references(schema, path, found)
    return found


def _find_references(node: Any, path: str, found: list[str]) -> None:
    if isinstance(node, Mapping):
        reference = node.get("$ref")
        if isinstance(reference, str) and not reference.startswith("#"):
            found.append(f"{path}.$ref = {reference!r}")
        for key, child in node.items():
            if isinstance(child, (Mapping, list)):
                _find_references(child, f"{path}.{key}", found)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            _find_references(child, f"{path}[{index}]", found)


def _refuse(uri: str) -> Any:
    msg = f"the reference {uri!r} is not local; only '#...' references are resolved."
    raise ValueError(msg)


#: Every scheme urllib can fetch from answers with an error instead of fetching.
_NO_FETCHING = {scheme: _refuse for scheme in ("", "http", "https", "file", "ftp", "data")}


def compile_schema(name: str, schema: Mapping[str, Any]) -> Checks:
    """``(check, shallow, diagnose)`` for data documented by a full JSON Schema.

    Raises ValueError when the schema has a reference that is not local, or cannot be
    compiled. Without fastjsonschema installed, the checks report an
    ``invalid_schema`` finding naming the extra to install.
    """
    remote = remote_references(schema)
    if remote:
        msg = (
            f"its JSON Schema refers to documents outside itself ({'; '.join(remote)}); "
            "only local references ('#/$defs/...') are allowed, since others would be "
            "fetched while emitting. Copy the referenced definitions into the schema."
        )
        raise ValueError(msg)
    try:
        import fastjsonschema
    except ImportError:
        text = (
            f"{name!r} is documented by a JSON Schema, and checking it needs "
            "fastjsonschema: pip install 'event-tracking[schema]'"
        )
        return _never, None, lambda data: [Finding("invalid_schema", "schema", text)]
    try:
        # fastjsonschema rewrites references in place: give it a copy.
        compiled = fastjsonschema.compile(to_json_form(schema), handlers=_NO_FETCHING)
    except Exception as exc:
        msg = f"its JSON Schema cannot be compiled: {exc}"
        raise ValueError(msg) from None
    failure = fastjsonschema.JsonSchemaException

    def shallow(data: Any) -> bool:
        try:
            compiled(data)
        except Exception:
            # Invalid, or data whose own methods raise: diagnose decides.
            return False
        return True

    def check(data: Any) -> bool:
        # A schema may leave values untyped: those must still be writable as JSON.
        return shallow(data) and is_plain(data)

    def diagnose(data: Any) -> list[Finding]:
        findings: list[Finding] = []
        unserialisable_findings(data, "data", findings)
        # The schema describes the written JSON, so dates are checked as strings.
        try:
            compiled(to_json_form(data))
        except failure as exc:
            rule = getattr(exc, "rule", None)
            path = getattr(exc, "name", "data")
            kind = _RULES.get(str(rule), "invalid_value")
            findings.append(Finding(kind, str(path), str(exc)))
        except Exception as exc:
            # A schema rule that fails on the JSON form itself (a format checker, say).
            text = f"checking data against the schema failed: {type(exc).__name__}: {exc}"
            findings.append(Finding("invalid_value", "data", text))
        return findings

    return check, shallow, diagnose


def _never(data: Any) -> bool:
    return False
