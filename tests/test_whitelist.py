"""Tests for eventtracking.processors.whitelist.NameWhitelistProcessor."""

from __future__ import annotations

from typing import Any

import pytest

from eventtracking.backends.memory import InMemoryBackend
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.processors.whitelist import NameWhitelistProcessor
from eventtracking.tracker import Tracker


def event(name: Any) -> dict[str, Any]:
    return {"name": name, "timestamp": None, "context": {}, "data": {}}


@pytest.mark.parametrize(
    "whitelist",
    [
        ["a", "b"],
        ("a", "b"),
        {"a", "b"},
        frozenset({"a", "b"}),
        {"a": 1, "b": 2},
        (name for name in ["a", "b"]),
    ],
    ids=["list", "tuple", "set", "frozenset", "dict", "generator"],
)
def test_any_non_str_iterable_is_accepted(whitelist: Any) -> None:
    """Any iterable of names other than a string works as the whitelist."""
    processor = NameWhitelistProcessor(whitelist)
    assert processor(event("a")) == event("a")
    with pytest.raises(EventEmissionExit):
        processor(event("c"))


@pytest.mark.parametrize("whitelist", ["a,b", b"ab", None, 5, 1.5])
def test_other_whitelists_raise_type_error(whitelist: Any) -> None:
    """A string, bytes, None or a non-iterable raises TypeError that starts with 4.x's
    sentence and names the value."""
    with pytest.raises(TypeError) as caught:
        NameWhitelistProcessor(whitelist)
    message = str(caught.value)
    assert message.startswith(
        "The NameWhitelistProcessor must be passed a collection of allowed names using the "
        '"whitelist" parameter'
    )
    assert message.endswith(f"got {whitelist!r}.")


def test_whitelist_keyword_and_extra_options() -> None:
    """The whitelist may be passed by keyword; other keyword options are accepted."""
    processor = NameWhitelistProcessor(whitelist=["a"], unused_option=True)
    assert processor(event("a"))["name"] == "a"


def test_allowed_event_is_returned_unchanged() -> None:
    """An allowed event is returned as the same object, not copied."""
    processor = NameWhitelistProcessor(["a"])
    original = event("a")
    assert processor(original) is original
    assert NameWhitelistProcessor.mutates_events is False


def test_list_of_events_is_filtered() -> None:
    """Given a list of events, it returns the list of the allowed ones, in order."""
    processor = NameWhitelistProcessor(["a", "c"])
    events = [event("a"), event("b"), event("c"), event("a")]
    assert [e["name"] for e in processor(events)] == ["a", "c", "a"]
    assert processor([]) == []


@pytest.mark.parametrize("name", [["a"], {"a": 1}, None, 5])
def test_unhashable_or_odd_names_are_dropped(name: Any) -> None:
    """An event whose name is not on the list, even an unhashable one, is dropped rather
    than let through by an error."""
    processor = NameWhitelistProcessor(["a"])
    with pytest.raises(EventEmissionExit):
        processor(event(name))
    assert processor([event(name), event("a")]) == [event("a")]


def test_in_a_tracker_only_whitelisted_events_arrive() -> None:
    """In a tracker, events not on the whitelist never reach the backends and are counted."""
    memory = InMemoryBackend()
    t = Tracker({"memory": memory}, processors=[NameWhitelistProcessor(["keep"])])
    for name in ("keep", "drop", "keep", "keepers"):
        t.emit(name)
    assert [e["name"] for e in memory.events] == ["keep", "keep"]
    assert t.stats()["dropped"] == {"filtered": 2}


def test_repr_lists_the_names() -> None:
    """The repr shows the sorted whitelist, for configuration debugging."""
    assert (
        repr(NameWhitelistProcessor(["b", "a"])) == "NameWhitelistProcessor(whitelist=['a', 'b'])"
    )
