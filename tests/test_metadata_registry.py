"""Tests for eventtracking.metadata.registry: versions, locations and thread safety."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from eventtracking import metadata
from eventtracking.metadata import Registry


@pytest.fixture
def default_registry() -> Iterator[Registry]:
    """The process-wide registry, emptied for the test and emptied again after it."""
    registry = metadata.get_registry()
    registry.clear()
    yield registry
    registry.clear()


def test_registering_a_different_definition_adds_a_version_and_keeps_the_old() -> None:
    """A changed definition is version n + 1 and current; version n stays readable."""
    registry = Registry()
    first = registry.register("cart.add", "Added.", fields={"sku": "string"})
    second = registry.register("cart.add", "Added.", fields={"sku": "string", "qty": "integer"})
    assert (first.version, second.version) == (1, 2)
    assert first.id != second.id
    assert registry.get("cart.add") is second
    assert registry.get("cart.add", version=1) is first
    assert [d.version for d in registry.versions("cart.add")] == [1, 2]
    assert registry.by_id(first.id) is first
    assert [f.path for f in registry.get("cart.add", 1).fields] == ["sku"]


def test_registering_the_same_definition_again_changes_nothing() -> None:
    """Re-registration (a module imported twice) returns the existing version."""
    registry = Registry()

    def declare() -> metadata.EventType:
        return registry.register("a", "d", fields={"x": "string"}, emitted_from="m:f")

    first = declare()
    generation = registry.generation
    assert declare() is first
    assert registry.generation == generation
    assert len(registry.versions("a")) == 1


def test_going_back_to_an_earlier_definition_makes_it_current_without_a_new_version() -> None:
    """A rollback re-registers an old definition: its version becomes current again."""
    registry = Registry()
    one = registry.register("a", "one", emitted_from="m")
    registry.register("a", "two", emitted_from="m")
    assert registry.register("a", "one", emitted_from="m") is one
    assert registry.get("a") is one
    assert len(registry.versions("a")) == 2


def test_pinned_versions_must_not_clash() -> None:
    """``version=`` pins a number; a different definition under a taken number is refused."""
    registry = Registry()
    registry.register("a", "one", version=3, emitted_from="m")
    with pytest.raises(ValueError, match="'a' version 3 is already registered"):
        registry.register("a", "two", version=3, emitted_from="m")
    assert registry.register("a", "two", emitted_from="m").version == 4
    with pytest.raises(ValueError, match="version must be a positive int"):
        registry.register("b", version=0)


def test_emitted_from_is_captured_from_the_calling_function() -> None:
    """Without ``emitted_from``, the module and function that registered are recorded."""
    registry = Registry()
    definition = registry.register("a", "d")
    assert [loc.to_dict() for loc in definition.emitted_from] == [
        {
            "module": __name__,
            "function": "test_emitted_from_is_captured_from_the_calling_function",
        }
    ]


def test_module_level_helpers_use_the_default_registry(default_registry: Registry) -> None:
    """``register``, ``register_context`` and ``emits`` fill the process-wide registry."""

    @metadata.emits("video.play", "Played.", fields={"video_id": "string"})
    def play() -> str:
        return "played"

    metadata.register("video.pause", "Paused.")
    metadata.register_context("django.context", "Request.", fields={"user_id": "integer"})
    assert play() == "played"
    assert sorted(d.name for d in default_registry.event_types()) == ["video.pause", "video.play"]
    location = default_registry.get("video.play").emitted_from[0]
    assert (location.module, location.function) == (
        __name__,
        "test_module_level_helpers_use_the_default_registry.<locals>.play",
    )
    pause = default_registry.get("video.pause").emitted_from[0]
    assert pause.function == "test_module_level_helpers_use_the_default_registry"
    context = default_registry.get_context("django.context")
    assert context.record["kind"] == "context_type"
    assert context.record["fields"]["user_id"]["type"] == "integer"


def test_unknown_names_raise_key_error_naming_them() -> None:
    """Reading an unknown type or version raises KeyError with the name in it."""
    registry = Registry()
    registry.register("a")
    with pytest.raises(KeyError, match="No event type 'b' is registered"):
        registry.get("b")
    with pytest.raises(KeyError, match="No event type 'a' version 9"):
        registry.get("a", 9)
    with pytest.raises(KeyError, match="nope"):
        registry.by_id("nope")
    assert registry.current("b") is None
    assert "a" in registry
    assert "b" not in registry


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": ""}, "needs a non-empty name"),
        ({"name": "a", "description": 3}, "description must be text"),
        ({"name": "a", "owner": 5}, "owner must be text"),
        ({"name": "a", "fields": {"x": "string"}, "schema": {}}, "either fields or a full"),
        ({"name": "a", "schema": []}, "schema must be a JSON Schema mapping"),
        ({"name": "a", "validation": "loud"}, "Validation mode 'loud'"),
        ({"name": "a", "additional_fields": "yes"}, "additional_fields must be True or False"),
    ],
)
def test_bad_registrations_raise_a_clear_error(kwargs: dict[str, object], fragment: str) -> None:
    """Each invalid argument raises ValueError naming it; nothing is registered."""
    registry = Registry()
    with pytest.raises(ValueError, match=fragment):
        registry.register(**kwargs)  # type: ignore[arg-type]
    assert len(registry) == 0


def test_per_type_validation_mode_is_kept_by_name() -> None:
    """``validation=`` on register sets the type's mode; set_validation(None) clears it."""
    registry = Registry()
    registry.register("a", validation="strict")
    assert registry.validation_mode("a") == "strict"
    registry.set_validation("a", None)
    assert registry.validation_mode("a") is None


def test_all_versions_lists_events_then_contexts_in_order() -> None:
    """``all_versions`` is sorted: event types, then context types, by name and version."""
    registry = Registry()
    registry.register("b", "1")
    registry.register("a", "1")
    registry.register("b", "2")
    registry.register_context("ctx", "c")
    assert [(d.kind, d.name, d.version) for d in registry.all_versions()] == [
        ("event_type", "a", 1),
        ("event_type", "b", 1),
        ("event_type", "b", 2),
        ("context_type", "ctx", 1),
    ]


def test_concurrent_registrations_give_unique_consecutive_versions() -> None:
    """Eight threads registering 25 definitions each of one name get versions 1..200."""
    registry = Registry()
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        start.wait(timeout=10)
        for n in range(25):
            registry.register("shared", f"{worker}-{n}", emitted_from="m")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    versions = registry.versions("shared")
    assert [d.version for d in versions] == list(range(1, 201))
    assert len({d.id for d in versions}) == 200
    assert len({d.description for d in versions}) == 200


def test_listeners_hear_about_changes_and_are_held_weakly() -> None:
    """Subscribed objects are told of each change and may be garbage collected."""
    registry = Registry()

    class Listener:
        calls = 0

        def registry_changed(self) -> None:
            Listener.calls += 1

    listener = Listener()
    registry.subscribe(listener)
    registry.register("a")
    registry.register("a")
    assert Listener.calls == 1
    del listener
    import gc

    gc.collect()
    registry.register("b")
    assert Listener.calls == 1


def test_one_emits_decorator_on_two_functions_records_each() -> None:
    """Reusing a decorator object registers each decorated function as its own location."""
    registry = Registry()
    decorator = metadata.emits("a", "d", registry=registry)

    @decorator
    def first() -> None:
        pass

    @decorator
    def second() -> None:
        pass

    assert [str(d.emitted_from[0]).rsplit(".", 1)[-1] for d in registry.versions("a")] == [
        "first",
        "second",
    ]
