"""Tests for eventtracking._copy: deep copies that are fast for events and never raise."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections import OrderedDict
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from eventtracking import _copy
from eventtracking._contextstack import FrozenContext
from eventtracking._copy import COPY_STATS, Copier, copy_one, safe_copy
from eventtracking._util.ratelimit import RateLimitedLogger


@pytest.fixture(autouse=True)
def _fresh_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the first warning for every uncopyable type."""
    monkeypatch.setattr(_copy, "_RATE_LIMITED", RateLimitedLogger(_copy.LOG))


class Uncopyable:
    def __deepcopy__(self, memo: Any) -> Any:
        raise TypeError("no copies")


def test_containers_are_copied_all_the_way_down() -> None:
    """Dicts, lists and tuples are new objects at every level; changing the copy leaves
    the original alone."""
    original = {"a": [1, {"b": [2, 3]}], "t": ([4], 5)}
    copied = safe_copy(original)
    assert copied == original
    assert copied is not original
    assert copied["a"] is not original["a"]
    assert copied["a"][1] is not original["a"][1]
    assert copied["t"][0] is not original["t"][0]
    copied["a"][1]["b"].append(99)
    assert original["a"][1]["b"] == [2, 3]


@pytest.mark.parametrize(
    "value",
    [
        "text",
        7,
        2.5,
        True,
        None,
        b"raw",
        1j,
        datetime(2020, 1, 1),
        date(2020, 1, 1),
        time(1, 2),
        timedelta(seconds=3),
        Decimal("1.1"),
        uuid.UUID(int=5),
        frozenset({1}),
    ],
)
def test_immutable_values_are_shared(value: Any) -> None:
    """Immutable scalars are not copied: the copy holds the same object."""
    assert safe_copy({"v": value})["v"] is value


def test_other_objects_go_through_deepcopy() -> None:
    """Other objects (sets, OrderedDicts, custom classes) are deep-copied."""

    class Box:
        def __init__(self) -> None:
            self.items = [1]

    original = {"set": {1, 2}, "ordered": OrderedDict(a=[1]), "box": Box()}
    copied = safe_copy(original)
    assert copied["set"] == {1, 2} and copied["set"] is not original["set"]
    assert copied["ordered"] == original["ordered"]
    assert copied["ordered"]["a"] is not original["ordered"]["a"]
    assert copied["box"].items == [1] and copied["box"] is not original["box"]


def test_frozen_context_comes_out_as_a_plain_dict() -> None:
    """A shared read-only context is copied into an ordinary, mutable dict."""
    copied = safe_copy({"context": FrozenContext({"user": {"id": 1}})})
    assert type(copied["context"]) is dict
    copied["context"]["extra"] = True
    assert copied["context"] == {"user": {"id": 1}, "extra": True}


def test_uncopyable_value_is_shared_warned_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A value whose copy raises is shared as it is, with a warning naming its type and a count."""
    value = Uncopyable()
    before = COPY_STATS.get("uncopyable")
    with caplog.at_level(logging.WARNING, logger="eventtracking._copy"):
        copied = safe_copy({"v": value, "other": [1]})
    assert copied["v"] is value
    assert copied["other"] == [1]
    assert COPY_STATS.get("uncopyable") == before + 1
    assert any("Uncopyable" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(20)
def test_value_reached_by_many_paths_is_copied_once() -> None:
    """A list that holds itself twice, and a value shared at every level, copy in linear
    time, keeping their shape (a copy made per path would take 2**64 steps)."""
    loop: list[Any] = []
    loop.append(loop)
    loop.append(loop)
    copied = safe_copy({"loop": loop})["loop"]
    assert copied is not loop
    assert copied[0] is copied and copied[1] is copied

    shared: Any = [0]
    for _ in range(200):
        shared = [shared, shared]
    copied = safe_copy(shared)
    assert copied[0] is copied[1]
    assert copied[0] is not shared[0]


def test_cycle_through_a_dict_and_a_tuple() -> None:
    """Cycles through dicts and tuples are copied without raising, into new objects."""
    inner: dict[str, Any] = {}
    cyclic = (inner,)
    inner["back"] = cyclic
    copied = safe_copy(cyclic)
    assert copied is not cyclic
    assert copied[0] is not inner
    assert copied[0]["back"][0] is copied[0]


def test_very_deep_nesting_never_raises() -> None:
    """Data nested 10,000 levels deep is returned without raising (shared past the depth
    that can be copied)."""
    value: Any = "bottom"
    for _ in range(10_000):
        value = {"d": [value]}
    copied = safe_copy({"deep": value})
    node = copied["deep"]
    for _ in range(10_000):
        node = node["d"][0]
    assert node == "bottom"


# -- Copier: many copies of one event -----------------------------------------------------


def sample_event() -> dict[str, Any]:
    return {
        "name": "e",
        "timestamp": datetime(2024, 1, 2),
        "context": FrozenContext({"user": "ada", "roles": ["a", "b"], "id": 7}),
        "data": {
            "flat": {"a": 1, "b": "x"},
            "list": [1, 2, [3, {"deep": [4]}]],
            "tuple": (1, [2]),
            "frozen_tuple": (1, "x"),
            "set": {1, 2},
            "scalar": 1.5,
        },
    }


def containers(value: Any) -> list[Any]:
    """Every dict, list, tuple and set inside ``value``, depth first."""
    found = []
    if isinstance(value, (dict, list, tuple, set)):
        found.append(value)
        items = value.values() if isinstance(value, dict) else value
        for item in items:
            found.extend(containers(item))
    return found


def test_copier_copies_are_equal_and_share_no_mutable_container() -> None:
    """Every copy from a Copier equals the original, thaws the context into a plain
    dict, and shares no mutable container with the original or with another copy
    (only the immutable tuple of scalars may be shared)."""
    event = sample_event()
    copier = Copier(event)
    copies = [copier.copy() for _ in range(4)]
    mutable = {id(c) for c in containers(event) if not isinstance(c, tuple)}
    for copied in copies:
        assert copied == event
        assert type(copied["context"]) is dict
        assert type(copied["data"]["tuple"]) is tuple
        assert copied["data"]["frozen_tuple"] is event["data"]["frozen_tuple"]
        mine = {id(c) for c in containers(copied) if not isinstance(c, tuple)}
        assert not mine & mutable
    for first, second in itertools.pairwise(copies):
        first["data"]["list"][2][1]["deep"].append("edited")
        assert second["data"]["list"][2][1]["deep"] == [4]
    assert event == sample_event()


def test_copier_replay_follows_a_change_of_shape() -> None:
    """If the value changes shape between copies (a key gone, a list shorter), the next
    copy still matches what is there now, without raising."""
    event = sample_event()
    copier = Copier(event)
    copier.copy()
    del event["data"]["list"]
    event["data"]["tuple"] = (1,)
    assert copier.copy() == event
    event["data"]["flat"] = [{"now": "a list"}]
    copied = copier.copy()
    assert copied == event
    assert copied["data"]["flat"][0] is not event["data"]["flat"][0]


def test_copier_keeps_shared_containers_shared_in_every_copy() -> None:
    """A container reached twice is copied once per copy, as deepcopy does, on the
    first copy and on every later one."""
    shared: list[Any] = [{"x": [1]}]
    value = {"a": shared, "b": shared}
    copier = Copier(value)
    for _ in range(3):
        copied = copier.copy()
        assert copied["a"] is copied["b"]
        assert copied["a"] is not shared


def test_copier_never_raises_on_uncopyable_values() -> None:
    """An uncopyable value is shared in every copy and counted, never raised."""
    value = Uncopyable()
    before = COPY_STATS.get("uncopyable")
    copier = Copier({"v": value, "l": [1]})
    copies = [copier.copy() for _ in range(3)]
    assert all(c["v"] is value for c in copies)
    assert COPY_STATS.get("uncopyable") > before


def json_like_event() -> dict[str, Any]:
    """An event of dicts, lists and scalars only: the shapes a hint can check."""
    event = sample_event()
    del event["data"]["tuple"], event["data"]["frozen_tuple"], event["data"]["set"]
    event["context"] = FrozenContext({"user": "ada", "id": 7})
    return event


def _learned_hint(value: Any) -> Any:
    """The compiled hint a copier learns once a shape has been seen often enough."""
    hint = None
    for _ in range(_copy._COMPILE_AFTER + 1):
        copier = Copier(value, hint)
        copier.copies(2)
        hint = copier.hint
    assert hint is not None
    return hint


def test_a_hint_for_the_same_shape_copies_without_a_walk() -> None:
    """A copier given the hint of an earlier value of the same shape makes independent
    deep copies of the new value."""
    hint = _learned_hint(json_like_event())
    event = json_like_event()
    event["data"]["list"] = [9, 8, [7, {"deep": [6]}]]
    copier = Copier(event, hint)
    first, second = copier.copies(2)
    assert first == event and second == event
    first["data"]["list"][2][1]["deep"].append("x")
    assert event["data"]["list"][2][1]["deep"] == [6]
    assert second["data"]["list"][2][1]["deep"] == [6]
    assert copier.hint is hint


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e["data"].__setitem__("scalar", [1]),  # an immutable value became a list
        lambda e: e["data"]["flat"].__setitem__("a", {"x": 1}),  # a flat dict gained a dict
        lambda e: e["data"].__setitem__("extra", 1),  # a key more
        lambda e: e["data"].pop("scalar"),  # a key fewer
        lambda e: e.__setitem__("context", {"user": ["a"]}),  # a context holding a list
    ],
)
def test_a_hint_for_another_shape_is_refused_and_the_copy_is_still_deep(change: Any) -> None:
    """A value whose shape differs from the hint's, however slightly, is walked instead:
    no container of it is shared with the copy."""
    hint = _learned_hint(json_like_event())
    event = json_like_event()
    change(event)
    copied = Copier(event, hint).copy()
    assert copied == event
    originals = {id(c) for c in containers(event) if not isinstance(c, tuple)}
    assert not originals & {id(c) for c in containers(copied) if not isinstance(c, tuple)}


def test_copy_one_learns_a_shape_and_copies_the_next_event_of_it_with_the_same_hint() -> None:
    """copy_one makes an independent deep copy; once the shape is known it hands back
    the same hint, for events of that shape, without walking them."""
    hint = None
    for _ in range(_copy._COMPILE_AFTER):
        copied, hint = copy_one(json_like_event(), hint)
    assert hint is not None and hint.checked is not None
    event = json_like_event()
    event["data"]["list"] = [9, 8, [7, {"deep": [6]}]]
    copied, again = copy_one(event, hint)
    assert again is hint
    assert copied == event
    copied["data"]["list"][2][1]["deep"].append("x")
    assert event["data"]["list"][2][1]["deep"] == [6]


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e["data"].__setitem__("scalar", [1]),
        lambda e: e["data"].__setitem__("extra", 1),
        lambda e: e.__setitem__("context", {"user": ["a"]}),
    ],
)
def test_copy_one_walks_an_event_of_another_shape(change: Any) -> None:
    """An event that does not fit the hint is walked: its copy is still deep, and the
    hint that comes back is not the old one."""
    hint = _learned_hint(json_like_event())
    event = json_like_event()
    change(event)
    copied, new_hint = copy_one(event, hint)
    assert new_hint is not hint
    assert copied == event
    originals = {id(c) for c in containers(event) if not isinstance(c, tuple)}
    assert not originals & {id(c) for c in containers(copied) if not isinstance(c, tuple)}


def test_copy_one_shares_and_counts_an_uncopyable_value() -> None:
    """copy_one never raises: a value that refuses to be copied is shared and counted."""
    before = COPY_STATS.snapshot()["uncopyable"]
    odd = Uncopyable()
    copied, _ = copy_one({"data": {"odd": odd, "list": [1]}}, None)
    assert copied["data"]["odd"] is odd
    assert COPY_STATS.snapshot()["uncopyable"] == before + 1
