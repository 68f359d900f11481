"""Tests for eventtracking.metadata._compile: the compiled field checks, whatever the keys."""

from __future__ import annotations

from typing import Any

import pytest

from eventtracking import metadata
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.exceptions import ValidationError
from eventtracking.metadata import FieldSpec, Registry
from eventtracking.metadata.definitions import MAX_FIELD_DEPTH
from eventtracking.tracker import Tracker


def strict(registry: Registry) -> tuple[Tracker, InMemoryBackend]:
    backend = InMemoryBackend()
    tracker = Tracker({"memory": backend})
    metadata.set_validation(tracker, "strict", registry=registry)
    return tracker, backend


def validation(tracker: Tracker) -> dict[str, Any]:
    return tracker.stats()["validation"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("key", ["a\\n", "\\g<0>", "x\\1", "q\\\\", "\\u0041"])
def test_keys_with_backslashes_are_checked_as_written(key: str) -> None:
    """A backslash in a key is a backslash: the check reads exactly the documented key.

    Building the check with a substitution template read ``a\\n`` as ``a`` and a newline,
    so strict mode accepted an event missing the documented key.
    """
    registry = Registry()
    registry.register("k", fields={key: "string"})
    tracker, backend = strict(registry)
    tracker.emit("k", {key: "ok"})
    impostor = key.encode("ascii").decode("unicode_escape") if key != "\\g<0>" else "g<0>"
    with pytest.raises(ValidationError, match="is missing"):
        tracker.emit("k", {impostor: "not the documented key"})
    assert len(backend.events) == 1
    assert validation(tracker)["errors"] == 0


def test_keys_named_like_the_checks_own_variables_are_read_correctly() -> None:
    """Keys such as ``_v1`` or ``_i3`` are only text: they never stand for a variable."""
    names = [f"_{prefix}{number}" for prefix in "vic" for number in range(8)]
    fields: dict[str, Any] = {
        name: {"type": "array", "items": {"fields": {inner: "integer" for inner in names}}}
        for name in names
    }
    registry = Registry()
    registry.register("k", fields=fields)
    tracker, backend = strict(registry)
    good = {name: [{inner: 1 for inner in names}] for name in names}
    tracker.emit("k", good)
    for name in names:
        bad = {**good, name: [{**good[name][0], "_v0": "text"}]}
        with pytest.raises(ValidationError, match=rf"data\.{name}\[0\]\._v0 is str"):
            tracker.emit("k", bad)
    assert len(backend.events) == 1


@pytest.mark.parametrize(
    "key", ["a\u200bb", "naïve", "a'b\"c", "\\x00", "{data}", "x) or (True", "'"]
)
def test_any_printable_key_compiles_once_at_registration(key: str) -> None:
    """Keys whose repr holds escapes or quotes compile; emits never compile again.

    A key with a zero-width space made every emit fail to build its check, log an error
    and deliver the event unchecked.
    """
    registry = Registry()
    registry.register("k", fields={key: "integer"})
    tracker, backend = strict(registry)
    for _ in range(3):
        tracker.emit("k", {key: 1})
    with pytest.raises(ValidationError, match="is str"):
        tracker.emit("k", {key: "one"})
    with pytest.raises(ValidationError, match="is missing"):
        tracker.emit("k", {})
    assert validation(tracker)["errors"] == 0
    assert len(backend.events) == 3


@pytest.mark.parametrize(
    "path", ["a\n", "a\r", "a\x00", "a\x1b[31m", "a\x7f", "a\x85", "a\u2028", "tags[]\n", "b.\tc"]
)
def test_control_characters_in_field_names_are_refused(path: str) -> None:
    """A field name with a control character or a line break fails with a clear error."""
    with pytest.raises(ValueError, match="control character") as info:
        FieldSpec(path)
    assert repr(path) in str(info.value)
    with pytest.raises(ValueError, match="control character"):
        Registry().register("k", fields={path: "string"})


def test_items_of_nested_arrays_are_checked() -> None:
    """``a[][]`` documents the items of the inner arrays: a wrong one is found.

    The fast check compared only the classes of the outer items (lists), so strict mode
    accepted ``[["x"]]`` for integers.
    """
    registry = Registry()
    registry.register("m", fields={"a[][]": "integer"})
    tracker, backend = strict(registry)
    tracker.emit("m", {"a": [[1, 2], []]})
    with pytest.raises(ValidationError, match=r"data\.a\[0\]\[0\] is str"):
        tracker.emit("m", {"a": [["x"]]})
    assert len(backend.events) == 1


def test_a_definition_too_deep_to_compile_fails_at_registration() -> None:
    """Nesting deeper than Python can compile is refused when registered, not on emit."""
    deep = ".".join(["a"] * 300)
    registry = Registry()
    with pytest.raises(ValueError, match=r"event type 'deep'.*nested 300 levels deep"):
        registry.register("deep", fields={deep: "string"})
    assert "deep" not in registry


@pytest.mark.parametrize(
    "path",
    [
        ".".join(["a"] * MAX_FIELD_DEPTH),
        ".".join(["a[]"] * (MAX_FIELD_DEPTH // 2 - 1)) + ".b",
        "a" + "[]" * (MAX_FIELD_DEPTH - 1),
    ],
)
def test_the_deepest_allowed_definitions_compile_and_check(path: str) -> None:
    """Objects, arrays of objects and arrays of arrays nested to the limit all compile."""
    registry = Registry()
    registry.register("deep", fields={path: "integer"})
    check, _, diagnose = registry.get("deep").checks

    def build(value: Any) -> Any:
        for part in reversed(path.split(".")):
            key = part.split("[", 1)[0]
            for _ in range(part.count("[]")):
                value = [value]
            value = {key: value}
        return value

    assert check(build(1)) is True
    assert check(build("one")) is False
    assert [finding.kind for finding in diagnose(build("one"))] == ["wrong_type"]


@pytest.mark.parametrize(
    "reference",
    [
        "https://schemas.example.org/address.json",
        "file:///etc/passwd",
        "other.json#/$defs/a",
        "//evil.example/x",
        "FILE:///etc/hosts",
    ],
)
def test_references_outside_the_schema_are_refused_at_registration(reference: str) -> None:
    """Only local ``$ref`` (``#...``) is allowed: others would be fetched at the first emit."""
    schema = {
        "type": "object",
        "properties": {"address": {"$ref": reference}},
    }
    registry = Registry()
    with pytest.raises(ValueError, match="only local references") as info:
        registry.register("k", schema=schema)
    assert reference in str(info.value)
    assert "k" not in registry


def test_local_references_resolve_without_fetching() -> None:
    """A schema whose ``$ref`` points inside itself is compiled and checked as usual."""
    schema = {
        "$id": "https://schemas.example.org/root.json",
        "type": "object",
        "$defs": {"code": {"type": "string", "pattern": "^[0-9]{5}$"}},
        "properties": {"postal_code": {"$ref": "#/$defs/code"}},
        "required": ["postal_code"],
    }
    registry = Registry()
    registry.register("k", schema=schema)
    tracker, backend = strict(registry)
    tracker.emit("k", {"postal_code": "90210"})
    with pytest.raises(ValidationError):
        tracker.emit("k", {"postal_code": "9021"})
    assert len(backend.events) == 1


@pytest.mark.parametrize("name", ["page\nview", "page\r", "a\x00b", "x\u2028y", "\x1b[2Jclear"])
def test_type_names_with_control_characters_are_refused(name: str) -> None:
    """Event and context type names are printable text: they go into catalogues and logs."""
    registry = Registry()
    with pytest.raises(ValueError, match="control character or line break"):
        registry.register(name)
    with pytest.raises(ValueError, match="control character or line break"):
        registry.register_context(name)
