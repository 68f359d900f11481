"""Tests for eventtracking.processors.regex_filter.RegexFilter."""

from __future__ import annotations

from typing import Any

import pytest

from eventtracking.backends.memory import InMemoryBackend
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.processors.regex_filter import ALLOWLIST, BLOCKLIST, RegexFilter
from eventtracking.tracker import Tracker


def event(name: Any) -> dict[str, Any]:
    return {"name": name, "timestamp": None, "context": {}, "data": {}}


def passes(processor: RegexFilter, name: Any) -> bool:
    try:
        processor(event(name))
    except EventEmissionExit:
        return False
    return True


def test_filter_type_constants() -> None:
    """ALLOWLIST and BLOCKLIST are the strings 'allowlist' and 'blocklist'."""
    assert (ALLOWLIST, BLOCKLIST) == ("allowlist", "blocklist")


@pytest.mark.parametrize(
    ("name", "matched"),
    [
        ("edx.video.play", True),
        ("edx.video.play.extra", True),
        ("edx.videoX", True),
        ("prefix.edx.video", False),
        ("edx.vid", False),
        ("EDX.VIDEO", False),
    ],
)
def test_matching_is_anchored_at_the_start_only(name: str, matched: bool) -> None:
    """Expressions use re.match: anchored at the start of the name but not at its end."""
    allow = RegexFilter(ALLOWLIST, [r"edx\.video"])
    block = RegexFilter(BLOCKLIST, [r"edx\.video"])
    assert passes(allow, name) is matched
    assert passes(block, name) is not matched


def test_any_expression_may_match() -> None:
    """An event matches when any of the expressions matches it."""
    allow = RegexFilter(ALLOWLIST, ["^a", ".*b$", "x.*y"])
    assert [passes(allow, name) for name in ("abc", "cab", "xzy", "yx")] == [
        True,
        True,
        True,
        False,
    ]


def test_full_match_can_be_asked_for_with_dollar() -> None:
    """An expression ending in $ matches whole names only."""
    allow = RegexFilter(ALLOWLIST, [r"page\.view$"])
    assert passes(allow, "page.view")
    assert not passes(allow, "page.view.more")


def test_defaults_are_an_empty_allowlist() -> None:
    """With no expressions, an allowlist lets nothing through and a blocklist everything."""
    assert RegexFilter().filter_type == ALLOWLIST
    assert not passes(RegexFilter(), "anything")
    assert passes(RegexFilter(BLOCKLIST), "anything")


def test_allowed_event_is_returned_as_is() -> None:
    """An event that passes is returned as the same object."""
    original = event("a")
    assert RegexFilter(ALLOWLIST, ["a"])(original) is original
    assert RegexFilter.mutates_events is False


def test_list_of_events_is_filtered() -> None:
    """Given a list of events, it returns the list of those that pass, in order."""
    events = [event("a1"), event("b1"), event("a2")]
    assert [e["name"] for e in RegexFilter(ALLOWLIST, ["a"])(events)] == ["a1", "a2"]
    assert [e["name"] for e in RegexFilter(BLOCKLIST, ["a"])(events)] == ["b1"]


def test_non_str_name_is_matched_as_its_string() -> None:
    """A name that is not a string is matched against its str()."""
    assert passes(RegexFilter(ALLOWLIST, ["12"]), 123)


@pytest.mark.parametrize("expression", ["(unclosed", "[a-", "*start", 5])
def test_invalid_expression_raises_improperly_configured(expression: Any) -> None:
    """An expression that does not compile raises ImproperlyConfigured naming it."""
    with pytest.raises(ImproperlyConfigured, match="does not compile") as info:
        RegexFilter(ALLOWLIST, ["fine", expression])
    assert repr(expression) in str(info.value)


@pytest.mark.parametrize("filter_type", ["whitelist", "ALLOWLIST", "", None])
def test_invalid_filter_type_raises_improperly_configured(filter_type: Any) -> None:
    """A filter type other than allowlist or blocklist raises ImproperlyConfigured listing both."""
    with pytest.raises(ImproperlyConfigured, match="allowlist") as info:
        RegexFilter(filter_type, ["a"])
    assert "blocklist" in str(info.value)


def test_single_string_instead_of_a_list_raises() -> None:
    """A single string for regular_expressions is refused rather than split into characters."""
    with pytest.raises(ImproperlyConfigured, match="list"):
        RegexFilter(ALLOWLIST, "edx.*")


def test_in_a_tracker_blocked_events_are_counted() -> None:
    """In a tracker, blocked events never reach backends and are counted as filtered."""
    memory = InMemoryBackend()
    t = Tracker({"memory": memory}, processors=[RegexFilter(BLOCKLIST, [r"debug\."])])
    for name in ("debug.x", "page.view", "debug.y"):
        t.emit(name)
    assert [e["name"] for e in memory.events] == ["page.view"]
    assert t.stats()["dropped"] == {"filtered": 2}


def test_repr_shows_the_configuration() -> None:
    """The repr shows the filter type and expressions."""
    assert repr(RegexFilter(BLOCKLIST, ["a"])) == (
        "RegexFilter(filter_type='blocklist', regular_expressions=['a'])"
    )
