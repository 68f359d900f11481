"""Tests for eventtracking.metadata.definitions: fields, records, ids and schemas."""

from __future__ import annotations

import datetime
import json

import pytest

from eventtracking.metadata.definitions import (
    EventType,
    FieldSpec,
    example_event,
    fields_from_schema,
    normalise_fields,
    parse_locations,
)


def _paths(specs: tuple[FieldSpec, ...]) -> list[str]:
    return [spec.path for spec in specs]


def test_nested_mapping_and_dotted_paths_give_the_same_fields() -> None:
    """Nested ``fields`` and dotted paths are two spellings of one definition."""
    dotted = normalise_fields(
        {"name": "string", "address.postal_code": "string", "address.country": "string"},
        where="t",
    )
    nested = normalise_fields(
        {
            "name": "string",
            "address": {"fields": {"postal_code": "string", "country": "string"}},
        },
        where="t",
    )
    assert dotted == nested
    assert _paths(dotted) == ["name", "address", "address.postal_code", "address.country"]
    assert dotted[1].types == ("object",)


def test_undeclared_parents_are_added_as_required_only_when_a_child_is() -> None:
    """An implied parent is an object (or array) that is required iff a child is."""
    specs = normalise_fields(
        {
            "a.b": {"type": "string", "required": False},
            "items[].sku": "string",
        },
        where="t",
    )
    by_path = {spec.path: spec for spec in specs}
    assert by_path["a"].required is False
    assert by_path["a"].types == ("object",)
    assert by_path["items"].types == ("array",)
    assert by_path["items[]"].types == ("object",)
    assert by_path["items"].required is True


def test_array_items_spec_becomes_a_bracket_path() -> None:
    """``items`` on an array field documents each item under ``path[]``."""
    specs = normalise_fields(
        {"tags": {"type": "array", "items": "string", "description": "Labels."}}, where="t"
    )
    assert [(s.path, s.types) for s in specs] == [("tags", ("array",)), ("tags[]", ("string",))]
    assert specs[0].description == "Labels."


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"url": "text"}, "'url' has type ['text']; use one or more of any, array"),
        ({"url": {"type": "string", "colour": "red"}}, "unknown keys ['colour']"),
        ({"url": {"type": "string", "required": "yes"}}, "required='yes'"),
        ({"a..b": "string"}, "Field path 'a..b' is not valid"),
        ({"a": "string", "a.b": "string"}, "field 'a' has type 'string' but 'a.b'"),
        ("url", "fields must be a mapping"),
    ],
)
def test_bad_fields_raise_naming_the_field_and_the_fix(fields: object, fragment: str) -> None:
    """Every mistake in a field raises ValueError naming the field and the valid choices."""
    with pytest.raises(ValueError, match="t: ") as info:
        normalise_fields(fields, where="t")
    assert fragment in str(info.value)


def test_id_depends_on_content_not_on_version() -> None:
    """The id hashes what the record says, so it is stable across versions and processes."""
    specs = normalise_fields({"url": "string"}, where="t")
    first = EventType(name="a", version=1, description="d", fields=specs)
    again = EventType(name="a", version=7, description="d", fields=specs)
    other = EventType(name="a", version=1, description="e", fields=specs)
    assert first.id == again.id
    assert first.id != other.id
    assert len(first.id) == 16
    assert int(first.id, 16) >= 0


def test_record_is_json_and_holds_everything_an_analyst_needs() -> None:
    """The record names the type, version, fields, schema and where it is emitted."""
    specs = normalise_fields({"url": {"type": "string", "description": "Page URL."}}, where="t")
    definition = EventType(
        name="navigation.request",
        version=2,
        description="A page was opened.",
        fields=specs,
        owner="web",
        emitted_from=parse_locations("app.views:show", where="t"),
        example={"url": "/x", "when": datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)},
    )
    record = json.loads(json.dumps(definition.record))
    assert record["kind"] == "event_type"
    assert record["id"] == definition.id
    assert record["version"] == 2
    assert record["owner"] == "web"
    assert record["emitted_from"] == [{"module": "app.views", "function": "show"}]
    assert record["fields"] == {
        "url": {"type": "string", "description": "Page URL.", "required": True}
    }
    assert record["schema"]["properties"]["url"] == {"type": "string", "description": "Page URL."}
    assert record["schema"]["additionalProperties"] is False
    assert record["schema_source"] == "fields"
    assert record["example"]["when"] == "2024-01-02T00:00:00+00:00"


def test_schema_from_fields_closes_documented_objects_only() -> None:
    """Objects with documented keys reject others; an object documented bare stays open."""
    specs = normalise_fields(
        {"address.zip": "string", "meta": "object", "when": ["datetime", "null"]}, where="t"
    )
    schema = EventType(name="a", version=1, fields=specs).json_schema
    assert schema["properties"]["address"]["additionalProperties"] is False
    assert "additionalProperties" not in schema["properties"]["meta"]
    assert schema["properties"]["when"] == {"type": ["string", "null"], "format": "date-time"}
    open_schema = EventType(name="a", version=1, fields=specs, additional_fields=True).json_schema
    assert "additionalProperties" not in open_schema
    assert "additionalProperties" not in open_schema["properties"]["address"]


def test_fields_from_schema_reads_nested_properties_and_items() -> None:
    """A full JSON Schema yields a field table for the catalogue, nested data included."""
    schema = {
        "type": "object",
        "required": ["cart"],
        "properties": {
            "cart": {
                "type": "array",
                "description": "Lines.",
                "items": {
                    "type": "object",
                    "required": ["sku"],
                    "properties": {
                        "sku": {"type": "string"},
                        "at": {"type": "string", "format": "date-time"},
                    },
                },
            }
        },
    }
    specs = fields_from_schema(schema)
    table = {s.path: (s.types, s.required, s.description) for s in specs}
    assert table == {
        "cart": (("array",), True, "Lines."),
        "cart[]": (("object",), True, ""),
        "cart[].sku": (("string",), True, ""),
        "cart[].at": (("datetime",), False, ""),
    }


def test_locations_accept_strings_mappings_and_functions() -> None:
    """``emitted_from`` is read from 'module', 'module:function', dicts and functions."""
    locations = parse_locations(
        [
            "pkg.mod",
            "pkg.mod:func",
            {"module": "m", "function": "f"},
            test_id_depends_on_content_not_on_version,
        ],
        where="t",
    )
    assert [str(location) for location in locations] == [
        "pkg.mod",
        "pkg.mod.func",
        "m.f",
        f"{__name__}.test_id_depends_on_content_not_on_version",
    ]
    with pytest.raises(ValueError, match="emitted_from entry 3 is not a location"):
        parse_locations(3, where="t")


def test_example_event_is_built_from_fields_when_none_is_given() -> None:
    """Without an example, the catalogue's sample event is built from the field types."""
    specs = normalise_fields(
        {"name": "string", "address.country": "string", "items[].qty": "integer"}, where="t"
    )
    definition = EventType(name="a", version=1, fields=specs)
    event = example_event(definition)
    assert event["name"] == "a"
    assert event["context"] == {"eventtracking_type": definition.id}
    assert event["data"] == {"name": "...", "address": {"country": "..."}, "items": [{"qty": 0}]}
