"""Tests for eventtracking.metadata.validation: modes, findings, references, records."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import logging
import re
import uuid
from typing import Any

import pytest
from hang_support import GENEROUS, call_within

from eventtracking import metadata
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.exceptions import ImproperlyConfigured, ValidationError
from eventtracking.metadata import REFERENCE_KEY, Registry
from eventtracking.metadata.validation import DEEP_EVERY
from eventtracking.tracker import Tracker

FIELDS = {
    "name": {"type": "string", "description": "Who."},
    "address": {
        "fields": {
            "postal_code": "string",
            "country": {"type": "string", "required": False},
        }
    },
    "tags": {"type": "array", "items": "string", "required": False},
}
GOOD = {"name": "Ada", "address": {"postal_code": "90210"}}


class Opaque:
    """A value with no JSON form."""


def _setup(mode: str = "warn", **options: Any) -> tuple[Tracker, InMemoryBackend, Registry]:
    registry = Registry()
    registry.register("address.create", "An address was saved.", fields=FIELDS)
    backend = InMemoryBackend()
    tracker = Tracker({"memory": backend})
    tracker.enter_context("request", {"user_id": 7})
    metadata.set_validation(tracker, mode, registry=registry, **options)
    return tracker, backend, registry


def _findings(tracker: Tracker) -> dict[str, int]:
    return tracker.stats()["validation"]["findings"]  # type: ignore[no-any-return]


# Each case: data (or a name) that yields exactly one kind of finding, and a fragment of
# the message naming the problem.
CASES = [
    ("unregistered_type", "page.view", {"x": 1}, "the type 'page.view' is not registered"),
    ("missing_field", "address.create", {"address": {"postal_code": "1"}}, "data.name is missing"),
    (
        "missing_field",
        "address.create",
        {"name": "a", "address": {}},
        "data.address.postal_code is missing",
    ),
    ("extra_field", "address.create", {**GOOD, "age": 3}, "data.age is not documented"),
    (
        "extra_field",
        "address.create",
        {"name": "a", "address": {"postal_code": "1", "city": "x"}},
        "data.address.city is not documented",
    ),
    (
        "wrong_type",
        "address.create",
        {"name": 5, "address": {"postal_code": "1"}},
        "data.name is int 5, documented as string",
    ),
    (
        "wrong_type",
        "address.create",
        {**GOOD, "tags": ["a", 2]},
        "data.tags[1] is int 2, documented as string",
    ),
]


@pytest.mark.parametrize(("kind", "name", "data", "fragment"), CASES)
def test_warn_counts_logs_and_delivers(
    kind: str, name: str, data: dict[str, Any], fragment: str, caplog: pytest.LogCaptureFixture
) -> None:
    """In warn mode each finding is counted and logged, and the event is still delivered."""
    tracker, backend, _ = _setup("warn")
    with caplog.at_level(logging.WARNING, logger="eventtracking.metadata"):
        tracker.emit(name, data)
    assert _findings(tracker) == {kind: 1}
    assert tracker.stats()["validation"]["invalid_events"] == 1
    assert [event["data"] for event in backend.events] == [data]
    messages = [r.getMessage() for r in caplog.records if r.name == "eventtracking.metadata"]
    assert len(messages) == 1
    assert fragment in messages[0]
    assert repr(name) in messages[0]


@pytest.mark.parametrize(("kind", "name", "data", "fragment"), CASES)
def test_strict_raises_into_the_caller_and_drops_the_event(
    kind: str, name: str, data: dict[str, Any], fragment: str
) -> None:
    """In strict mode each finding raises ValidationError naming it; nothing is delivered."""
    tracker, backend, _ = _setup("strict")
    with pytest.raises(ValidationError) as info:
        tracker.emit(name, data)
    assert fragment in str(info.value)
    assert [finding.kind for finding in info.value.findings] == [kind]  # type: ignore[attr-defined]
    assert info.value.event_name == name  # type: ignore[attr-defined]
    assert backend.events == []
    assert _findings(tracker) == {kind: 1}


@pytest.mark.parametrize("mode", ["warn", "strict"])
def test_unserialisable_values_are_found_in_untyped_and_undocumented_places(mode: str) -> None:
    """A value with no JSON form is reported wherever it is, with its path."""
    registry = Registry()
    registry.register("a", fields={"meta": "object", "anything": "any"})
    backend = InMemoryBackend()
    tracker = Tracker({"memory": backend})
    metadata.set_validation(tracker, mode, registry=registry)
    for data, path in (
        ({"meta": {"deep": [Opaque()]}, "anything": 1}, "data.meta.deep[0]"),
        ({"meta": {}, "anything": Opaque()}, "data.anything"),
    ):
        if mode == "strict":
            with pytest.raises(ValidationError, match=re.escape(f"{path} is of type Opaque")):
                tracker.emit("a", data)
        else:
            tracker.emit("a", dict(data))
            # warn walks undocumented shapes in one event of DEEP_EVERY per name.
            tracker.emit("a", data)
            for _ in range(DEEP_EVERY - 2):
                tracker.emit("a", {"meta": {}, "anything": 1})
    assert _findings(tracker) == {"unserialisable_value": 2}
    assert len(backend.events) == (2 * DEEP_EVERY if mode == "warn" else 0)


def test_warn_walks_undocumented_events_in_samples_and_strict_every_time() -> None:
    """For unregistered types too: warn looks for unserialisable values in samples."""
    counts = {}
    for mode in ("warn", "strict"):
        tracker = Tracker({})
        metadata.set_validation(tracker, mode, registry=Registry())
        for _ in range(DEEP_EVERY + 1):
            with contextlib.suppress(ValidationError):
                tracker.emit("page.view", {"x": Opaque()})
        counts[mode] = _findings(tracker)
    assert counts["warn"] == {"unregistered_type": DEEP_EVERY + 1, "unserialisable_value": 2}
    assert counts["strict"] == {
        "unregistered_type": DEEP_EVERY + 1,
        "unserialisable_value": DEEP_EVERY + 1,
    }


@pytest.mark.parametrize("mode", ["warn", "strict"])
def test_oversized_events_are_found_when_a_limit_is_set(mode: str) -> None:
    """With max_event_size, an event whose JSON is longer is reported with its size."""
    tracker, backend, _ = _setup(mode, max_event_size=300)
    tracker.emit("address.create", GOOD)
    big = {**GOOD, "name": "x" * 400}
    if mode == "strict":
        with pytest.raises(ValidationError, match=r"over max_event_size=300"):
            tracker.emit("address.create", big)
    else:
        tracker.emit("address.create", big)
    assert _findings(tracker) == {"oversized_event": 1}
    assert len(backend.events) == (2 if mode == "warn" else 1)


def test_the_size_of_cyclic_data_is_measured_at_once() -> None:
    """The size check measures a reference cycle by its written form, "<cycle>".

    Measuring it naively takes 2**100 steps for a dict that holds itself twice, and in
    ``warn`` mode the size is measured after the other findings are reported.
    """
    tracker, backend, _ = _setup("warn", max_event_size=100_000)
    loop: dict[str, Any] = {}
    loop["a"] = loop
    loop["b"] = loop
    outcome = call_within(GENEROUS, tracker.emit, "address.create", {**GOOD, "tags": [loop]})
    assert outcome.error is None
    assert len(backend.events) == 1
    # A tag must be a string, and a cycle has no JSON form: both are found.
    assert _findings(tracker) == {"wrong_type": 1, "unserialisable_value": 2}


@pytest.mark.parametrize("mode", ["warn", "strict"])
def test_full_json_schema_reports_rules_and_reads_dates_as_strings(mode: str) -> None:
    """A definition given as a JSON Schema is checked against the written JSON form."""
    registry = Registry()
    registry.register(
        "payment",
        schema={
            "type": "object",
            "required": ["amount", "at"],
            "properties": {
                "amount": {"type": "string", "pattern": "^[0-9]+[.][0-9]{2}$"},
                "at": {"type": "string", "format": "date-time"},
                "currency": {"enum": ["EUR", "USD"]},
            },
            "additionalProperties": False,
        },
    )
    backend = InMemoryBackend()
    tracker = Tracker({"memory": backend})
    metadata.set_validation(tracker, mode, registry=registry)
    now = datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc)
    # A Decimal and a datetime are written as strings, which the schema accepts.
    tracker.emit("payment", {"amount": decimal.Decimal("10.50"), "at": now})
    bad = [
        ({"amount": "1.00"}, "missing_field"),
        ({"amount": "1.00", "at": now, "tip": 1}, "extra_field"),
        ({"amount": 100, "at": now}, "wrong_type"),
        ({"amount": "1.00", "at": now, "currency": "GBP"}, "invalid_value"),
    ]
    for data, _kind in bad:
        if mode == "strict":
            with pytest.raises(ValidationError, match="does not match its documented type"):
                tracker.emit("payment", data)
        else:
            tracker.emit("payment", data)
    assert _findings(tracker) == {kind: 1 for _, kind in bad}
    assert len(backend.events) == (5 if mode == "warn" else 1)


def test_an_invalid_json_schema_is_refused_when_registered() -> None:
    """A schema that cannot be compiled fails at registration, naming the type, and is
    not added; before, every emit of the type tried (and failed) to compile it again."""
    registry = Registry()
    with pytest.raises(ValueError, match="event type 'a': its JSON Schema cannot be compiled"):
        registry.register("a", schema={"type": "no-such-type"})
    assert "a" not in registry


def test_valid_events_pass_even_when_they_leave_the_fast_path() -> None:
    """Dates as text, UUIDs, str subclasses and tuples are valid, with no finding."""

    class Name(str):
        pass

    registry = Registry()
    registry.register(
        "a",
        fields={
            "when": "datetime",
            "day": "date",
            "id": "uuid",
            "price": "decimal",
            "name": "string",
            "tags": {"type": "array", "items": "string"},
            "n": "number",
            "maybe": ["integer", "null"],
        },
    )
    tracker = Tracker({"memory": InMemoryBackend()})
    metadata.set_validation(tracker, "strict", registry=registry)
    for when, day, ident, price in (
        ("2024-01-01T10:00:00+00:00", "2024-01-01", str(uuid.uuid4()), "1.50"),
        (
            datetime.datetime(2024, 1, 1),
            datetime.date(2024, 1, 1),
            uuid.uuid4(),
            decimal.Decimal("2"),
        ),
    ):
        tracker.emit(
            "a",
            {
                "when": when,
                "day": day,
                "id": ident,
                "price": price,
                "name": Name("x"),
                "tags": ("a", "b"),
                "n": decimal.Decimal("1.5"),
                "maybe": None,
            },
        )
    assert tracker.stats()["validation"]["findings"] == {}
    assert tracker.stats()["validation"]["invalid_events"] == 0


def test_strings_that_are_not_dates_are_wrong_types() -> None:
    """A 'datetime' field holding text that is no ISO 8601 date is a wrong type."""
    registry = Registry()
    registry.register("a", fields={"when": "datetime", "id": "uuid"})
    tracker = Tracker({"memory": InMemoryBackend()})
    metadata.set_validation(tracker, "strict", registry=registry)
    with pytest.raises(ValidationError, match=r"data\.when is str 'soon'") as info:
        tracker.emit("a", {"when": "soon", "id": "not-a-uuid"})
    assert [f.path for f in info.value.findings] == ["data.when", "data.id"]  # type: ignore[attr-defined]


def test_off_removes_the_validator_and_events_keep_four_keys() -> None:
    """With validation off the tracker has no validator: events are exactly as before."""
    tracker, backend, _ = _setup("warn")
    assert metadata.set_validation(tracker, "off") is None
    assert tracker.validator is None
    tracker.emit("address.create", {"wrong": Opaque()})
    event = backend.events[0]
    assert sorted(event) == ["context", "data", "name", "timestamp"]
    assert event["context"] == {"user_id": 7}
    assert "validation" not in tracker.stats()
    assert backend.metadata == []


def test_registered_events_carry_their_record_id_and_unregistered_ones_do_not() -> None:
    """The reference is the record id in the context; other events keep their shape."""
    tracker, backend, registry = _setup("warn")
    tracker.emit("address.create", GOOD)
    tracker.emit("page.view", {"x": 1})
    registered, unregistered = backend.events
    assert registered["context"] == {"user_id": 7, REFERENCE_KEY: registry.get("address.create").id}
    assert sorted(unregistered) == ["context", "data", "name", "timestamp"]
    assert unregistered["context"] == {"user_id": 7}
    # The entered context itself is never changed.
    assert tracker.resolve_context() == {"user_id": 7}


def test_the_reference_follows_new_versions() -> None:
    """After a new version is registered, events point at the new record."""
    tracker, backend, registry = _setup("warn")
    tracker.emit("address.create", GOOD)
    second = registry.register("address.create", "v2", fields={**FIELDS, "age": "integer"})
    tracker.emit("address.create", {**GOOD, "age": 3})
    first_ref, second_ref = (event["context"][REFERENCE_KEY] for event in backend.events)
    assert first_ref == registry.get("address.create", 1).id
    assert second_ref == second.id
    assert _findings(tracker) == {}


def test_events_under_the_same_contexts_share_one_annotated_context() -> None:
    """Annotating copies the shared context once per type and contexts, not per event."""
    tracker, _, _ = _setup("warn")
    seen = []
    tracker.routing_backend.register_backend(
        "spy", type("Spy", (), {"mutates_events": False, "send": lambda self, e: seen.append(e)})()
    )
    tracker.emit("address.create", GOOD)
    tracker.emit("address.create", GOOD)
    assert seen[0]["context"] is seen[1]["context"]
    with pytest.raises(TypeError):
        seen[0]["context"]["x"] = 1


def test_annotate_without_validation_only_adds_references() -> None:
    """annotate=True with mode off references and publishes, but finds nothing."""
    tracker, backend, registry = _setup("off", annotate=True)
    tracker.emit("address.create", {"bad": 1})
    tracker.emit("page.view", {})
    assert backend.events[0]["context"][REFERENCE_KEY] == registry.get("address.create").id
    assert _findings(tracker) == {}
    assert [record["name"] for record in backend.metadata] == ["address.create"]


def test_per_type_modes_and_operator_overrides() -> None:
    """Operator ``types`` beat the registry's per-type mode, which beats the default."""
    registry = Registry()
    registry.register("critical", fields={"x": "string"}, validation="strict")
    registry.register("legacy.click", fields={"x": "string"}, validation="strict")
    tracker = Tracker({"memory": InMemoryBackend()})
    metadata.set_validation(
        tracker,
        "warn",
        registry=registry,
        types={"legacy.*": "off", "legacy.click": "warn", "noisy": "off"},
    )
    with pytest.raises(ValidationError):
        tracker.emit("critical", {"x": 1})
    tracker.emit("legacy.click", {"x": 1})  # exact name beats the prefix: warn
    tracker.emit("legacy.scroll", {})  # unregistered, but the prefix turns it off
    tracker.emit("noisy", {})
    tracker.emit("other", {})  # the default: warn
    assert _findings(tracker) == {"wrong_type": 2, "unregistered_type": 1}


def test_warnings_are_rate_limited_but_every_finding_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hundred bad events of one type log one line and count a hundred findings."""
    tracker, backend, _ = _setup("warn")
    with caplog.at_level(logging.WARNING, logger="eventtracking.metadata"):
        for _ in range(100):
            tracker.emit("page.view", {})
    assert _findings(tracker) == {"unregistered_type": 100}
    assert len([r for r in caplog.records if r.name == "eventtracking.metadata"]) == 1
    assert len(backend.events) == 100


def test_a_failing_validator_never_breaks_emit(caplog: pytest.LogCaptureFixture) -> None:
    """An unhashable name makes the validator fail: logged, counted, event delivered."""
    tracker, backend, _ = _setup("strict")
    with caplog.at_level(logging.ERROR, logger="eventtracking.metadata"):
        tracker.emit(["not", "hashable"], {})  # type: ignore[arg-type]
    assert tracker.stats()["validation"]["errors"] == 1
    assert len(backend.events) == 1
    assert "delivered unchecked" in caplog.text


@pytest.mark.parametrize(
    ("setting", "expected_mode"),
    [
        (None, None),
        ("off", None),
        ("warn", "warn"),
        ("strict", "strict"),
        ({"MODE": "strict", "TYPES": {"legacy.*": "off"}}, "strict"),
    ],
)
def test_configure_reads_a_settings_value(setting: Any, expected_mode: str | None) -> None:
    """configure() accepts a mode or a dict, as EVENT_TRACKING_VALIDATION holds."""
    tracker = Tracker({"memory": InMemoryBackend()})
    validator = metadata.configure(tracker, setting, registry=Registry())
    assert tracker.validator is validator
    assert (validator.mode if validator else None) == expected_mode


def test_configure_loads_event_types_before_validating(tmp_path: Any) -> None:
    """``EVENT_TYPES`` in the setting registers definitions (a mapping or files)."""
    registry = Registry()
    tracker = Tracker({"memory": InMemoryBackend()})
    metadata.configure(
        tracker,
        {"MODE": "strict", "EVENT_TYPES": {"event_types": {"a": {"fields": {"x": "string"}}}}},
        registry=registry,
    )
    tracker.emit("a", {"x": "ok"})
    with pytest.raises(ValidationError):
        tracker.emit("a", {"x": 1})


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("loud", "setting is 'loud'; use one of off, warn, strict"),
        ({"MODE": "loud"}, "setting['MODE'] is 'loud'"),
        ({"MOOD": "warn"}, "unknown keys ['MOOD']"),
        ({"TYPES": {"a": "loud"}}, "types['a'] is 'loud'"),
        ({"MAX_EVENT_SIZE": -1}, "max_event_size must be a positive int"),
        (3, "must be a mode"),
    ],
)
def test_configure_rejects_bad_settings(setting: Any, fragment: str) -> None:
    """Bad settings raise ImproperlyConfigured naming the value and the choices."""
    tracker = Tracker({"memory": InMemoryBackend()})
    with pytest.raises(ImproperlyConfigured) as info:
        metadata.configure(tracker, setting, registry=Registry())
    assert fragment in str(info.value)


def test_the_plan_cache_is_bounded_for_names_with_ids_in_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thousands of distinct names never grow the cache past MAX_PLANS; counts stay exact."""
    from eventtracking.metadata import validation

    monkeypatch.setattr(validation, "MAX_PLANS", 8)
    tracker, backend, _ = _setup("warn")
    for n in range(50):
        tracker.emit(f"page.view.{n}", {})
    assert _findings(tracker) == {"unregistered_type": 50}
    assert len(tracker.validator._plans) <= 8  # type: ignore[union-attr]
    assert len(backend.events) == 50


def test_overlong_names_are_checked_without_being_cached_or_flooding_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Names over 1,024 characters (attacker-chosen, say) are checked and counted, but
    no plan keeps them alive, and their warnings share one line a minute, cut short."""
    tracker, backend, _ = _setup("warn")
    with caplog.at_level(logging.WARNING, logger="eventtracking.metadata"):
        for n in range(200):
            tracker.emit(f"{n:04d}" + "x" * 5_000, {"a": 1})
    assert _findings(tracker) == {"unregistered_type": 200}
    assert len(backend.events) == 200
    assert tracker.validator._plans == {}  # type: ignore[union-attr]
    lines = [r.getMessage() for r in caplog.records if r.name == "eventtracking.metadata"]
    assert len(lines) == 1
    assert len(lines[0]) < 2_000


class UnreadableDict(dict):  # type: ignore[type-arg]
    """A dict whose items() and keys() raise, as a broken mapping type might."""

    def items(self) -> Any:
        raise RuntimeError("no items")

    def keys(self) -> Any:
        raise RuntimeError("no keys")


@pytest.mark.parametrize("kind", ["fields", "schema", "unregistered"])
def test_data_whose_own_methods_raise_is_refused_in_strict_mode(kind: str) -> None:
    """Strict mode refuses data it cannot read, with a finding; the validator never fails
    on it (a failing validator lets the event through unchecked)."""
    registry = Registry()
    if kind == "fields":
        registry.register("e", fields={"a": "any"})
    elif kind == "schema":
        registry.register("e", schema={"type": "object", "properties": {"a": {}}})
    backend = InMemoryBackend()
    tracker = Tracker({"memory": backend})
    metadata.set_validation(tracker, "strict", registry=registry, max_event_size=10_000)
    with pytest.raises(ValidationError, match="UnreadableDict"):
        tracker.emit("e", {"a": UnreadableDict(x=1)})
    with pytest.raises(ValidationError):
        tracker.emit("e", UnreadableDict(a=1))
    assert backend.events == []
    assert tracker.stats()["validation"]["errors"] == 0


@pytest.mark.parametrize("mode", ["off", "warn"])
def test_set_validation_refuses_an_unknown_option_in_every_mode(mode: str) -> None:
    """An option Validator does not take raises TypeError naming it and the valid ones,
    whether or not a validator would be installed."""
    t = Tracker({"m": InMemoryBackend()})
    with pytest.raises(TypeError, match=r"'max_size'.*annotate, max_event_size, registry"):
        metadata.set_validation(t, mode, max_size=10)
    assert t.validator is None


def test_set_validation_passes_every_option_to_the_validator() -> None:
    """registry, types, annotate and max_event_size reach the installed Validator."""
    t = Tracker({"m": InMemoryBackend()})
    registry = Registry()
    validator = metadata.set_validation(
        t, "warn", registry=registry, types={"a.*": "off"}, annotate=False, max_event_size=99
    )
    assert validator is not None and t.validator is validator
    assert validator.registry is registry
    assert validator.mode_for("a.b") == "off"
    assert validator.annotate is False
    assert validator.max_event_size == 99
