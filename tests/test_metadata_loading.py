"""Tests for eventtracking.metadata.loading: YAML, JSON and settings mappings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.metadata import Registry, load
from eventtracking.metadata.catalog import build_catalog

YAML = """\
event_types:
  navigation.request:
    description: A learner opened a page.
    owner: web-team
    emitted_from: [lms.views:courseware]
    validation: strict
    fields:
      url: {type: string, description: The page's full URL.}
      referrer: {type: [string, "null"], required: false}
  address.create:
    description: An address was saved.
    fields:
      name: string
      address:
        fields:
          postal_code: string
          country: string
context_types:
  django.context:
    description: Added to every event of a request.
    fields:
      user_id: {type: [integer, "null"], description: The logged-in user.}
"""


def test_yaml_file_registers_events_contexts_and_modes(tmp_path: Path) -> None:
    """A YAML file documents event types, nested fields, context types and modes."""
    path = tmp_path / "events.yaml"
    path.write_text(YAML)
    registry = Registry()
    loaded = registry.load(path)
    assert [d.name for d in loaded] == ["navigation.request", "address.create", "django.context"]
    nav = registry.get("navigation.request")
    assert nav.owner == "web-team"
    assert [str(loc) for loc in nav.emitted_from] == ["lms.views.courseware"]
    assert {f.path: f.types for f in nav.fields} == {
        "url": ("string",),
        "referrer": ("string", "null"),
    }
    assert registry.validation_mode("navigation.request") == "strict"
    address = registry.get("address.create")
    assert [f.path for f in address.fields] == [
        "name",
        "address",
        "address.postal_code",
        "address.country",
    ]
    assert registry.get_context("django.context").fields[0].description == "The logged-in user."


def test_json_file_and_settings_mapping_give_the_same_definitions(tmp_path: Path) -> None:
    """The same content as JSON or as a settings dict registers identical ids."""
    import yaml

    data = yaml.safe_load(YAML)
    path = tmp_path / "events.json"
    path.write_text(json.dumps(data))
    from_file, from_settings = Registry(), Registry()
    load(path, registry=from_file)
    load(data, registry=from_settings)
    assert [d.id for d in from_file.all_versions()] == [d.id for d in from_settings.all_versions()]
    # Files say where events are emitted, or nothing: never the loader's own caller.
    assert from_settings.get("address.create").emitted_from == ()


def test_a_catalogue_loads_back_with_its_whole_history() -> None:
    """The JSON catalogue is a loadable file: versions and ids come back as they were."""
    original = Registry()
    original.register("a", "one", fields={"x": "string"}, emitted_from="m:f")
    original.register("a", "two", fields={"x": "string", "y": "integer"}, emitted_from="m:f")
    original.register_context("ctx", "c", fields={"k": "string"}, emitted_from="m")
    catalog = json.loads(json.dumps(build_catalog(original)))
    copy = Registry()
    load(catalog, registry=copy)
    assert [(d.name, d.version, d.id) for d in copy.all_versions()] == [
        (d.name, d.version, d.id) for d in original.all_versions()
    ]
    assert copy.get("a").version == 2


def test_history_loaded_first_keeps_version_numbers_stable_across_deployments() -> None:
    """With the committed catalogue loaded first, code gets the next version number."""
    last_deploy = Registry()
    last_deploy.register("a", "old", emitted_from="m")
    registry = Registry()
    load(build_catalog(last_deploy), registry=registry)
    code = registry.register("a", "new", emitted_from="m")
    assert code.version == 2
    assert registry.get("a") is code
    assert registry.register("a", "old", emitted_from="m").version == 1


def test_history_loaded_after_conflicting_code_raises_with_the_fix() -> None:
    """A pinned version already taken by another definition names the fix."""
    last_deploy = Registry()
    last_deploy.register("a", "old", emitted_from="m")
    registry = Registry()
    registry.register("a", "new", emitted_from="m")
    with pytest.raises(ImproperlyConfigured, match="version 1 is already registered") as info:
        load(build_catalog(last_deploy), registry=registry)
    assert "before code registers the same types" in str(info.value)


def test_an_edited_record_with_a_stale_id_is_refused() -> None:
    """A record whose content no longer hashes to its id says so and how to fix it."""
    registry = Registry()
    registry.register("a", "one", emitted_from="m")
    catalog = build_catalog(registry)
    catalog["event_types"][0]["description"] = "edited"
    with pytest.raises(ImproperlyConfigured, match="was edited after it was written"):
        load(catalog, registry=Registry())


def test_observed_keys_written_by_the_observer_are_ignored() -> None:
    """Drafts carry ``observed`` details; loading them ignores those keys."""
    registry = Registry()
    load(
        {
            "event_types": {
                "a": {
                    "description": "d",
                    "observed": {"seen": 3},
                    "fields": {"x": {"type": "string", "observed": {"seen": 3}}},
                }
            }
        },
        registry=registry,
    )
    assert registry.get("a").fields[0].path == "x"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"events": {}}, "unknown top-level keys ['events']"),
        ({"event_types": {"a": {"colour": 1}}}, "event_types.a has unknown keys ['colour']"),
        ({"event_types": {"a": {"fields": {"x": "text"}}}}, "'x' has type ['text']"),
        ({"event_types": [{"description": "no name"}]}, "needs a 'name'"),
        ({"event_types": {"a": {"validation": "loud"}}}, "Validation mode 'loud'"),
        ({"context_types": {"c": {"schema": {}}}}, "context_types.c has unknown keys"),
        ([1], "Cannot load event documentation from 1"),
    ],
)
def test_bad_sources_raise_improperly_configured(data: object, fragment: str) -> None:
    """A mistake names the source and entry; nothing of the source is registered."""
    registry = Registry()
    with pytest.raises(ImproperlyConfigured) as info:
        load(data, registry=registry)
    assert fragment in str(info.value)
    assert registry.all_versions() == []


def test_an_error_late_in_a_file_registers_nothing_from_it() -> None:
    """Entries are all checked before any is registered."""
    registry = Registry()
    with pytest.raises(ImproperlyConfigured):
        load(
            {"event_types": {"good": {"description": "ok"}, "bad": {"fields": {"x": 1}}}},
            registry=registry,
        )
    assert "good" not in registry


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    """Unreadable, unparsable or wrongly named files raise naming the path."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("event_types: [unclosed\n")
    with pytest.raises(ImproperlyConfigured, match=r"broken\.yaml is not valid YAML"):
        load(broken, registry=Registry())
    with pytest.raises(ImproperlyConfigured, match=r"unknown suffix '\.txt'"):
        load(tmp_path / "events.txt", registry=Registry())
    with pytest.raises(ImproperlyConfigured, match="Cannot read event documentation file"):
        load(tmp_path / "missing.json", registry=Registry())
