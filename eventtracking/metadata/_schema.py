"""Checking data documented by a full JSON Schema, with fastjsonschema.

A definition given as a JSON Schema rather than fields is compiled by fastjsonschema
(the ``[schema]`` extra), with every reference that is not local refused, since
resolving it would fetch a document while emitting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventtracking.metadata._findings import Checks, Finding, never, unserialisable_findings
from eventtracking.metadata._jsonform import is_plain, to_json_form

__all__ = ["compile_schema", "remote_references"]

#: Rules of a JSON Schema reported as their own kinds of finding.
_RULES = {
    "required": "missing_field",
    "additionalProperties": "extra_field",
    "type": "wrong_type",
}


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
        return never, None, lambda data: [Finding("invalid_schema", "schema", text)]
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
