"""Tests for eventtracking.metadata.discovery: drafts from observed events."""

from __future__ import annotations

import datetime
import decimal
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from hang_support import GENEROUS, call_within

from eventtracking import metadata
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.metadata import Registry, load
from eventtracking.metadata.discovery import (
    MAX_EXAMPLE_SIZE,
    MAX_NAME_LENGTH,
    MAX_PATH_LENGTH,
    EventObserver,
    infer_type,
)
from eventtracking.tracker import Tracker

UTC = datetime.timezone.utc

CHECKOUTS = [
    {
        "order_id": 1,
        "cart": {
            "items": [{"sku": "a-1", "qty": 1}, {"sku": "b-2", "qty": 2, "gift": True}],
            "total": decimal.Decimal("3.50"),
        },
        "placed_at": datetime.datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
        "coupon": None,
    },
    {
        "order_id": 2,
        "cart": {"items": [{"sku": "c-3", "qty": 1.5}], "total": decimal.Decimal("1.00")},
        "placed_at": datetime.datetime(2024, 3, 2, 12, 0, tzinfo=UTC),
        "coupon": "SPRING",
    },
    {
        "order_id": 3,
        "cart": {"items": [], "total": decimal.Decimal("0")},
        "placed_at": datetime.datetime(2024, 3, 3, 12, 0, tzinfo=UTC),
    },
]


def _observe(events: list[tuple[str, Any]], **options: Any) -> tuple[Tracker, EventObserver]:
    tracker = Tracker({"memory": InMemoryBackend()})
    observer = EventObserver.attach(tracker, **options)
    tracker.enter_context("request", {"user_id": 5, "session": "s"})
    for name, data in events:
        tracker.emit(name, data)
    return tracker, observer


def test_drafts_describe_nested_objects_and_arrays_of_objects() -> None:
    """Nested dicts become dotted paths and array items ``[]`` paths, each with a type."""
    _, observer = _observe([("shop.checkout", data) for data in CHECKOUTS])
    draft = observer.drafts()["event_types"]["shop.checkout"]
    table = {path: (spec["type"], spec["required"]) for path, spec in draft["fields"].items()}
    assert table == {
        "order_id": ("integer", True),
        "cart": ("object", True),
        "cart.items": ("array", True),
        "cart.items[]": ("object", True),
        "cart.items[].sku": ("string", True),
        "cart.items[].qty": ("number", True),  # 1 and 1.5: integer widens to number
        "cart.items[].gift": ("boolean", False),  # in one item of three
        "cart.total": ("decimal", True),
        "placed_at": ("datetime", True),
        "coupon": (["string", "null"], False),  # missing from the third event
    }


def test_drafts_carry_seen_counts_examples_and_context_keys() -> None:
    """Asked for examples, each type and field records a few real values."""
    tracker, observer = _observe([("shop.checkout", data) for data in CHECKOUTS], examples=True)
    draft = observer.drafts()["event_types"]["shop.checkout"]
    stored = tracker.get_backend("memory").events
    assert draft["observed"]["seen"] == 3
    assert draft["observed"]["first_seen"] == stored[0]["timestamp"].isoformat()
    assert draft["observed"]["last_seen"] == stored[-1]["timestamp"].isoformat()
    assert draft["observed"]["context_keys"] == ["session", "user_id"]
    assert draft["fields"]["cart.items[].sku"]["observed"] == {
        "seen": 3,
        "examples": ["a-1", "b-2", "c-3"],
    }
    assert draft["fields"]["coupon"]["observed"] == {"seen": 2, "examples": [None, "SPRING"]}
    assert draft["fields"]["cart.total"]["observed"]["examples"] == ["3.50", "1.00", "0"]
    # The example event is the first one seen, in its JSON form.
    assert draft["example"]["placed_at"] == "2024-03-01T12:00:00+00:00"
    assert draft["example"]["cart"]["items"][1] == {"sku": "b-2", "qty": 2, "gift": True}
    assert draft["description"] == ""
    assert observer.stats() == {"events": 3, "types": 1, "types_not_recorded": 0}


def test_drafts_load_and_then_validate_the_observed_events_without_findings(
    tmp_path: Path,
) -> None:
    """Written as YAML, loaded and enforced strictly, the drafts accept what was seen."""
    _, observer = _observe(
        [("shop.checkout", data) for data in CHECKOUTS] + [("page.view", {"url": "/"})]
    )
    path = observer.write_drafts(tmp_path / "drafts.yaml")
    text = path.read_text()
    assert text.startswith("# Drafted by eventtracking from 4 observed events (2 types)")
    registry = Registry()
    load(path, registry=registry)
    assert sorted(d.name for d in registry.event_types()) == ["page.view", "shop.checkout"]
    tracker = Tracker({"memory": InMemoryBackend()})
    metadata.set_validation(tracker, "strict", registry=registry)
    for data in CHECKOUTS:
        tracker.emit("shop.checkout", data)
    tracker.emit("page.view", {"url": "/other"})
    assert tracker.stats()["validation"]["findings"] == {}


def test_json_drafts_match_the_yaml_ones(tmp_path: Path) -> None:
    """Both file formats hold the same drafts."""
    _, observer = _observe([("page.view", {"url": "/", "ms": 3})])
    as_json = json.loads(observer.write_drafts(tmp_path / "d.json").read_text())
    as_yaml = yaml.safe_load(observer.write_drafts(tmp_path / "d.yml").read_text())
    assert as_json == as_yaml == observer.drafts()
    with pytest.raises(ValueError, match=r"not 'd\.txt'"):
        observer.write_drafts(tmp_path / "d.txt")


def test_registered_types_are_left_out_of_the_drafts_unless_asked_for() -> None:
    """With a registry, only undocumented names are drafted by default."""
    _, observer = _observe([("page.view", {"url": "/"}), ("known", {"x": 1})])
    registry = Registry()
    registry.register("known")
    assert list(observer.drafts(registry)["event_types"]) == ["page.view"]
    assert list(observer.drafts(registry, include_registered=True)["event_types"]) == [
        "known",
        "page.view",
    ]


def test_limits_bound_memory_and_are_counted() -> None:
    """Types over max_types and fields over max_fields are counted, not recorded."""
    tracker = Tracker({})
    observer = EventObserver.attach(tracker, max_types=2, max_fields=3)
    for name in ("a", "b", "c"):
        tracker.emit(name, {"w": 1, "x": 2, "y": 3, "z": 4, "bad.key": 5})
    drafts = observer.drafts()["event_types"]
    assert list(drafts) == ["a", "b"]
    assert list(drafts["a"]["fields"]) == ["w", "x", "y"]
    assert drafts["a"]["observed"]["fields_not_recorded"] == 2
    assert observer.stats()["types_not_recorded"] == 1


def test_drafts_hold_no_real_values_unless_examples_are_asked_for(tmp_path: Path) -> None:
    """Observed values are real users' data: by default no draft, file or memory has them."""
    data = {"email": "ada@example.org", "score": 9731, "tags": ["private-tag"]}
    _, observer = _observe([("user.signup", data)])
    draft = observer.drafts()["event_types"]["user.signup"]
    assert "example" not in draft
    assert all("examples" not in spec["observed"] for spec in draft["fields"].values())
    assert draft["fields"]["email"]["type"] == "string"
    for suffix in ("yaml", "json"):
        text = observer.write_drafts(tmp_path / f"drafts.{suffix}").read_text()
        for secret in ("ada@example.org", "9731", "private-tag"):
            assert secret not in text
    assert "ada@example.org" not in repr(observer.__dict__)
    _, with_examples = _observe([("user.signup", data)], examples=True)
    opted_in = with_examples.drafts()["event_types"]["user.signup"]
    assert opted_in["example"] == data
    assert opted_in["fields"]["email"]["observed"]["examples"] == ["ada@example.org"]


def test_examples_are_capped_in_size(tmp_path: Path) -> None:
    """A huge event keeps a bounded example: long text cut, long lists and dicts shortened."""
    huge = {
        "text": "x" * 1_000_000,
        "items": list(range(100_000)),
        "number": 10**5000,
        "wide": {f"k{number}": number for number in range(10_000)},
    }
    _, observer = _observe([("big", huge)], examples=True)
    draft = observer.drafts()["event_types"]["big"]
    assert len(json.dumps(draft["example"])) <= MAX_EXAMPLE_SIZE
    assert draft["example"]["text"].startswith("xxx")
    assert draft["example"]["items"][:3] == [0, 1, 2]
    examples = [spec["observed"].get("examples", []) for spec in draft["fields"].values()]
    assert all(len(json.dumps(example)) <= 90 for values in examples for example in values)
    assert draft["fields"]["text"]["observed"]["examples"][0].endswith("...")
    assert len(draft["fields"]["number"]["observed"]["examples"][0]) <= 80


def test_overlong_names_and_keys_are_counted_not_recorded() -> None:
    """Names and keys longer than the caps cost a count each, not memory."""
    tracker = Tracker({})
    observer = EventObserver.attach(tracker)
    long_name = "n" * (MAX_NAME_LENGTH + 1)
    tracker.emit(long_name, {"x": 1})
    tracker.emit("ok", {"k" * (MAX_PATH_LENGTH + 1): 1, "x": 2})
    tracker.enter_context("c" * (MAX_PATH_LENGTH + 1), {"c" * (MAX_PATH_LENGTH + 1): 1})
    tracker.emit("ok", {"x": 3})
    drafts = observer.drafts()["event_types"]
    assert list(drafts) == ["ok"]
    assert list(drafts["ok"]["fields"]) == ["x"]
    assert drafts["ok"]["observed"]["fields_not_recorded"] == 1
    assert drafts["ok"]["observed"]["context_keys"] == []
    assert observer.stats()["types_not_recorded"] == 1


def test_drafts_are_written_privately_through_a_temporary_file(tmp_path: Path) -> None:
    """Drafts are 0600 whatever the umask, replace an old file whole, and leave no temp."""
    _, observer = _observe([("page.view", {"url": "/"})])
    target = tmp_path / "drafts.yaml"
    target.write_text("old")
    target.chmod(0o644)
    old = os.umask(0o000)
    try:
        path = observer.write_drafts(target)
    finally:
        os.umask(old)
    assert path == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "page.view" in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drafts.yaml"]


def test_write_drafts_never_follows_a_symlink(tmp_path: Path) -> None:
    """A symlink at the destination is refused: the file it points at is left alone."""
    _, observer = _observe([("page.view", {"url": "/"})])
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "drafts.yaml"
    link.symlink_to(victim)
    with pytest.raises(ValueError, match=r"drafts\.yaml.*symbolic link"):
        observer.write_drafts(link)
    assert victim.read_text() == "precious"
    assert link.is_symlink()


def test_close_writes_the_drafts_to_the_configured_path(tmp_path: Path) -> None:
    """Given ``path``, the drafts are written when the tracker closes (Django's exit)."""
    target = tmp_path / "out" / "drafts.json"
    tracker = Tracker({"observer": EventObserver(path=target)})
    tracker.emit("page.view", {"url": "/"})
    tracker.close()
    assert list(json.loads(target.read_text())["event_types"]) == ["page.view"]


def test_metadata_records_and_references_are_not_observed_as_data() -> None:
    """Documentation records and the reference key never show up in drafts."""
    registry = Registry()
    registry.register("page.view", fields={"url": "string"})
    tracker = Tracker({})
    observer = EventObserver.attach(tracker)
    metadata.set_validation(tracker, "warn", registry=registry)
    tracker.emit("page.view", {"url": "/"})
    drafts = observer.drafts(include_registered=True)["event_types"]
    assert list(drafts) == ["page.view"]
    assert drafts["page.view"]["observed"]["context_keys"] == []


def test_cyclic_data_is_observed_at_once_and_never_blocks_other_emits() -> None:
    """A dict or list that holds itself, many times over, is walked once per object.

    The observer walks under its lock: a walk of 2**100 (or 8**12) steps would stop
    every emitting thread, not only the one that emitted the cycle.
    """
    tracker = Tracker({})
    observer = EventObserver.attach(tracker)
    loop: dict[str, Any] = {}
    loop["a"] = loop
    loop["b"] = loop
    wide: dict[str, Any] = {"n": 1}
    for key in "cdefghij":
        wide[key] = wide
    items: list[Any] = [1]
    items.extend([items] * 49)
    # Each its own name: the cap on fields per type must not be what stops the walk.
    for name, data in (("loop", loop), ("wide", wide), ("items", {"items": items})):
        assert call_within(GENEROUS, tracker.emit, name, data).error is None
    assert call_within(GENEROUS, tracker.emit, "after", {"x": 1}).error is None
    drafts = observer.drafts()["event_types"]
    assert drafts["after"]["fields"]["x"]["type"] == "integer"
    assert sorted(drafts["wide"]["fields"]) == ["c", "d", "e", "f", "g", "h", "i", "j", "n"]
    assert drafts["items"]["fields"]["items[]"]["type"] == ["integer", "array"]
    assert observer.stats()["events"] == 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "null"),
        (True, "boolean"),
        (3, "integer"),
        (1.5, "number"),
        ("x", "string"),
        ({}, "object"),
        ((1,), "array"),
        (datetime.date(2024, 1, 1), "date"),
        (object(), "any"),
    ],
)
def test_infer_type_names_every_kind_of_value(value: Any, expected: str) -> None:
    """Each Python value maps to one field type."""
    assert infer_type(value) == expected


class Unreadable(dict):  # type: ignore[type-arg]
    """A dict whose items() raises."""

    def items(self) -> Any:
        raise RuntimeError("no items")


class NoStr:
    """A key whose str() and repr() raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


def test_data_whose_own_methods_raise_is_counted_not_a_failure() -> None:
    """Unreadable mappings and keys that cannot be written never make the observer fail."""
    tracker = Tracker({})
    observer = EventObserver.attach(tracker)
    tracker.enter_context("odd", {NoStr(): 1})
    tracker.emit("odd", {"a": Unreadable(x=1), NoStr(): 2, "b": 3})
    tracker.emit("odd", Unreadable(y=2))
    assert tracker.stats()["failed"] == {}
    draft = observer.drafts()["event_types"]["odd"]
    assert draft["fields"]["a"]["type"] == "object"
    assert draft["fields"]["b"]["type"] == "integer"
    assert draft["observed"]["seen"] == 2
    assert draft["observed"]["fields_not_recorded"] == 2
